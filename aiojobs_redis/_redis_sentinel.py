"""A throwaway Sentinel setup: a master, its replicas and Sentinels monitoring them.

:class:`SentinelSetup` starts them (``redis-server <conf> --sentinel`` for each Sentinel),
all on free loopback ports in temporary directories, as :class:`RedisServer` processes of
our own; :class:`SentinelServer` is one Sentinel. Used by the test suite
(``tests/test_sentinel.py``); never touches a shared instance.
"""

from __future__ import annotations

import time
from pathlib import Path

from ._redis_server import RedisServer
from ._redis_wire import query, wait_until


class SentinelServer(RedisServer):
    """A redis-server in Sentinel mode monitoring one master.

    Sentinel rewrites its config file as it learns (replicas, other Sentinels, a new
    master), so the file lives in the server's own directory and survives a restart."""

    def __init__(self, *, master_port: int, service: str = "mymaster", quorum: int = 1,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 3000,
                 port: int | None = None, directory: str | None = None,
                 binary: str = "redis-server") -> None:
        super().__init__(port=port, directory=directory, binary=binary)
        self.service = service
        self.config = Path(self.directory) / "sentinel.conf"
        if not self.config.exists():
            self.config.write_text("\n".join([
                f"port {self.port}",
                "bind 127.0.0.1",
                f"dir {self.directory}",
                f"logfile {Path(self.directory) / 'redis.log'}",
                "daemonize no",
                f"sentinel monitor {service} 127.0.0.1 {master_port} {quorum}",
                f"sentinel down-after-milliseconds {service} {down_after_ms}",
                f"sentinel failover-timeout {service} {failover_timeout_ms}",
                f"sentinel parallel-syncs {service} 1",
                "",
            ]))

    def command(self) -> list[str]:
        return [self.binary, str(self.config), "--sentinel", *self.extra]


class SentinelSetup:
    """A master, ``replicas`` replicas (``--replicaof``) and ``sentinels`` Sentinels
    monitoring them with ``quorum``, each a process of our own.

    ``start()`` returns once the replicas are in sync and every Sentinel knows every
    replica (and the other Sentinels), that is once a failover can happen. ``cleanup()``
    stops the Sentinels first (no failover during teardown), then the data nodes."""

    def __init__(self, *, service: str = "mymaster", replicas: int = 1, sentinels: int = 1,
                 quorum: int = 1, down_after_ms: int = 1000, failover_timeout_ms: int = 3000,
                 appendonly: bool = False) -> None:
        self.service = service
        # a full sync starts at once instead of after the default 5 s wait for more replicas
        fast_sync = ["--repl-diskless-sync-delay", "0"]
        self.master = RedisServer(appendonly=appendonly, extra=fast_sync)
        self.replicas = [
            RedisServer(appendonly=appendonly,
                        extra=[*fast_sync, "--replicaof", "127.0.0.1", str(self.master.port)])
            for _ in range(replicas)
        ]
        self.sentinels = [
            SentinelServer(master_port=self.master.port, service=service, quorum=quorum,
                           down_after_ms=down_after_ms, failover_timeout_ms=failover_timeout_ms)
            for _ in range(sentinels)
        ]

    @property
    def data_nodes(self) -> list[RedisServer]:
        return [self.master, *self.replicas]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinel_addresses)
        return f"redis+sentinel://{hosts}/{self.service}/{db}"

    def start(self, timeout_s: float = 20.0) -> SentinelSetup:
        try:
            for node in self.data_nodes:
                node.start()
            deadline = time.monotonic() + timeout_s
            for replica in self.replicas:
                wait_until(lambda r=replica: query(r.port, "INFO", "replication")
                      .get("master_link_status") == "up", deadline, "a replica to sync")
            for sentinel in self.sentinels:
                sentinel.start()
            for sentinel in self.sentinels:
                wait_until(lambda s=sentinel: self._knows_everyone(s), deadline,
                      "the Sentinels to discover the replicas and each other")
        except BaseException:
            self.cleanup()
            raise
        return self

    def _knows_everyone(self, sentinel: SentinelServer) -> bool:
        master = query(sentinel.port, "SENTINEL", "MASTER", self.service)
        replicas = query(sentinel.port, "SENTINEL", "REPLICAS", self.service)
        ok = [r for r in replicas if "s_down" not in str(r.get("flags", ""))
              and r.get("master-link-status") == "ok"]
        return (len(ok) >= len(self.replicas)
                and int(master.get("num-other-sentinels", 0)) >= len(self.sentinels) - 1)

    def master_address(self) -> tuple[str, int]:
        """The master's address according to the first Sentinel that answers."""
        for sentinel in self.sentinels:
            try:
                host, port = query(sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                    self.service)
            except OSError:
                continue
            return str(host), int(port)
        raise RuntimeError("no Sentinel answered")

    def node_at(self, port: int) -> RedisServer:
        return next(n for n in self.data_nodes if n.port == port)

    def cleanup(self) -> None:
        for server in [*self.sentinels, *self.replicas, self.master]:
            server.cleanup()

    def __enter__(self) -> SentinelSetup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
