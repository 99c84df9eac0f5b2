"""Settings, workloads and measurements."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RATE_MAX = 50  # the rate-limited phase: at most this many starts ...
RATE_PER_S = 0.5  # ... in any window of this many seconds
PRODUCERS = 200  # the concurrent enqueue phase: coroutines enqueueing at once


@dataclass(frozen=True)
class Settings:
    libs: tuple[str, ...]
    n: int = 20_000
    reps: int = 3
    aof: str | None = None
    redis_server: str = "redis-server"  # the binary every library of the run shares
    quick: bool = False
    json_path: Path = Path("benchmarks/results/latest.json")
    png_path: Path | None = None
    window_s: float = 6.0  # phases are sized for this much work; cut off at 1.5x
    fill_max_s: float = 20.0  # a prefill stops after this long (the row shows n used)
    warmup: bool = True
    concurrency: int = 50
    sleep_concurrency: int = 200
    latency_jobs: int = 1000
    latency_interval_s: float = 0.005
    bulk_chunk: int = 1000
    rate_max: int = RATE_MAX
    rate_per_s: float = RATE_PER_S
    rate_jobs: int = 400  # prefilled for the rate-limited phase: rate_jobs / rate_max windows
    memory_n: int = 100_000  # waiting jobs whose memory the memory phase reads
    phases: tuple[str, ...] = ()  # the phases to run (empty: all)

    @property
    def enqueue_n(self) -> int:
        return max(self.n // 4, 100)

    @property
    def retry_n(self) -> int:
        return max(self.n // 4, 100)

    @property
    def delayed_n(self) -> int:
        return self.n * 5

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["json_path"] = str(self.json_path)
        d["png_path"] = str(self.png_path) if self.png_path else None
        d.update(enqueue_n=self.enqueue_n, retry_n=self.retry_n, delayed_n=self.delayed_n)
        return d


@dataclass(frozen=True)
class Column:
    """A measurement of one phase only, shown after the common columns of its table."""

    key: str  # in Sample.extra and Row.extra
    header: str
    digits: int = 1
    agg: str = "median"  # over repetitions: median | max | first


@dataclass(frozen=True)
class Phase:
    """One workload."""

    id: str
    title: str
    kind: str = "noop"  # job kind (see peers/_harness.py)
    workers: int = 1
    sleep_handler: bool = False
    columns: tuple[Column, ...] = ()
    chart: bool = True  # a bar of jobs/s in the PNG


PHASES: tuple[Phase, ...] = (
    Phase("enqueue_one", "enqueue one by one (awaited, one coroutine)"),
    Phase("enqueue_concurrent",
          f"enqueue one by one from {PRODUCERS} coroutines at once (a web app's requests)"),
    Phase("enqueue_bulk", "bulk enqueue (1000 jobs per call)"),
    Phase("process_noop", "process prefilled no-op jobs, 1 worker, concurrency 50"),
    Phase("process_sleep", "process prefilled 1 ms asyncio.sleep jobs, 1 worker, conc. 200",
          kind="sleep", sleep_handler=True),
    Phase("process_noop_2w", "process prefilled no-op jobs, 2 worker processes x 50",
          workers=2),
    Phase("latency", "idle worker: enqueue call -> handler start (p50 / p99)", kind="stamp"),
    Phase("retry_storm", "retry storm: every job fails once, then succeeds", kind="flaky"),
    Phase("delayed_burst", "delayed jobs all due at once, 1 worker, concurrency 50"),
    Phase("rate_limited",
          f"rate limit {RATE_MAX} starts / {RATE_PER_S:g} s: prefilled no-op jobs, 1 worker,"
          " conc. 50; jobs/s = starts/s",
          kind="tick", chart=False, columns=(
              Column("rate_max", "limit", 0, agg="first"),
              Column("max_per_window", "max/window", 0, agg="max"),
              Column("pct_of_limit", "% of rate", 1),
              Column("rtts_per_window", "rtt/window", 1),
              Column("cmds_per_window", "cmd/window", 0),
              Column("held_cmds_per_s", "held cmd/s", 1),
          )),
    Phase("memory",
          "bytes in Redis per waiting no-op job (prefilled; jobs/s = prefill rate) and per"
          " job once processed (what each library keeps by its defaults)",
          chart=False, columns=(
              Column("bytes_waiting", "B/waiting", 0),
              Column("bytes_kept", "B/job done", 0),
              Column("kept_jobs", "done", 0, agg="first"),
          )),
)
PHASE_BY_ID = {p.id: p for p in PHASES}


@dataclass
class Sample:
    """One library, one phase, one repetition."""

    lib: str
    phase: str
    rep: int
    status: str = "ok"  # ok | partial (time bound hit) | unsupported: .. | error: ..
    jobs: int = 0
    seconds: float = 0.0
    jobs_per_s: float = 0.0
    cmds_per_job: float | None = None
    rtts_per_job: float | None = None
    rss_mb: float | None = None
    cpu_us_per_job: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "partial")


@dataclass
class Row:
    """The median over repetitions of one library's phase."""

    lib: str
    phase: str
    status: str
    version: str = ""
    jobs: int = 0
    jobs_per_s: float = 0.0
    cmds_per_job: float | None = None
    rtts_per_job: float | None = None
    rss_mb: float | None = None
    cpu_us_per_job: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    ratio_to_aiojobs_redis: float | None = None
    samples: int = 0
    jobs_per_s_all: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # the phase's own columns


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _combine(column: Column, good: list[Sample]) -> Any:
    values = [s.extra.get(column.key) for s in good]
    present = [v for v in values if v is not None]
    if not present:
        return None
    if column.agg == "first" or not all(isinstance(v, int | float) for v in present):
        return present[0]
    if column.agg == "max":
        return max(present)
    return statistics.median(present)


def aggregate(samples: list[Sample], lib: str, phase: str, version: str) -> Row:
    mine = [s for s in samples if s.lib == lib and s.phase == phase]
    good = [s for s in mine if s.ok]
    if not good:
        status = mine[-1].status if mine else "not run"
        return Row(lib, phase, status, version, samples=0)
    partial = any(s.status == "partial" for s in good)
    failed = len(mine) - len(good)
    status = "partial" if partial else "ok"
    if failed:
        status += f" ({failed} failed)"
    return Row(
        lib, phase, status, version,
        jobs=int(statistics.median(s.jobs for s in good)),
        jobs_per_s=statistics.median(s.jobs_per_s for s in good),
        cmds_per_job=_median([s.cmds_per_job for s in good]),
        rtts_per_job=_median([s.rtts_per_job for s in good]),
        rss_mb=_median([s.rss_mb for s in good]),
        cpu_us_per_job=_median([s.cpu_us_per_job for s in good]),
        p50_ms=_median([s.p50_ms for s in good]),
        p99_ms=_median([s.p99_ms for s in good]),
        samples=len(good),
        jobs_per_s_all=[round(s.jobs_per_s, 1) for s in good],
        extra={c.key: _combine(c, good) for c in PHASE_BY_ID[phase].columns}
        if phase in PHASE_BY_ID else {},
    )


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return ordered[k - 1]
