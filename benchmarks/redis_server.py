"""The benchmark's own throwaway redis-server, and its counters."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Stats:
    """Cumulative server counters at one moment."""

    commands: int  # sum of calls over INFO commandstats (script-internal calls included)
    reads: int  # INFO stats total_reads_processed: read events, our round-trip proxy
    info_calls: int  # our own INFO calls, subtracted from the deltas


def _parse_info(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            out[key] = value
    return out


class RespClient:
    """A minimal blocking RESP2 client for the few admin commands the runner sends."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = self.sock.makefile("rb")

    def call(self, *args: str) -> str | int | None:
        parts = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(parts))
        return self._reply()

    def _reply(self) -> str | int | None:
        line = self.buf.readline()
        if not line:
            raise ConnectionError("redis-server closed the connection")
        kind, rest = line[:1], line[1:-2].decode()
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RuntimeError(f"redis error: {rest}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.buf.read(size + 2)
            return data[:-2].decode()
        raise RuntimeError(f"unexpected reply {line!r}")

    def close(self) -> None:
        self.buf.close()
        self.sock.close()


def find_binary(binary: str = "redis-server") -> str:
    """The path of ``binary``: a name looked up on PATH, or a path (``~`` expanded)."""
    path = shutil.which(os.path.expanduser(binary))
    if path is None:
        where = "is not on PATH" if os.sep not in binary else "is not an executable file"
        raise FileNotFoundError(f"{binary} {where}")
    return path


def binary_version(binary: str) -> str:
    """``redis-server --version`` of a binary, e.g. "8.6.3" ("?" when it does not say)."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    m = re.search(r"v=(\d+(?:\.\d+)*)", out)
    return m.group(1) if m else "?"


def version_tuple(version: str) -> tuple[int, ...]:
    """"8.6.3" -> (8, 6, 3); () when it is not a version."""
    parts = re.findall(r"\d+", version)
    return tuple(int(x) for x in parts[:3])


class RedisServer:
    """``redis-server`` on a free loopback port in a temporary directory."""

    def __init__(self, *, aof: str | None = None, binary: str = "redis-server") -> None:
        self.binary = find_binary(binary)
        self.aof = aof
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ajr-bench-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: RespClient | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--save", "", "--daemonize", "no",
                "--protected-mode", "yes", "--maxclients", "1000", "--loglevel", "warning",
                "--logfile", str(self.dir / "redis.log")]
        if self.aof:
            args += ["--appendonly", "yes", "--appendfsync", self.aof]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.call("PING")
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: see {self.dir}") from None
                time.sleep(0.05)

    @property
    def client(self) -> RespClient:
        if self._client is None:
            self._client = RespClient(self.port)
        return self._client

    def info(self, *sections: str) -> dict[str, str]:
        return _parse_info(str(self.client.call("INFO", *sections)))

    def version(self) -> str:
        return self.info("server").get("redis_version", "?")

    def stats(self) -> Stats:
        info = self.info("stats", "commandstats")
        commands = 0
        info_calls = 0
        for key, value in info.items():
            if key.startswith("cmdstat_"):
                calls = int(value.split(",", 1)[0].partition("=")[2])
                commands += calls
                if key == "cmdstat_info":
                    info_calls = calls
        return Stats(commands, int(info.get("total_reads_processed", 0)), info_calls)

    def reset(self) -> None:
        """Empty the server between phases (it is ours alone)."""
        self.client.call("FLUSHALL")
        self.client.call("CONFIG", "RESETSTAT")

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def delta(before: Stats, after: Stats) -> tuple[int, int]:
    """(commands, reads) between two snapshots, less our own INFO calls.

    The INFO of ``after`` is counted in its reads but not yet in its commandstats;
    the INFO of ``before`` is in both. ``info_calls`` removes the INFO commands
    (so a library's own INFO calls are dropped as well: a few per worker start).
    """
    commands = (after.commands - after.info_calls) - (before.commands - before.info_calls)
    reads = after.reads - before.reads - 1
    return commands, max(reads, 0)
