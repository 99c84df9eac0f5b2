"""Terminal table, target ratios, JSON file and optional PNG chart."""

from __future__ import annotations

import importlib
import json
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .envs import LABELS
from .model import PHASE_BY_ID, PHASES, Row, Sample, Settings

PYTHON_PEERS = ("arq", "saq", "streaq", "taskiq", "bullmq_py")
OURS = "aiojobs_redis"


def describe_machine(redis_version: str, aof: str | None) -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    node = shutil.which("node")
    node_version = None
    if node:
        try:
            node_version = subprocess.run([node, "--version"], capture_output=True, text=True,
                                          timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            node_version = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "node": node_version,
        "redis": redis_version,
        "redis_persistence": f"appendonly yes, appendfsync {aof}" if aof else
        "save '' , appendonly no",
        "load_average_at_start": list(os.getloadavg()),
    }


def add_ratios(rows: list[Row]) -> None:
    ours = {r.phase: r for r in rows if r.lib == OURS}
    for r in rows:
        base = ours.get(r.phase)
        if base is not None and base.jobs_per_s > 0 and r.jobs_per_s > 0:
            r.ratio_to_aiojobs_redis = r.jobs_per_s / base.jobs_per_s


def _f(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def _cell(v: Any, digits: int) -> str:
    if v is None:
        return "-"
    if isinstance(v, int | float) and not isinstance(v, bool):
        return _f(float(v), digits)
    return str(v)


def table(rows: list[Row]) -> str:
    common = ("library", "version", "jobs/s", "vs ajr", "jobs", "cmd/job", "rtt/job", "rss MB",
              "cpu us/job", "p50 ms", "p99 ms")
    out: list[str] = []
    for phase in PHASES:
        mine = [r for r in rows if r.phase == phase.id]
        if not mine:
            continue
        head = (*common, *(c.header for c in phase.columns), "status")
        lines = [head]
        for r in mine:
            ok = r.samples > 0
            lines.append((
                LABELS.get(r.lib, r.lib), r.version[:22],
                f"{r.jobs_per_s:,.0f}" if ok else "-",
                f"{r.ratio_to_aiojobs_redis:.2f}x" if r.ratio_to_aiojobs_redis else "-",
                f"{r.jobs:,}" if ok else "-",
                _f(r.cmds_per_job, 2), _f(r.rtts_per_job, 2), _f(r.rss_mb, 0),
                _f(r.cpu_us_per_job, 0), _f(r.p50_ms, 2), _f(r.p99_ms, 2),
                *(_cell(r.extra.get(c.key), c.digits) if ok else "-" for c in phase.columns),
                r.status[:60],
            ))
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        left = (0, 1, len(head) - 1)
        out.append(f"\n== {phase.id}: {phase.title}")
        for k, line in enumerate(lines):
            cells = [c.ljust(w) if i in left else c.rjust(w)
                     for i, (c, w) in enumerate(zip(line, widths, strict=True))]
            out.append("  ".join(cells).rstrip())
            if k == 0:
                out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


@dataclass
class Target:
    name: str
    value: float | None
    goal: str
    verdict: str  # PASS | FAIL | info | n/a
    detail: str


def _get(rows: list[Row], lib: str, phase: str) -> Row | None:
    for r in rows:
        if r.lib == lib and r.phase == phase and r.samples > 0:
            return r
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def _jps(r: Row | None) -> float | None:
    return r.jobs_per_s if r is not None else None


def _cmds(r: Row | None) -> float | None:
    return r.cmds_per_job if r is not None else None


def _extra(row: Row | None, key: str) -> float | None:
    value = row.extra.get(key) if row is not None else None
    return float(value) if isinstance(value, int | float) else None


def _behind(rows: list[Row], peer: str) -> list[str] | None:
    """The phases in which ``peer`` did better than aiojobs_redis (None: no peer rows)."""
    out: list[str] = []
    seen = False
    for phase in {r.phase for r in rows}:
        ours, theirs = _get(rows, OURS, phase), _get(rows, peer, phase)
        if ours is None or theirs is None:
            continue
        seen = True
        if phase == "latency":
            worse = (ours.p99_ms or 0) > (theirs.p99_ms or 0) or \
                (ours.p50_ms or 0) > (theirs.p50_ms or 0)
        elif phase == "memory":
            a, b = _extra(ours, "bytes_waiting"), _extra(theirs, "bytes_waiting")
            worse = a is not None and b is not None and a > b
        elif phase == "rate_limited":
            continue  # a cap, not a speed
        else:
            worse = ours.jobs_per_s < theirs.jobs_per_s
        if worse:
            out.append(phase)
    return sorted(out) if seen else None


def targets(rows: list[Row]) -> list[Target]:
    out: list[Target] = []

    def check(name: str, value: float | None, goal: float | None, detail: str,
              lower_is_better: bool = False, unit: str = "x") -> None:
        if value is None:
            verdict = "n/a"
        elif goal is None:
            verdict = "info"
        elif lower_is_better:
            verdict = "PASS" if value <= goal else "FAIL"
        else:
            verdict = "PASS" if value >= goal else "FAIL"
        if goal is None:
            goal_text = "-"
        else:
            goal_text = f"<= {goal:g} {unit}" if lower_is_better else f">= {goal:g}{unit}"
        out.append(Target(name, value, goal_text, verdict, detail))

    ours_p = _get(rows, OURS, "process_noop")
    node_p = _get(rows, "bullmq_node", "process_noop")
    check("processing vs BullMQ (Node)",
          _ratio(_jps(ours_p), _jps(node_p)), 2.5,
          "process_noop jobs/s, aiojobs_redis / BullMQ Node")
    py = [r for lib in PYTHON_PEERS if (r := _get(rows, lib, "process_noop")) is not None]
    best = max(py, key=lambda r: r.jobs_per_s) if py else None
    check("processing vs best Python peer",
          _ratio(_jps(ours_p), _jps(best)), 4.0,
          f"process_noop, best peer: {LABELS.get(best.lib, best.lib) if best else '-'}")
    ours_b = _get(rows, OURS, "enqueue_bulk")
    bull_b = _get(rows, "bullmq_node", "enqueue_bulk") or _get(rows, "bullmq_py", "enqueue_bulk")
    check("bulk enqueue vs BullMQ addBulk",
          _ratio(_jps(ours_b), _jps(bull_b)), 2.0,
          f"enqueue_bulk, vs {LABELS.get(bull_b.lib, '-') if bull_b else '-'}")
    ours_c = _get(rows, OURS, "enqueue_concurrent")
    bull_c = (_get(rows, "bullmq_node", "enqueue_concurrent")
              or _get(rows, "bullmq_py", "enqueue_concurrent"))
    check("concurrent enqueue vs BullMQ add",
          _ratio(_jps(ours_c), _jps(bull_c)), 3.0,
          f"enqueue_concurrent, vs {LABELS.get(bull_c.lib, '-') if bull_c else '-'}")
    ours_o = _get(rows, OURS, "enqueue_one")
    bull_o = _get(rows, "bullmq_node", "enqueue_one") or _get(rows, "bullmq_py", "enqueue_one")
    check("one-by-one enqueue vs BullMQ add",
          _ratio(_jps(ours_o), _jps(bull_o)), 1.5,
          f"enqueue_one, vs {LABELS.get(bull_o.lib, '-') if bull_o else '-'}")
    lat = _get(rows, OURS, "latency")
    check("idle latency p50", lat.p50_ms if lat else None, 0.7,
          "enqueue call -> handler start, wall clock", lower_is_better=True, unit="ms")
    check("idle latency p99", lat.p99_ms if lat else None, 1.3,
          "enqueue call -> handler start, wall clock", lower_is_better=True, unit="ms")
    ours_m = _get(rows, OURS, "memory")
    node_m = _get(rows, "bullmq_node", "memory")
    check("bytes per waiting job vs BullMQ (Node)",
          _ratio(_extra(ours_m, "bytes_waiting"), _extra(node_m, "bytes_waiting")), 1.0,
          "memory, aiojobs_redis / BullMQ Node (lower is less)", lower_is_better=True,
          unit="x")
    behind = _behind(rows, "chasquimq")
    check("rows behind ChasquiMQ", None if behind is None else float(len(behind)), 0.0,
          "phases where ChasquiMQ's jobs/s (or latency, memory) beat ours: "
          + (", ".join(behind) if behind else "-"), lower_is_better=True, unit="")
    check("round trips per job, steady processing", ours_p.rtts_per_job if ours_p else None,
          1.5, "process_noop, total_reads_processed delta / jobs", lower_is_better=True,
          unit="")
    check("commands per job vs BullMQ (Node)",
          _ratio(_cmds(ours_p), _cmds(node_p)), None,
          "process_noop commands/job, aiojobs_redis / BullMQ Node (lower is fewer)")
    rate = _get(rows, OURS, "rate_limited")
    limit = rate.extra.get("rate_max") if rate else None
    check("rate limit: most starts in a window", rate.extra.get("max_per_window")
          if rate else None, float(limit) if limit else None,
          f"rate_limited, any window of the limit's period, limit {limit or '-'}"
          " (worst repetition)", lower_is_better=True, unit="")
    check("rate limit: round trips per window", rate.extra.get("rtts_per_window")
          if rate else None, None, "rate_limited, total_reads_processed per period of the"
          " limit, jobs' own included (a poller every 10 ms would add 50)")
    return out


def targets_text(ts: list[Target]) -> str:
    lines = ["\n== targets"]
    w = max(len(t.name) for t in ts)
    for t in ts:
        value = "-" if t.value is None else f"{t.value:.2f}"
        lines.append(f"  {t.name.ljust(w)}  {value:>7}  goal {t.goal:<10} {t.verdict:<4}"
                     f"  ({t.detail})")
    return "\n".join(lines)


NOTES = (
    "jobs/s: median over repetitions; processing phases time the first handler start to the"
    " last handler end (delayed_burst: from the due time).",
    "cmd/job: delta of INFO commandstats calls (commands run inside Lua scripts included)."
    " rtt/job: delta of INFO stats total_reads_processed (read events on client sockets), used"
    " as a proxy for client round trips; worker start and stop are included.",
    "rss MB: peak RSS of the worker process (ru_maxrss). cpu us/job: worker CPU time from"
    " ready to stopped, per job.",
    "partial: the phase hit its time bound; rates are over the jobs done in time.",
    "rate_limited: jobs/s is starts over the time from the first start to the end of the"
    " window the last start opened; max/window: the most handler starts in any window of the"
    " limit's period (worst repetition); rtt/window and cmd/window: per period from the first"
    " window's starts to the last; held cmd/s: commands per second while every started job"
    " had ended and the window was still full.",
)


def write_json(path: Path, settings: Settings, machine: dict[str, Any],
               libraries: dict[str, dict[str, Any]], rows: list[Row], samples: list[Sample],
               ts: list[Target], argv: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": argv,
        "settings": settings.to_json(),
        "machine": machine,
        "libraries": libraries,
        "phases": {p.id: p.title for p in PHASES},
        "notes": list(NOTES),
        "rows": [asdict(r) for r in rows],
        "targets": [asdict(t) for t in ts],
        "samples": [asdict(s) for s in samples],
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    tmp.replace(path)


def write_png(path: Path, rows: list[Row], title: str) -> bool:
    """A bar chart of jobs/s per phase; False when matplotlib is not importable."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return False
    phases = [p for p in PHASES
              if p.chart and any(r.phase == p.id and r.samples for r in rows)]
    if not phases:
        return False
    libs = list(dict.fromkeys(r.lib for r in rows))
    cols = 2
    nrows = (len(phases) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(12, 2.8 * nrows), squeeze=False)
    for ax, phase in zip(axes.flat, phases, strict=False):
        values = []
        latency = phase.id == "latency"
        for lib in libs:
            r = next((x for x in rows if x.lib == lib and x.phase == phase.id), None)
            value = (r.p99_ms if latency else r.jobs_per_s) if r and r.samples else None
            values.append(value or 0.0)
        colors = ["#d62728" if lib == OURS else "#7f7f7f" for lib in libs]
        ax.barh([LABELS.get(lib, lib) for lib in libs], values, color=colors)
        ax.invert_yaxis()
        ax.set_title(PHASE_BY_ID[phase.id].title, fontsize=9)
        ax.set_xlabel("p99 ms (lower is better)" if latency else "jobs/s", fontsize=8)
        ax.tick_params(labelsize=8)
        for y, v in enumerate(values):
            if v > 0:
                ax.text(v, y, f" {v:,.0f}", va="center", fontsize=7)
    for ax in list(axes.flat)[len(phases):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
