"""The pytest plugin of aiojobs_redis: fixtures to test your own tasks.

pytest loads it by itself once aiojobs_redis is installed (entry point ``pytest11``,
name ``aiojobs_redis``; ``-p no:aiojobs_redis`` turns it off). Nothing starts until a
test asks for a fixture:

- ``ajr_redis_server`` (session): a throwaway redis-server of the kit's own, on a free
  loopback port in a temporary directory; ``$REDIS_SERVER`` names the binary (default:
  ``redis-server`` on ``PATH``);
- ``ajr_redis_url`` (session): its ``redis://127.0.0.1:PORT/0`` URL;
- ``ajr_queue`` (function, needs pytest-asyncio): a :class:`~aiojobs_redis.Queue` of its
  own under a fresh name, closed and obliterated after the test.

The names start with ``ajr_`` so that they never clash with a project's own ``redis``
or ``queue`` fixtures.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .._redis_server import RedisServer
    from ..producer.queue import Queue

_INSTALL = (
    "install Redis 7 or newer (Debian/Ubuntu: apt-get install redis-server; macOS: brew"
    " install redis) or set REDIS_SERVER to the path of a redis-server binary"
)


@pytest.fixture(scope="session")
def ajr_redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test session's own (aiojobs_redis.testing), on a free
    loopback port in a temporary directory; stopped and removed at the end of the session.
    ``$REDIS_SERVER`` names the binary (default: redis-server on PATH)."""
    from .._redis_server import RedisServer

    binary = os.environ.get("REDIS_SERVER") or "redis-server"
    try:
        server = RedisServer(binary=binary)
    except FileNotFoundError:
        where = (f"REDIS_SERVER={binary!r} is neither an executable file nor a command on"
                 " PATH"
                 if os.environ.get("REDIS_SERVER") else "redis-server is not on PATH")
        pytest.fail(f"aiojobs_redis.testing needs a redis-server: {where}; {_INSTALL}.",
                    pytrace=False)
    try:
        server.start()
    except (OSError, RuntimeError, TimeoutError) as e:
        server.cleanup()
        pytest.fail(f"aiojobs_redis.testing could not start {server.binary}: {e}",
                    pytrace=False)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def ajr_redis_url(ajr_redis_server: RedisServer) -> str:
    """The URL of ``ajr_redis_server`` (``redis://127.0.0.1:PORT/0``)."""
    return ajr_redis_server.url


def _queue_name(request: pytest.FixtureRequest) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60].strip("-._")
    return f"{base or 'test'}-{secrets.token_hex(4)}"


async def _ajr_queue(request: pytest.FixtureRequest,
                     ajr_redis_url: str) -> AsyncIterator[Queue]:
    """A :class:`~aiojobs_redis.Queue` of this test's own on ``ajr_redis_server`` (a fresh
    name from the test's); closed and obliterated (every key of it deleted) afterwards."""
    from ..producer.queue import Queue

    queue = Queue.from_url(ajr_redis_url, name=_queue_name(request))
    try:
        yield queue
    finally:
        await queue.close()
        # a connection of its own: the test may have closed the queue, or broken it
        async with Queue.from_url(ajr_redis_url, name=queue.name) as cleaner:
            await cleaner.obliterate(force=True)


def _no_pytest_asyncio() -> None:
    """Stands for ``ajr_queue`` when pytest-asyncio is not installed."""
    pytest.fail("the ajr_queue fixture of aiojobs_redis.testing is async: install"
                " pytest-asyncio (pip install pytest-asyncio), or build a Queue from"
                " ajr_redis_url yourself", pytrace=False)


ajr_queue: Any
try:
    import pytest_asyncio
except ImportError:  # the plugin must not break a pytest run without it
    ajr_queue = pytest.fixture(_no_pytest_asyncio, name="ajr_queue")
else:
    ajr_queue = pytest_asyncio.fixture(_ajr_queue, name="ajr_queue")
