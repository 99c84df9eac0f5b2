"""Running the workloads of one library against the runner's own redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .envs import LABELS
from .model import PHASES, Phase, Sample, Settings, percentile
from .procs import AdapterError, AdapterProc, Command
from .redis_server import RedisServer, Stats, delta

Report = Callable[[str], None]
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 40.0
DELAYED_WINDOWS = 2.0  # the delayed burst is sized for twice the window: it is the big one


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


async def _workers(run: LibRun, queue: str, concurrency: int, count: int, target: int,
                   report: Report, what: str, start_at: float | None = None,
                   before_wait: Callable[[], Any] | None = None,
                   windows: float = 1.0) -> WorkerResult:
    """Start ``count`` worker processes on ``queue``, wait until their handlers have
    finished ``target`` jobs (or the window is over), stop them, collect their reports."""
    s = run.settings
    cfg = {"url": run.server.url, "queue": queue, "concurrency": concurrency}
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
        try:
            begin = max(start_at or 0.0, result.t_ready)
            deadline = begin + s.window_s * windows * 1.5
            last_shown = 0.0
            while sum(done) < target:
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
    if res.timed_out:
        sample.status = "partial"


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
        if sample.ok and sample.jobs_per_s > 0 and not warmup:
            run.rates[phase.id] = sample.jobs_per_s
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
                             f"{run.label} · {phase.id}")
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
