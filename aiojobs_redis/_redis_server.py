"""Start a throwaway redis-server on a free loopback port in a temporary directory.

Used by the demo, the test suite and the benchmarks; never touches a shared
instance. ``kill()`` sends SIGKILL and ``start()`` again restarts it on the same
port and directory (so AOF files survive a crash, as in production).

:class:`ClusterSetup` starts a Redis Cluster of N primaries with M replicas each
(``redis-cli --cluster create``), likewise. A master with replicas and Sentinels is
``aiojobs_redis._redis_sentinel.SentinelSetup``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ._redis_wire import query, wait_until


def free_port(*, cluster: bool = False) -> int:
    """A free loopback port; with ``cluster``, one whose bus port (+10000) is free too."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if not cluster:
            return port
        if port <= 55535 and _is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster-mode redis-server")


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class RedisServer:
    """A redis-server process of our own."""

    def __init__(self, *, port: int | None = None, directory: str | None = None,
                 appendonly: bool = False, appendfsync: str = "everysec",
                 extra: list[str] | None = None, binary: str = "redis-server") -> None:
        path = shutil.which(binary)
        if path is None:
            raise FileNotFoundError(
                f"{binary} is not on PATH; install it (e.g. apt-get install -y redis-server)"
            )
        self.binary = path
        self.port = port or free_port(cluster="--cluster-enabled" in (extra or []))
        self._own_dir = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="ajr-redis-")
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra = list(extra or [])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", self.directory, "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync, "--protected-mode", "yes",
            "--logfile", str(Path(self.directory) / "redis.log"), "--daemonize", "no",
            *self.extra,
        ]

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = Path(self.directory) / "redis.log"
                text = log.read_text() if log.exists() else ""
                raise RuntimeError(f"redis-server exited at start:\n{text[-2000:]}")
            if self._answers():
                return self
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on port {self.port}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
                return reply.startswith(b"+PONG")  # not -LOADING
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown save, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


class ClusterSetup:
    """A Redis Cluster of ``primaries`` primaries with ``replicas`` replicas each; a low
    node timeout so that a failover takes seconds."""

    def __init__(self, primaries: int = 3, replicas: int = 1, *, node_timeout_ms: int = 1000,
                 appendonly: bool = True) -> None:
        if primaries < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one primary")
        self.primaries = primaries
        self.replicas = replicas
        self.nodes = [RedisServer(appendonly=appendonly, extra=[
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            # a replica takes over without waiting for a long data-age check
            "--cluster-replica-validity-factor", "0",
        ]) for _ in range(primaries * (1 + replicas))]

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming one node (the client finds the others)."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def start(self, timeout_s: float = 60.0) -> ClusterSetup:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
            if self.primaries < 3:  # redis-cli wants 3 primaries at least: by hand
                if self.replicas:
                    raise ValueError("replicas need 3 primaries or more here")
                width = 16384 / self.primaries
                for i, node in enumerate(self.nodes):
                    query(node.port, "CLUSTER", "ADDSLOTSRANGE", str(int(i * width)),
                           str(int((i + 1) * width) - 1))
                    if i:
                        query(self.nodes[0].port, "CLUSTER", "MEET", "127.0.0.1",
                               str(node.port))
            else:
                cli = shutil.which("redis-cli")
                if cli is None:
                    raise FileNotFoundError("redis-cli is not on PATH (it comes with redis)")
                subprocess.run([cli, "--cluster", "create", *addresses, "--cluster-replicas",
                                str(self.replicas), "--cluster-yes"],
                               check=True, capture_output=True, timeout=timeout_s)
            self.wait_ok(timeout_s)
        except BaseException:
            self.cleanup()
            raise
        return self

    def alive(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and they agree on the primaries."""
        def agreed() -> bool:
            if not all("cluster_state:ok" in str(query(n.port, "CLUSTER", "INFO"))
                       for n in self.alive()):
                return False
            return len({tuple(sorted(self.primary_ports(n))) for n in self.alive()}) == 1
        wait_until(agreed, time.monotonic() + timeout_s, "cluster_state:ok on every node")

    @staticmethod
    def primary_ports(node: RedisServer) -> list[int]:
        ports = []
        for line in str(query(node.port, "CLUSTER", "NODES")).splitlines():
            fields = line.split()
            if "master" in fields[2] and "fail" not in fields[2]:
                ports.append(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
        return ports

    def primary_for(self, key: str) -> RedisServer:
        """The node that is the primary of ``key``'s slot now (as a live node sees it)."""
        port = self.alive()[0].port
        slot = int(query(port, "CLUSTER", "KEYSLOT", key))
        for start, end, primary, *_ in query(port, "CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                return next(n for n in self.nodes if n.port == int(primary[1]))
        raise LookupError(f"no primary serves slot {slot}")

    def primary_nodes(self) -> list[RedisServer]:
        return [n for n in self.alive() if str(query(n.port, "ROLE")[0]) == "master"]

    def flushall(self) -> None:
        """FLUSHALL on every primary (a careless deploy script, cluster-wide)."""
        for node in self.primary_nodes():
            query(node.port, "FLUSHALL")

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

