"""The whole run: environments, server, warm-up, interleaved repetitions, report."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from . import envs
from .envs import LABELS
from .model import PHASES, Row, Sample, Settings, aggregate
from .phases import LibRun, run_rep, warm_up
from .redis_server import RedisServer, binary_version, version_tuple
from .report import (
    add_ratios,
    describe_machine,
    table,
    targets,
    targets_text,
    write_json,
    write_png,
)


class Progress:
    """One live line on a terminal's stderr; plain lines elsewhere."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.prefix = ""
        self.t0 = time.monotonic()
        self._last = ""

    def _elapsed(self) -> str:
        s = int(time.monotonic() - self.t0)
        return f"{s // 60:02d}:{s % 60:02d}"

    def update(self, text: str) -> None:
        if self.tty:
            line = f"[{self._elapsed()}] {self.prefix}{text}"
            width = 118
            self.stream.write("\r\033[K" + line[:width])
            self.stream.flush()

    def line(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(f"[{self._elapsed()}] {text}\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _sample_line(s: Sample) -> str:
    what = f"{LABELS.get(s.lib, s.lib)} · {s.phase}"
    if not s.ok:
        return f"{what}: {s.status}"
    text = f"{what}: {s.jobs_per_s:,.0f} jobs/s ({s.jobs:,} jobs"
    if s.cmds_per_job is not None and s.rtts_per_job is not None:
        text += f", {s.cmds_per_job:.1f} cmd/job, {s.rtts_per_job:.2f} rtt/job"
    if s.p99_ms is not None and s.p50_ms is not None:
        text += f", p50 {s.p50_ms:.2f} ms, p99 {s.p99_ms:.2f} ms"
    if s.extra.get("max_per_window") is not None:
        text += (f", at most {s.extra['max_per_window']} starts in any"
                 f" {s.extra.get('per_s', 0):g} s, limit {s.extra.get('rate_max')}")
    text += ")"
    return text + (" partial" if s.status == "partial" else "")


async def run(settings: Settings, argv: list[str]) -> int:
    progress = Progress()
    libs = list(settings.libs)
    phases = tuple(p for p in PHASES if not settings.phases or p.id in settings.phases)
    progress.line(f"preparing {', '.join(libs)}"
                  + ("" if settings.quick else f" (environments under {envs.cache_dir()})"))
    # a library that needs a newer redis-server than this run's is skipped, not installed
    redis_version = binary_version(settings.redis_server)
    too_old = {lib: problem for lib in libs
               if (problem := envs.redis_problem(lib, version_tuple(redis_version)))}
    for lib in too_old:
        progress.line(f"{LABELS.get(lib, lib)}: needs {envs.MIN_REDIS[lib][1]}; this run's"
                      f" {settings.redis_server} is {redis_version}: pass --redis-server PATH"
                      " to run it")
    prepared = await envs.prepare([lib for lib in libs if lib not in too_old])
    envs_by_lib = {lib: prepared.get(lib) or envs.LibEnv(lib, problem=too_old[lib])
                   for lib in libs}
    libraries: dict[str, dict[str, object]] = {}
    for lib, env in envs_by_lib.items():
        libraries[lib] = {"label": LABELS.get(lib, lib), "version": "", "problem": env.problem}
        if env.problem and lib not in too_old:
            progress.line(f"{LABELS.get(lib, lib)}: {env.problem}")

    server = RedisServer(aof=settings.aof, binary=settings.redis_server)
    server.start()
    logdir = Path(tempfile.mkdtemp(prefix="ajr-bench-logs-"))
    samples: list[Sample] = []
    try:
        machine = describe_machine(server.version(), settings.aof)
        machine["redis_server"] = server.binary
        progress.line(f"redis-server {machine['redis']} on {server.url} ({machine['cpu']},"
                      f" {machine['cores']} cores); adapter logs in {logdir}")
        runs = [LibRun(lib, env.command, settings, server, logdir)
                for lib, env in envs_by_lib.items() if env.command is not None]
        if settings.warmup:
            for r in runs:
                progress.prefix = "warm-up · "
                w = warm_up(r, progress.update)
                sample = await w
                progress.line(f"warm-up {_sample_line(sample)}")
        for rep in range(settings.reps):
            k = rep % len(runs) if runs else 0
            order = runs[k:] + runs[:k]  # rotate: no library always goes first
            for r in order:
                progress.prefix = f"rep {rep + 1}/{settings.reps} · "

                def done(s: Sample, rep: int = rep) -> None:
                    progress.line(f"rep {rep + 1}/{settings.reps} · {_sample_line(s)}")

                samples += await run_rep(r, rep, phases, progress.update, done)
        progress.clear()
        machine["load_average_at_end"] = list(os.getloadavg())
        for r in runs:
            libraries[r.lib]["version"] = r.version
    finally:
        server.stop()

    rows: list[Row] = []
    for lib in libs:
        env = envs_by_lib[lib]
        version = str(libraries[lib]["version"])
        for phase in phases:
            if env.problem:
                rows.append(Row(lib, phase.id, env.problem, version))
            else:
                rows.append(aggregate(samples, lib, phase.id, version))
    add_ratios(rows)
    ts = targets(rows)
    print(f"\naiojobs_redis benchmarks: {machine['cpu']}, {machine['cores']} cores, Python"
          f" {machine['python']}, redis {machine['redis']} ({machine['redis_persistence']}),"
          f" n={settings.n:,}, reps={settings.reps}, window {settings.window_s:g} s")
    print(table(rows))
    print(targets_text(ts))
    write_json(settings.json_path, settings, machine, libraries, rows, samples, ts, argv)
    print(f"\nJSON: {settings.json_path}")
    png = settings.png_path
    if png is not None:
        title = (f"aiojobs_redis benchmarks — {machine['cpu']}, {machine['cores']} cores,"
                 f" redis {machine['redis']}, n={settings.n:,}")
        if write_png(png, rows, title):
            print(f"PNG: {png}")
        else:
            print("PNG: skipped (matplotlib is not importable; pip install matplotlib)")
    ours_ok = any(r.lib == "aiojobs_redis" and r.samples > 0 for r in rows)
    return 0 if ours_ok or "aiojobs_redis" not in libs else 1
