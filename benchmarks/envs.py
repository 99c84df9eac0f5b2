"""Where each library runs: its own virtualenv (or node_modules) under a cache dir.

The peers pin different redis-py versions, so each gets a venv of its own, made
once and reused while its package list is unchanged.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .procs import PEERS_DIR, Command

REPO_ROOT = PEERS_DIR.parent.parent

#: library id -> (display name, pip or npm packages); "aiojobs_redis" runs in this interpreter
PYTHON_PEERS: dict[str, list[str]] = {
    "arq": ["arq", "hiredis", "uvloop"],
    "saq": ["saq[redis]", "typing_extensions", "hiredis", "uvloop"],  # saq omits t_e
    "streaq": ["streaq", "uvloop"],
    "taskiq": ["taskiq", "taskiq-redis", "hiredis", "uvloop"],
    "bullmq_py": ["bullmq", "hiredis", "uvloop"],
    # a Rust engine (its own Redis client) under asyncio handlers; redis-py only for
    # QueueEvents, which the adapter does not use. 1.3 is what the adapter is written for.
    "chasquimq": ["chasquimq>=1.3,<1.4", "uvloop"],
}
NODE_PEERS: dict[str, list[str]] = {"bullmq_node": ["bullmq", "ioredis"]}
ALL_LIBS = ("aiojobs_redis", *PYTHON_PEERS, *NODE_PEERS)
LABELS = {
    "aiojobs_redis": "aiojobs_redis",
    "arq": "arq",
    "saq": "saq",
    "streaq": "streaq",
    "taskiq": "taskiq",
    "bullmq_py": "BullMQ (Python)",
    "bullmq_node": "BullMQ (Node)",
    "chasquimq": "ChasquiMQ",
}
#: library id -> the oldest redis-server it runs on, and why (a run on an older one skips it)
MIN_REDIS: dict[str, tuple[tuple[int, ...], str]] = {
    "chasquimq": ((8, 6), "XADD IDMP (8.6), XREADGROUP CLAIM (8.4), XACKDEL (8.2)"),
}
INSTALL_TIMEOUT_S = 900.0


def cache_dir() -> Path:
    env = os.environ.get("AIOJOBS_REDIS_BENCH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aiojobs_redis-bench"


@dataclass
class LibEnv:
    """A library ready to run (``command`` set) or the reason it is not."""

    lib: str
    command: Command | None = None
    problem: str | None = None


def redis_problem(lib: str, redis_version: tuple[int, ...]) -> str | None:
    """Why ``lib`` cannot run on a redis-server of this version (None: it can, or the
    version is unknown)."""
    need = MIN_REDIS.get(lib)
    if need is None or not redis_version or redis_version >= need[0]:
        return None
    want = ".".join(map(str, need[0]))
    have = ".".join(map(str, redis_version))
    return f"skipped: needs redis-server >= {want} (this run: {have})"


async def _run(argv: list[str], timeout: float, cwd: Path | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, cwd=cwd)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"timed out after {timeout:.0f} s"
    return proc.returncode or 0, out.decode(errors="replace")


def _last_line(text: str) -> str:
    lines = [t for t in text.strip().splitlines() if t.strip() and "WARNING" not in t]
    return (lines[-1] if lines else text.strip())[-300:]


def _marker_ok(marker: Path, spec: list[str]) -> bool:
    try:
        return bool(json.loads(marker.read_text()) == spec)
    except (OSError, ValueError):
        return False


async def _python_peer(lib: str, spec: list[str], root: Path) -> LibEnv:
    venv = root / "venvs" / lib
    marker = venv / ".bench-spec.json"
    python = venv / "bin" / "python"
    if not _marker_ok(marker, spec):
        shutil.rmtree(venv, ignore_errors=True)
        code, out = await _run([sys.executable, "-m", "venv", str(venv)], 300)
        if code != 0:
            return LibEnv(lib, problem=f"venv failed: {_last_line(out)}")
        code, out = await _run([str(python), "-m", "pip", "install", "-q",
                                "--disable-pip-version-check", *spec], INSTALL_TIMEOUT_S)
        if code != 0:
            return LibEnv(lib, problem=f"install failed: {_last_line(out)}")
        marker.write_text(json.dumps(spec))
    script = PEERS_DIR / f"{lib}_adapter.py"
    return LibEnv(lib, Command((str(python), str(script))))


async def _node_peer(lib: str, spec: list[str], root: Path) -> LibEnv:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return LibEnv(lib, problem="skipped: node/npm not on PATH")
    prefix = root / "node"
    marker = prefix / ".bench-spec.json"
    if not _marker_ok(marker, spec):
        prefix.mkdir(parents=True, exist_ok=True)
        (prefix / "package.json").write_text('{"name": "ajr-bench-node", "private": true}\n')
        code, out = await _run([npm, "install", "--no-audit", "--no-fund", "--silent", *spec],
                               INSTALL_TIMEOUT_S, cwd=prefix)
        if code != 0:
            return LibEnv(lib, problem=f"npm install failed: {_last_line(out)}")
        marker.write_text(json.dumps(spec))
    script = PEERS_DIR / f"{lib}_adapter.cjs"
    return LibEnv(lib, Command((node, str(script)),
                               {"NODE_PATH": str(prefix / "node_modules")}))


def own_env() -> LibEnv:
    """aiojobs_redis runs in this interpreter's environment, from this checkout."""
    script = PEERS_DIR / "aiojobs_redis_adapter.py"
    return LibEnv("aiojobs_redis", Command((sys.executable, str(script)),
                                           {"PYTHONPATH": str(REPO_ROOT)}))


async def prepare(libs: list[str], root: Path | None = None) -> dict[str, LibEnv]:
    """Make (or reuse) every library's environment, two installs at a time."""
    root = root or cache_dir()
    sem = asyncio.Semaphore(2)

    async def one(lib: str) -> LibEnv:
        if lib == "aiojobs_redis":
            return own_env()
        async with sem:
            try:
                if lib in PYTHON_PEERS:
                    return await _python_peer(lib, PYTHON_PEERS[lib], root)
                return await _node_peer(lib, NODE_PEERS[lib], root)
            except OSError as e:
                return LibEnv(lib, problem=f"install failed: {e}")

    envs = await asyncio.gather(*(one(lib) for lib in libs))
    return {e.lib: e for e in envs}
