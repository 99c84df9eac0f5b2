"""``python -m benchmarks.cluster``: aiojobs_redis on a Redis Cluster of 1, 2 and 3
primaries against one plain redis-server, the same no-op jobs spread over the same
queues (``spread_queue_names``), one burst worker process per primary.

Prints jobs/s and round trips per job (``total_reads_processed`` summed over the
nodes) for each shape. Every server is our own, on free loopback ports."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from aiojobs_redis import Queue, TaskCall, Worker, spread_queue_names, task
from aiojobs_redis._redis_server import ClusterSetup, RedisServer
from aiojobs_redis._redis_wire import query


@task(name="bench.noop")
async def noop() -> None:
    return None


async def _worker_main(url: str, names: list[str], concurrency: int) -> None:
    queues = [Queue.from_url(url, name=n) for n in names]
    worker = Worker(queues, tasks=[noop], concurrency=concurrency, handle_signals=False)
    cpu0, t0 = time.process_time(), time.time()
    await worker.run(burst=True)
    t1, cpu1 = time.time(), time.process_time()
    for q in queues:
        await q.close()
    print(json.dumps({"start": t0, "end": t1, "processed": worker.processed,
                      "cpu": cpu1 - cpu0}), flush=True)


def _reads(ports: list[int]) -> int:
    return sum(int(query(p, "INFO", "stats")["total_reads_processed"]) for p in ports)


async def _prefill(url: str, names: list[str], n: int) -> None:
    per_queue = n // len(names)
    for name in names:
        async with Queue.from_url(url, name=name) as q:
            for start in range(0, per_queue, 5000):
                size = min(5000, per_queue - start)
                await q.enqueue_many([TaskCall.by_name("bench.noop") for _ in range(size)])


def _run_workers(url: str, groups: list[list[str]], concurrency: int) -> list[dict[str, Any]]:
    procs = [subprocess.Popen(
        [sys.executable, "-m", "benchmarks.cluster", "--worker", url, ",".join(group),
         str(concurrency)], stdout=subprocess.PIPE, text=True) for group in groups]
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=600)
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def _measure(shape: str, url: str, ports: list[int], groups: list[list[str]], n: int,
             concurrency: int) -> dict[str, Any]:
    names = [name for group in groups for name in group]
    asyncio.run(_prefill(url, names, n))
    before = _reads(ports)
    results = _run_workers(url, groups, concurrency)
    reads = _reads(ports) - before
    processed = sum(r["processed"] for r in results)
    elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)
    row = {"shape": shape, "workers": len(groups), "jobs": processed,
           "jobs_per_s": processed / elapsed, "rtt_per_job": reads / max(processed, 1),
           "cpu_us_per_job": 1e6 * sum(r["cpu"] for r in results) / max(processed, 1),
           "per_process_jobs_per_s": [r["processed"] / (r["end"] - r["start"])
                                      for r in results]}
    print(f"{shape:<28} workers {len(groups)}  {row['jobs_per_s']:>9,.0f} jobs/s  "
          f"{row['rtt_per_job']:.3f} round trips/job  {row['cpu_us_per_job']:.0f} CPU us/job",
          flush=True)
    return row


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__)
    p.add_argument("--n", type=int, default=30_000, help="jobs per shape")
    p.add_argument("--queues", type=int, default=6)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        url, names, concurrency = args.worker
        asyncio.run(_worker_main(url, names.split(","), int(concurrency)))
        return 0
    print(f"{os.cpu_count()} CPU(s); {args.n:,} no-op jobs over {args.queues} queues per shape")
    rows = []
    names = spread_queue_names("bench", args.queues)
    with RedisServer() as server:
        rows.append(_measure("standalone (1 server)", server.url, [server.port], [names],
                             args.n, args.concurrency))
    for primaries in (1, 2, 3):
        cluster = ClusterSetup(primaries=primaries, replicas=0, appendonly=False).start()
        try:
            owner: dict[int, list[str]] = {}
            for name in names:
                node = cluster.primary_for(f"ajr:{{{name}}}:wait")
                owner.setdefault(node.port, []).append(name)
            rows.append(_measure(f"cluster, {primaries} primar{'y' if primaries == 1 else 'ies'}",
                                 cluster.url, [n.port for n in cluster.nodes],
                                 list(owner.values()), args.n, args.concurrency))
        finally:
            cluster.cleanup()
    base = rows[0]["rtt_per_job"]
    print(f"round trips per job on a cluster / standalone: "
          f"{max(r['rtt_per_job'] for r in rows[1:]) / base:.2f}x at most")
    out = os.path.join(os.path.dirname(__file__), "results", "cluster.json")
    with open(out, "w") as f:
        json.dump({"n": args.n, "queues": args.queues, "cpus": os.cpu_count(), "rows": rows},
                  f, indent=2)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
