// BullMQ for Node adapter: the same line protocol as _harness.py (see there).
// Queue.add and Queue.addBulk, Worker({concurrency: C}), library defaults otherwise
// (completed jobs are kept, as BullMQ does by default). Retries: attempts 2, no backoff.
// Rate limit: the Worker option limiter {max, duration} (a worker option in BullMQ, so the
// producer's set_limits only answers ok and the worker applies cfg.rate_limit).
// Run as: NODE_PATH=<dir with node_modules/bullmq> node bullmq_node_adapter.cjs ROLE JSON
"use strict";
const readline = require("node:readline");
const { performance } = require("node:perf_hooks");
const { Queue, Worker } = require("bullmq");

const BULK_CHUNK = 1000;
const role = process.argv[2];
const cfg = JSON.parse(process.argv[3]);

// wall clock in seconds with sub-millisecond resolution, comparable to Python's time.time()
const now = () => (performance.timeOrigin + performance.now()) / 1000;
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function connection(url) {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port), db: Number(u.pathname.slice(1) || 0) };
}

const C = { done: 0, failedAttempts: 0, firstStart: 0, lastEnd: 0, latencies: [], starts: [] };
const begin = () => { if (!C.firstStart) C.firstStart = now(); };
const end = () => { C.done += 1; C.lastEnd = now(); };

async function processor(job) {
  switch (job.name) {
    case "noop": begin(); end(); return;
    case "sleep": begin(); await sleep(1); end(); return;
    case "flaky":
      begin();
      if (job.attemptsMade === 0) { C.failedAttempts += 1; throw new Error("flaky"); }
      end(); return;
    case "tick": {
      const t = now();
      // when the limiter let it start: the worker's fetch stamps processedOn (ms)
      C.starts.push(job.processedOn ? job.processedOn / 1000 : t);
      if (!C.firstStart) C.firstStart = t;
      C.done += 1; C.lastEnd = t; return;
    }
    case "stamp": {
      const t = now();
      C.latencies.push(t - job.data.t0);
      if (!C.firstStart) C.firstStart = t;
      end(); return;
    }
  }
}

const jobOpts = (kind) => (kind === "flaky" ? { attempts: 2 } : {});

function lines() {
  const rl = readline.createInterface({ input: process.stdin });
  const queue = [];
  let waiter = null;
  rl.on("line", (l) => { if (l.trim()) { queue.push(JSON.parse(l)); if (waiter) { waiter(); waiter = null; } } });
  rl.on("close", () => { queue.push(null); if (waiter) { waiter(); waiter = null; } });
  return async () => {
    while (!queue.length) await new Promise((r) => { waiter = r; });
    return queue.shift();
  };
}

async function timed(fn) {
  const t = performance.now();
  let count;
  try {
    count = await fn();
  } catch (e) {
    process.stderr.write(String(e && e.stack || e) + "\n");
    return { ok: false, error: String(e).slice(0, 300) };
  }
  return { ok: true, elapsed: (performance.now() - t) / 1000, count };
}

async function producer() {
  const conn = connection(cfg.url);
  const queues = new Map();
  const q = (name) => {
    if (!queues.has(name)) queues.set(name, new Queue(name, { connection: conn }));
    return queues.get(name);
  };
  const version = require("bullmq/package.json").version;
  emit({ ev: "ready", version, pid: process.pid });
  const next = lines();
  for (;;) {
    const cmd = await next();
    if (cmd === null || cmd.cmd === "quit") break;
    const n = cmd.n || 0;
    const queue = cmd.queue;
    const kind = cmd.kind || "noop";
    const chunk = cmd.chunk || BULK_CHUNK;
    const end = cmd.max_s ? performance.now() + cmd.max_s * 1000 : Infinity;
    const over = () => performance.now() >= end;
    if (cmd.cmd === "enqueue") {
      emit(await timed(async () => {
        let count = 0;
        while (count < n && !over()) { await q(queue).add(kind, {}, jobOpts(kind)); count++; }
        return count;
      }));
    } else if (cmd.cmd === "enqueue_concurrent") {
      emit(await timed(async () => {
        let count = 0;
        const one = async () => {
          while (count < n && !over()) { count++; await q(queue).add(kind, {}, jobOpts(kind)); }
        };
        await Promise.all(Array.from({ length: cmd.producers }, one));
        return count;
      }));
    } else if (cmd.cmd === "bulk" || cmd.cmd === "fill") {
      emit(await timed(async () => {
        let count = 0;
        while (count < n && !over()) {
          const k = Math.min(chunk, n - count);
          await q(queue).addBulk(Array.from({ length: k }, () => ({ name: kind, data: {}, opts: jobOpts(kind) })));
          count += k;
        }
        return count;
      }));
    } else if (cmd.cmd === "fill_delayed") {
      emit(await timed(async () => {
        let count = 0;
        while (count < n && !over()) {
          const k = Math.min(chunk, n - count);
          const delay = Math.max(Math.round((cmd.due_at - now()) * 1000), 1); // relative in BullMQ
          await q(queue).addBulk(Array.from({ length: k }, () => ({ name: "noop", data: {}, opts: { delay } })));
          count += k;
        }
        return count;
      }));
    } else if (cmd.cmd === "stamp") {
      emit(await timed(async () => {
        const start = performance.now();
        for (let i = 0; i < n; i++) {
          await q(queue).add("stamp", { t0: now() });
          const delay = start + (i + 1) * cmd.interval * 1000 - performance.now();
          if (delay > 0) await sleep(delay);
        }
        return n;
      }));
    } else if (cmd.cmd === "set_limits") {
      emit({ ok: true, elapsed: 0, count: 0 }); // the worker's limiter option (cfg.rate_limit)
    } else {
      emit({ ok: false, error: "unknown command " + cmd.cmd });
    }
  }
  for (const queue of queues.values()) await queue.close();
}

async function worker() {
  const next = lines();
  const opts = { connection: connection(cfg.url), concurrency: cfg.concurrency };
  if (cfg.rate_limit) {
    opts.limiter = {
      max: cfg.rate_limit.max_starts, duration: Math.round(cfg.rate_limit.per_s * 1000),
    };
  }
  const w = new Worker(cfg.queue, processor, opts);
  w.on("error", (e) => process.stderr.write(String(e) + "\n"));
  await w.waitUntilReady();
  emit({ ev: "ready", t: now(), pid: process.pid });
  const cpu0 = process.cpuUsage();
  let last = -1;
  const timer = setInterval(() => {
    if (C.done !== last) { last = C.done; emit({ ev: "progress", done: last }); }
  }, 20);
  await next(); // stop (or stdin closed)
  clearInterval(timer);
  const t = now();
  await w.close();
  const cpu = process.cpuUsage(cpu0);
  emit({
    ev: "stopped", done: C.done, failed_attempts: C.failedAttempts,
    first_start: C.firstStart, last_end: C.lastEnd, latencies: C.latencies, starts: C.starts,
    stop_s: now() - t, maxrss_kb: process.resourceUsage().maxRSS,
    cpu_s: (cpu.user + cpu.system) / 1e6,
  });
}

(role === "producer" ? producer() : worker()).then(
  () => process.exit(0),
  (e) => { process.stderr.write(String(e && e.stack || e) + "\n"); process.exit(1); },
);
