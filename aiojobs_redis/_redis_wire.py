"""Talk to a throwaway redis-server without a client library: one command over a fresh
socket (:func:`query`, RESP replies decoded to str, INFO and Sentinel replies to dicts),
and :func:`wait_until` a condition on the servers holds. What ``_redis_server`` and
``_redis_sentinel`` use to set up and watch their processes; no dependency.
"""

from __future__ import annotations

import socket
import time
from typing import Any


def wait_until(predicate: Any, deadline: float, what: str) -> None:
    """Until ``predicate()`` holds (an OSError, a server not answering yet, counts as not
    yet); TimeoutError naming ``what`` once ``deadline`` (``time.monotonic()``) passed."""
    while True:
        try:
            if predicate():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def query(port: int, *command: str) -> Any:
    """One command over a fresh socket (no client library: this module has no dependency).

    Replies are decoded to str; INFO becomes a dict, and so does a flat list of field/value
    pairs in a list (SENTINEL MASTER, SENTINEL REPLICAS)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
        payload = f"*{len(command)}\r\n" + "".join(
            f"${len(part.encode())}\r\n{part}\r\n" for part in command)
        s.sendall(payload.encode())
        reply = _read_reply(s.makefile("rb"))
    if command[0].upper() == "INFO":
        return dict(line.split(":", 1) for line in str(reply).splitlines() if ":" in line)
    if command[:2] == ("SENTINEL", "MASTER"):
        return _pairs(reply)
    if command[:2] == ("SENTINEL", "REPLICAS"):
        return [_pairs(r) for r in reply]
    return reply


def _pairs(flat: list[Any]) -> dict[str, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _read_reply(f: Any) -> Any:
    line: bytes = f.readline()
    if not line:
        raise ConnectionError("connection closed")
    kind, rest = line[:1], line[1:-2].decode()
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RuntimeError(rest)
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2].decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise RuntimeError(f"unexpected reply {line!r}")
