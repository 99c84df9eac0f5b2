"""Running the workloads of one library against the runner's own redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .envs import LABELS
from .model import PHASES, PRODUCERS, Phase, Sample, Settings, percentile
from .procs import AdapterError, AdapterProc, Command
from .redis_server import RedisServer, Stats, delta

Report = Callable[[str], None]
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 40.0
DELAYED_WINDOWS = 2.0  # the delayed burst is sized for twice the window: it is the big one
# A prefilled processing phase is repeated (at most RETRIES more times) when processes that
# are not part of the benchmark used more than OTHER_CPU_MAX cores while its workers ran;
# the sample with the least such load is kept (chosen on the load, never on the rate).
OTHER_CPU_MAX = 0.25
RETRIES = 2
RETRIED_PHASES = frozenset({"process_noop", "process_sleep", "process_noop_2w", "retry_storm"})
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_ticks() -> int | None:
    """The machine's busy CPU time (user, nice, system, steal) from /proc/stat, in ticks.
    irq and softirq are left out: our own loopback traffic lands there."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return v[0] + v[1] + v[2] + v[7]


def _proc_ticks(pid: int) -> int:
    """utime + stime of one process (all its threads), in ticks; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return 0


class OtherCpu:
    """Cores used by everything but the benchmark's own processes (redis-server, the
    runner, the producer, the workers) over a timed window: a neighbour's load, which
    slows a library in proportion to the CPU it needs per job."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.busy0 = _busy_ticks()
        self.ours0 = sum(_proc_ticks(pid) for pid in pids)

    def cores(self) -> float | None:
        busy = _busy_ticks()
        wall = time.monotonic() - self.t0
        if busy is None or self.busy0 is None or wall <= 0:
            return None
        ours = sum(_proc_ticks(pid) for pid in self.pids) - self.ours0
        return max((busy - self.busy0 - ours) / _CLK_TCK / wall, 0.0)


@dataclass
class LibRun:
    """One library across repetitions: how to start it, what it measured so far."""

    lib: str
    command: Command
    settings: Settings
    server: RedisServer
    logdir: Path
    version: str = ""
    rates: dict[str, float] = field(default_factory=dict)  # phase -> last jobs/s

    @property
    def label(self) -> str:
        return LABELS.get(self.lib, self.lib)

    @property
    def log(self) -> Path:
        return self.logdir / f"{self.lib}.log"

    def rate_for(self, phase: str) -> float | None:
        if phase in self.rates:
            return self.rates[phase]
        base = self.rates.get("process_noop") or self.rates.get("warmup")
        if base is None:
            return None
        return {"process_noop_2w": base * 1.5, "retry_storm": base / 2}.get(phase, base)

    def sized(self, phase: str, wanted: int, windows: float = 1.0) -> int:
        """Jobs to prefill: ``wanted``, or what the library gets through in ``windows``."""
        rate = self.rate_for(phase)
        if rate is None:
            return wanted
        return max(min(wanted, math.ceil(rate * self.settings.window_s * windows)), 100)


class Unsupported(Exception):
    """The library has no such feature."""


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return f"timed out ({e})" if str(e) else "timed out (worker did not stop)"
    return str(e) or type(e).__name__


@dataclass
class WorkerResult:
    done: int = 0
    reports: list[dict[str, Any]] = field(default_factory=list)
    t_ready: float = 0.0
    timed_out: bool = False
    other_cpu: float | None = None  # cores used by other processes while the workers ran


async def _workers(run: LibRun, queue: str, concurrency: int, count: int, target: int,
                   report: Report, what: str, start_at: float | None = None,
                   before_wait: Callable[[], Any] | None = None,
                   windows: float = 1.0, extra_cfg: dict[str, Any] | None = None,
                   watch: Callable[[int], None] | None = None,
                   own_pids: tuple[int, ...] = ()) -> WorkerResult:
    """Start ``count`` worker processes on ``queue``, wait until their handlers have
    finished ``target`` jobs (or the window is over), stop them, collect their reports.
    ``watch`` sees the jobs done so far every 20 ms, and once more before the stop."""
    s = run.settings
    cfg = {"url": run.server.url, "queue": queue, "concurrency": concurrency,
           **(extra_cfg or {})}
    procs: list[AdapterProc] = []
    result = WorkerResult()
    try:
        for _ in range(count):
            procs.append(await AdapterProc.spawn(run.command, "worker", cfg, run.log, run.label))
        readies = [await p.recv(READY_TIMEOUT_S) for p in procs]
        result.t_ready = max(float(r.get("t", time.time())) for r in readies)
        if before_wait is not None:
            await before_wait()
        done = [0] * count
        stopped: list[dict[str, Any] | None] = [None] * count

        async def follow(i: int, p: AdapterProc) -> None:
            while True:
                m = await p.recv(3600)
                if m.get("ev") == "progress":
                    done[i] = int(m["done"])
                elif m.get("ev") == "stopped":
                    stopped[i] = m
                    return

        readers = [asyncio.create_task(follow(i, p)) for i, p in enumerate(procs)]
        server_pid = run.server.proc.pid if run.server.proc is not None else None
        other = OtherCpu([os.getpid(), *own_pids, *(p.proc.pid for p in procs),
                          *([server_pid] if server_pid else [])])
        try:
            begin = max(start_at or 0.0, result.t_ready)
            deadline = begin + s.window_s * windows * 1.5
            last_shown = 0.0
            while sum(done) < target:
                if watch is not None:
                    watch(sum(done))
                for r in readers:
                    if r.done():
                        r.result()  # raises the adapter's error
                        raise AdapterError(f"{run.label}: worker stopped on its own")
                now = time.time()
                if now > deadline:
                    result.timed_out = True
                    break
                if now - last_shown > 0.1:
                    report(f"{what}: {sum(done):,}/{target:,} jobs")
                    last_shown = now
                await asyncio.sleep(0.02)
            if watch is not None:
                watch(sum(done))
            result.other_cpu = other.cores()
            for p in procs:
                await p.send({"cmd": "stop"})
            await asyncio.wait_for(asyncio.gather(*readers), STOP_TIMEOUT_S)
        finally:
            for r in readers:
                r.cancel()
        result.reports = [m for m in stopped if m is not None]
        result.done = sum(int(m["done"]) for m in result.reports)
        return result
    finally:
        for p in procs:
            await p.close(5.0)


def _fill_measures(sample: Sample, before: Stats, after: Stats, jobs: int) -> None:
    if jobs > 0:
        cmds, reads = delta(before, after)
        sample.cmds_per_job = cmds / jobs
        sample.rtts_per_job = reads / jobs


def _from_workers(sample: Sample, res: WorkerResult, start: float | None = None) -> None:
    reps = res.reports
    firsts = [float(m["first_start"]) for m in reps if m.get("first_start")]
    lasts = [float(m["last_end"]) for m in reps if m.get("last_end")]
    sample.jobs = res.done
    if firsts and lasts:
        t0 = start if start is not None else min(firsts)
        sample.seconds = max(max(lasts) - t0, 1e-6)
        sample.jobs_per_s = res.done / sample.seconds
    rss = [int(m.get("maxrss_kb", 0)) for m in reps]
    sample.rss_mb = max(rss) / 1024 if rss else None
    cpu = sum(float(m.get("cpu_s", 0.0)) for m in reps)
    sample.cpu_us_per_job = cpu / res.done * 1e6 if res.done else None
    sample.extra["failed_attempts"] = sum(int(m.get("failed_attempts", 0)) for m in reps)
    sample.extra["stop_s"] = max((float(m.get("stop_s", 0.0)) for m in reps), default=0.0)
    errors = [str(m["stop_error"]) for m in reps if m.get("stop_error")]
    if errors:
        sample.extra["stop_error"] = errors[0]
    if res.other_cpu is not None:
        sample.extra["other_cpu"] = round(res.other_cpu, 3)
    if res.timed_out:
        sample.status = "partial"


def max_in_window(times: list[float], period: float) -> int:
    """The most timestamps in any half-open window ``[t, t + period)``."""
    ordered = sorted(times)
    best = lo = 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] >= period:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class RateWatch:
    """Redis counters while a rate-limited worker runs, from the runner's 20 ms look at
    the jobs done: from the first window's starts seen to the last job seen (``span``),
    and in held stretches: from ``HELD_FROM`` to ``HELD_UNTIL`` of a period after the
    count last changed, kept only if it did not change meanwhile (then every job started
    so far has ended and the window is still full: the worker has nothing to do)."""

    HELD_FROM = 0.2
    HELD_UNTIL = 0.5

    def __init__(self, server: RedisServer, limit: int, target: int, period: float) -> None:
        self.server = server
        self.limit = limit
        self.target = target
        self.period = period
        self.first: tuple[float, Stats] | None = None
        self.last: tuple[float, Stats] | None = None
        self.changed_at = 0.0
        self.seen = -1
        self.held: tuple[float, Stats] | None = None
        self.held_s = 0.0
        self.held_cmds = 0
        self.held_reads = 0

    def __call__(self, done: int) -> None:
        now = time.time()
        if done != self.seen:
            self.seen, self.changed_at, self.held = done, now, None
            if done >= self.limit and self.first is None:
                self.first = (now, self.server.stats())
            if done >= self.target and self.last is None:
                self.last = (now, self.server.stats())
            return
        if self.seen <= 0 or self.seen >= self.target:
            return
        since = now - self.changed_at
        if self.held is None and since >= self.HELD_FROM * self.period:
            self.held = (now, self.server.stats())
        elif self.held is not None and since >= self.HELD_UNTIL * self.period:
            t0, before = self.held
            cmds, reads = delta(before, self.server.stats())
            self.held_s += now - t0
            self.held_cmds += cmds
            self.held_reads += reads
            self.held = None
            self.changed_at = now + self.period  # one stretch per window


class PhaseRunner:
    """Runs the phases of one repetition of one library with one producer process."""

    def __init__(self, run: LibRun, rep: int, report: Report) -> None:
        self.run = run
        self.rep = rep
        self.report = report
        self.producer: AdapterProc | None = None

    async def _producer(self) -> AdapterProc:
        p = self.producer
        if p is None or p.proc.returncode is not None:
            p = await AdapterProc.spawn(self.run.command, "producer", {"url": self.run.server.url},
                                        self.run.log, self.run.label)
            ready = await p.recv(READY_TIMEOUT_S)
            self.run.version = str(ready.get("version", self.run.version))
            self.producer = p
        return p

    def _producer_pids(self) -> tuple[int, ...]:
        return (self.producer.proc.pid,) if self.producer is not None else ()

    async def close(self) -> None:
        if self.producer is not None:
            with contextlib.suppress(AdapterError):
                await self.producer.send({"cmd": "quit"})
            await self.producer.close()
            self.producer = None

    async def _ask(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        p = await self._producer()
        answer = await p.request(cmd, timeout)
        if not answer.get("ok"):
            if "unsupported" in answer:
                raise Unsupported(str(answer["unsupported"]))
            raise AdapterError(f"{self.run.label}: {answer.get('error', answer)}")
        return answer

    async def phase(self, phase: Phase, warmup: bool = False) -> Sample:
        """One sample; a prefilled processing phase measured while other processes loaded
        the machine is taken again (see OTHER_CPU_MAX), and the least loaded one kept."""
        best = await self._phase_once(phase)
        attempts = 1
        while (phase.id in RETRIED_PHASES and attempts <= RETRIES and best.ok
               and (best.extra.get("other_cpu") or 0.0) > OTHER_CPU_MAX):
            self.report(f"{self.run.label} · {phase.id}: other processes used"
                        f" {best.extra['other_cpu']:.2f} cores, measuring again")
            again = await self._phase_once(phase)
            attempts += 1
            if again.ok and again.extra.get("other_cpu", 0.0) < best.extra["other_cpu"]:
                best = again
        if attempts > 1:
            best.extra["attempts"] = attempts
        if best.ok and best.jobs_per_s > 0 and not warmup:
            self.run.rates[phase.id] = best.jobs_per_s
        return best

    async def _phase_once(self, phase: Phase) -> Sample:
        run = self.run
        sample = Sample(run.lib, phase.id, self.rep)
        queue = f"bench-{phase.id}-{self.rep}"
        run.server.reset()
        try:
            await self._producer()
            method = getattr(self, "_" + phase.id)
            await method(phase, queue, sample)
        except Unsupported as e:
            sample.status = f"unsupported: {e}"
        except (AdapterError, TimeoutError, OSError) as e:
            sample.status = f"error: {_describe(e)}"[:300]
            await self.close()  # a fresh producer for the next phase
        return sample

    # ------------------------------------------------------------------ phases

    async def _enqueue_one(self, phase: Phase, queue: str, sample: Sample) -> None:
        s = self.run.settings
        self.report(f"{self.run.label} · {phase.id}: {s.enqueue_n:,} jobs")
        before = self.run.server.stats()
        r = await self._ask({"cmd": "enqueue", "queue": queue, "kind": "noop",
                             "n": s.enqueue_n, "max_s": s.window_s}, s.window_s + 60)
        after = self.run.server.stats()
        self._enqueued(sample, r, before, after, s.enqueue_n)

    async def _enqueue_concurrent(self, phase: Phase, queue: str, sample: Sample) -> None:
        s = self.run.settings
        self.report(f"{self.run.label} · {phase.id}: {s.n:,} jobs from {PRODUCERS} coroutines")
        before = self.run.server.stats()
        r = await self._ask({"cmd": "enqueue_concurrent", "queue": queue, "kind": "noop",
                             "n": s.n, "producers": PRODUCERS, "max_s": s.window_s},
                            s.window_s + 60)
        after = self.run.server.stats()
        self._enqueued(sample, r, before, after, s.n)

    async def _enqueue_bulk(self, phase: Phase, queue: str, sample: Sample) -> None:
        s = self.run.settings
        self.report(f"{self.run.label} · {phase.id}: {s.n:,} jobs")
        before = self.run.server.stats()
        r = await self._ask({"cmd": "bulk", "queue": queue, "kind": "noop", "n": s.n,
                             "chunk": s.bulk_chunk, "max_s": s.window_s}, s.window_s + 60)
        after = self.run.server.stats()
        self._enqueued(sample, r, before, after, s.n)

    @staticmethod
    def _enqueued(sample: Sample, r: dict[str, Any], before: Stats, after: Stats,
                  wanted: int) -> None:
        sample.jobs = int(r["count"])
        sample.seconds = float(r["elapsed"])
        sample.jobs_per_s = sample.jobs / max(sample.seconds, 1e-9)
        _fill_measures(sample, before, after, sample.jobs)
        if sample.jobs < wanted:
            sample.status = "partial"

    async def _fill(self, queue: str, kind: str, n: int) -> int:
        s = self.run.settings
        self.report(f"{self.run.label} · prefill {n:,} {kind} jobs")
        r = await self._ask({"cmd": "fill", "queue": queue, "kind": kind, "n": n,
                             "chunk": s.bulk_chunk, "max_s": s.fill_max_s}, s.fill_max_s + 60)
        count = int(r["count"])
        self.run.rates["fill"] = count / max(float(r["elapsed"]), 1e-9)
        return count

    async def _processing(self, phase: Phase, queue: str, sample: Sample, n: int,
                          concurrency: int) -> None:
        run = self.run
        filled = await self._fill(queue, phase.kind, run.sized(phase.id, n))
        before = run.server.stats()
        res = await _workers(run, queue, concurrency, phase.workers, filled, self.report,
                             f"{run.label} · {phase.id}", own_pids=self._producer_pids())
        after = run.server.stats()
        _from_workers(sample, res)
        _fill_measures(sample, before, after, sample.jobs)
        sample.extra["prefilled"] = filled

    async def _process_noop(self, phase: Phase, queue: str, sample: Sample) -> None:
        s = self.run.settings
        await self._processing(phase, queue, sample, s.n, s.concurrency)

    async def _process_sleep(self, phase: Phase, queue: str, sample: Sample) -> None:
        s = self.run.settings
        await self._processing(phase, queue, sample, s.n, s.sleep_concurrency)

    async def _process_noop_2w(self, phase: Phase, queue: str, sample: Sample) -> None:
        s = self.run.settings
        await self._processing(phase, queue, sample, s.n, s.concurrency)

    async def _retry_storm(self, phase: Phase, queue: str, sample: Sample) -> None:
        s = self.run.settings
        await self._processing(phase, queue, sample, s.retry_n, s.concurrency)

    async def _latency(self, phase: Phase, queue: str, sample: Sample) -> None:
        run, s = self.run, self.run.settings

        async def produce() -> None:
            await asyncio.sleep(0.5)  # the worker settles into its idle wait
            self.report(f"{run.label} · latency: {s.latency_jobs} jobs,"
                        f" {s.latency_interval_s * 1000:.0f} ms apart")
            await self._ask({"cmd": "stamp", "queue": queue, "n": s.latency_jobs,
                             "interval": s.latency_interval_s}, s.window_s + 60)

        before = run.server.stats()
        res = await _workers(run, queue, s.concurrency, 1, s.latency_jobs, self.report,
                             f"{run.label} · latency", before_wait=produce)
        after = run.server.stats()
        _from_workers(sample, res)
        _fill_measures(sample, before, after, sample.jobs)
        lat = [float(x) * 1000 for m in res.reports for x in m.get("latencies", [])]
        sample.p50_ms = percentile(lat, 50)
        sample.p99_ms = percentile(lat, 99)
        sample.extra["latency_max_ms"] = max(lat) if lat else None

    async def _delayed_burst(self, phase: Phase, queue: str, sample: Sample) -> None:
        run, s = self.run, self.run.settings
        n = run.sized(phase.id, s.delayed_n, windows=DELAYED_WINDOWS)
        # due at a whole second (saq's resolution) after the prefill's time bound
        fill_rate = run.rates.get("enqueue_bulk") or run.rates.get("fill")
        fill_s = min(n / fill_rate * 1.3 + 1.0 if fill_rate else s.fill_max_s, s.fill_max_s)
        due_at = float(math.ceil(time.time() + fill_s + 2.0))
        self.report(f"{run.label} · prefill {n:,} delayed jobs")
        t = time.perf_counter()
        r = await self._ask({"cmd": "fill_delayed", "queue": queue, "n": n, "due_at": due_at,
                             "chunk": s.bulk_chunk, "max_s": fill_s}, fill_s + 60)
        filled = int(r["count"])
        sample.extra.update(prefilled=filled, prefill_s=time.perf_counter() - t, due_at=due_at)
        before = run.server.stats()
        res = await _workers(run, queue, s.concurrency, 1, filled, self.report,
                             f"{run.label} · delayed_burst", start_at=due_at,
                             windows=DELAYED_WINDOWS)
        after = run.server.stats()
        _from_workers(sample, res, start=max(due_at, res.t_ready))
        _fill_measures(sample, before, after, sample.jobs)
        sample.extra["late_by_s"] = max(res.t_ready - due_at, 0.0)


    def _used_memory(self) -> int:
        """Redis's memory for data: used_memory without the clients' buffers."""
        info = self.run.server.info("memory")
        return int(info["used_memory"]) - int(info.get("mem_clients_normal", 0))

    async def _memory(self, phase: Phase, queue: str, sample: Sample) -> None:
        run, s = self.run, self.run.settings
        base = self._used_memory()
        filled = await self._fill(queue, "noop", s.memory_n)
        sample.jobs = filled
        sample.jobs_per_s = run.rates["fill"]
        sample.extra["bytes_waiting"] = (self._used_memory() - base) / max(filled, 1)
        # then jobs run to the end on a queue of their own: what stays of each
        done_queue = queue + "-done"
        base = self._used_memory()
        n = await self._fill(done_queue, "noop", run.sized("process_noop", s.n))
        res = await _workers(run, done_queue, s.concurrency, 1, n, self.report,
                             f"{run.label} · {phase.id}", own_pids=self._producer_pids())
        if res.done >= n and not res.timed_out:
            sample.extra["bytes_kept"] = (self._used_memory() - base) / n
            sample.extra["kept_jobs"] = n

    async def _rate_limited(self, phase: Phase, queue: str, sample: Sample) -> None:
        run, s = self.run, self.run.settings
        limit, period = s.rate_max, s.rate_per_s
        sample.extra.update(rate_max=limit, per_s=period)
        await self._ask({"cmd": "set_limits", "queue": queue, "max_starts": limit,
                         "per_s": period}, 60)
        self.report(f"{run.label} · prefill {s.rate_jobs:,} {phase.kind} jobs")
        r = await self._ask({"cmd": "fill", "queue": queue, "kind": phase.kind,
                             "n": s.rate_jobs, "chunk": s.bulk_chunk,
                             "max_s": s.fill_max_s}, s.fill_max_s + 60)
        filled = int(r["count"])
        expected_s = filled / limit * period
        watch = RateWatch(run.server, limit, filled, period)
        before = run.server.stats()
        res = await _workers(run, queue, s.concurrency, 1, filled, self.report,
                             f"{run.label} · rate_limited",
                             windows=max(1.0, (expected_s + 2.0) / s.window_s),
                             extra_cfg={"rate_limit": {"max_starts": limit, "per_s": period}},
                             watch=watch)
        after = run.server.stats()
        _from_workers(sample, res)
        _fill_measures(sample, before, after, sample.jobs)
        sample.extra["prefilled"] = filled
        starts = sorted(float(t) for m in res.reports for t in m.get("starts", []))
        if len(starts) < 2:
            raise AdapterError(f"{run.label}: the worker reported no start times")
        # achieved rate: the starts over the time from the first one to the end of the
        # window the last one opened (at the limit: exactly limit / period)
        sample.seconds = starts[-1] - starts[0] + period
        sample.jobs_per_s = len(starts) / sample.seconds
        sample.extra["max_per_window"] = max_in_window(starts, period)
        sample.extra["pct_of_limit"] = sample.jobs_per_s / (limit / period) * 100
        if watch.first is not None and watch.last is not None:
            (t0, s0), (t1, s1) = watch.first, watch.last
            windows = (t1 - t0) / period
            if windows >= 1.0:
                cmds, reads = delta(s0, s1)
                sample.extra["cmds_per_window"] = cmds / windows
                sample.extra["rtts_per_window"] = reads / windows
        if watch.held_s > 0:
            sample.extra["held_cmds_per_s"] = watch.held_cmds / watch.held_s
            sample.extra["held_rtts_per_s"] = watch.held_reads / watch.held_s
            sample.extra["held_s"] = watch.held_s


async def run_rep(run: LibRun, rep: int, phases: tuple[Phase, ...], report: Report,
                  done: Callable[[Sample], None]) -> list[Sample]:
    runner = PhaseRunner(run, rep, report)
    samples: list[Sample] = []
    try:
        for phase in phases:
            sample = await runner.phase(phase)
            samples.append(sample)
            done(sample)
    finally:
        await runner.close()
    return samples


async def warm_up(run: LibRun, report: Report) -> Sample:
    """A short no-op processing run: warms caches, and sizes the first repetition."""
    s = run.settings
    runner = PhaseRunner(run, -1, report)
    try:
        phase = Phase("process_noop", "warm-up")
        sample = Sample(run.lib, "warmup", -1)
        run.server.reset()
        try:
            await runner._producer()
            await runner._processing(phase, "bench-warmup", sample, min(s.n, 2000),
                                     s.concurrency)
            # the fill of a bulk-less library tells how fast it prefills
        except Unsupported as e:
            sample.status = f"unsupported: {e}"
        except (AdapterError, TimeoutError, OSError) as e:
            sample.status = f"error: {_describe(e)}"[:300]
        if sample.ok and sample.jobs_per_s > 0:
            run.rates["warmup"] = sample.jobs_per_s
        return sample
    finally:
        await runner.close()


__all__ = ["PHASES", "LibRun", "Sample", "run_rep", "warm_up"]
