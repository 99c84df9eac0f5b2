"""``python -m benchmarks``: run the benchmarks (see ``--help`` and docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .envs import ALL_LIBS, MIN_REDIS
from .model import PHASES, Settings
from .redis_server import find_binary

RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str]) -> Settings:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="aiojobs_redis and its peers, the same workloads side by side on a"
                    " redis-server of our own.")
    p.add_argument("--libs", default=",".join(ALL_LIBS),
                   help=f"comma-separated, from: {', '.join(ALL_LIBS)} (default: all)")
    p.add_argument("--n", type=int, default=None,
                   help="jobs per processing phase (default 20000; one-by-one enqueue and the"
                        " retry storm use n/4, the delayed burst 5n)")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 3)")
    p.add_argument("--phases", default="", metavar="IDS",
                   help="comma-separated phases to run (default: all): "
                        + ", ".join(ph.id for ph in PHASES))
    p.add_argument("--aof", choices=["everysec", "always", "no"], default=None,
                   help="run redis-server with appendonly yes and this appendfsync")
    p.add_argument("--redis-server", default="redis-server", metavar="PATH",
                   help="the redis-server binary the run starts (one server, shared by every"
                        " library; default: redis-server on PATH). "
                        + "; ".join(f"{lib} needs >= {'.'.join(map(str, v))}"
                                    for lib, (v, _) in MIN_REDIS.items())
                        + ": older servers skip it")
    p.add_argument("--window", type=float, default=None,
                   help="seconds of work a phase is sized for; it stops measuring after 1.5x"
                        " this (default 6)")
    p.add_argument("--no-warmup", action="store_true", help="skip the warm-up run")
    p.add_argument("--quick", action="store_true",
                   help="small n, aiojobs_redis only, no venvs: a smoke test (< 1 minute)")
    p.add_argument("--json", type=Path, default=None,
                   help="where to write the JSON results (default benchmarks/results/latest.json;"
                        " with --quick: benchmarks/results/quick.json)")
    p.add_argument("--png", type=Path, default=None,
                   help="bar chart path (needs matplotlib; default: next to the JSON file,"
                        " unless --quick)")
    a = p.parse_args(argv)
    libs = tuple(x.strip() for x in a.libs.split(",") if x.strip())
    phases = tuple(x.strip() for x in a.phases.split(",") if x.strip())
    unknown_phases = [x for x in phases if x not in {ph.id for ph in PHASES}]
    if unknown_phases:
        p.error(f"unknown phases: {', '.join(unknown_phases)}")
    unknown = [x for x in libs if x not in ALL_LIBS]
    if unknown:
        p.error(f"unknown libraries: {', '.join(unknown)} (choose from {', '.join(ALL_LIBS)})")
    try:
        redis_server = find_binary(a.redis_server)
    except FileNotFoundError as e:
        p.error(f"--redis-server: {e}")
    if a.quick:
        return Settings(
            libs=("aiojobs_redis",), n=a.n or 1000, reps=a.reps or 1, aof=a.aof,
            redis_server=redis_server, phases=phases,
            quick=True, json_path=a.json or RESULTS / "quick.json", png_path=a.png,
            window_s=a.window or 5.0,
            fill_max_s=10.0, warmup=False, latency_jobs=100, rate_jobs=200)
    n = a.n or 20_000
    if n < 100:
        p.error("--n must be at least 100")
    json_path = a.json or RESULTS / "latest.json"
    return Settings(
        libs=libs, n=n, reps=a.reps or 3, aof=a.aof, redis_server=redis_server, phases=phases,
        json_path=json_path,
        png_path=a.png or json_path.with_suffix(".png"), window_s=a.window or 6.0,
        warmup=not a.no_warmup)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    settings = parse(args)
    from .runner import run

    try:
        return asyncio.run(run(settings, ["python", "-m", "benchmarks", *args]))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
