"""A lean call path for the one script call a producer's enqueue needs.

``client.evalsha()`` spends about 100 µs per call in redis-py's layers on a 2-core VM
(command lookup, argument encoding in Python, the pool's checkout, a health check, the
retry wrapper, stream reads under timeouts) while the socket round trip costs about 30 µs.
A :class:`DirectLine` keeps one connection of the client's own pool checked out and talks
on it directly: the command packed in C by hiredis, written on the connection's stream,
the reply parsed by a hiredis reader of its own. redis-py still makes the connection (TLS,
AUTH, SELECT, Sentinel's master, keepalive), and its retry policy decides what a lost
connection costs; the caller still passes an ordinary ``redis.asyncio`` client.

Only one call is on a line at a time (the producer's enqueues take turns by themselves,
see ``Queue._add_rows``); a call made while the line is busy goes through the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError

from . import Script, load_all

try:
    from redis._parsers.base import BaseParser
    _parse_error: Any = BaseParser.parse_error
except ImportError:  # pragma: no cover - redis-py moved it: plain errors
    _parse_error = ResponseError

_READ_SIZE = 65536
BUSY: Any = object()  # DirectLine.command's answer when the line is taken


class DirectLine:
    """Script calls on one connection of a plain client's pool (see the module's text)."""

    __slots__ = ("_busy", "_client", "_conn", "_reader", "_stream", "use_hiredis")

    def __init__(self, client: Any) -> None:
        self._client = client
        self._conn: AbstractConnection | None = None
        self._busy = False
        self._reader: Any = None  # hiredis.Reader for the current socket
        self._stream: asyncio.StreamReader | None = None
        #: pack and parse with hiredis (False: through the connection's own methods, as
        #: for a connection class that has no stream of its own)
        self.use_hiredis = True

    @staticmethod
    def suits(client: Any) -> bool:
        """True for a plain ``redis.asyncio.Redis`` on a pool (not a cluster client, not a
        single-connection client). RESP2 or RESP3 (redis-py 8's default): hiredis reads
        both, and the replies of scripts and of BZPOPMIN are the ones redis-py gives."""
        if type(client) is not Redis or client.single_connection_client:
            return False
        kwargs = client.connection_pool.connection_kwargs
        return kwargs.get("protocol") in (None, 2, "2", 3, "3")

    async def call(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA ``script``; NOSCRIPT loads every script and sends it again."""
        if self._busy:
            return await script(self._client, keys, args)
        try:
            [reply] = await self.send([(script, keys, args)])
            if isinstance(reply, NoScriptError):
                await load_all(self._client)
                [reply] = await self.send([(script, keys, args)])
        finally:
            self._busy = False
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def command(self, *args: Any) -> Any:
        """One Redis command (a blocking one, such as BZPOPMIN, included: a wait cut short
        closes the connection); :data:`BUSY` when the line is taken: use the client."""
        if self._busy:
            return BUSY
        self._busy = True
        try:
            [reply] = await self._send_commands([args])
        finally:
            self._busy = False
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def send(self, calls: Sequence[tuple[Script, list[str], list[Any]]]) -> list[Any]:
        """EVALSHA each call, all in one round trip; the replies in order, an error reply
        as its exception (not raised: the caller settles NOSCRIPT and the rest). Leaves
        the line busy: the caller sets ``_busy`` back (see :meth:`call`) or uses
        :meth:`execute`."""
        self._busy = True
        return await self._send_commands([("EVALSHA", script.sha, len(keys), *keys, *args)
                                          for script, keys, args in calls])

    async def _send_commands(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        conn = self._conn
        if conn is None:
            conn = self._conn = cast(AbstractConnection,
                                     await self._client.connection_pool.get_connection())
        packed = (b"".join(hiredis.pack_command(c) for c in commands) if self.use_hiredis
                  else None)
        replies: list[Any] = await conn.retry.call_with_retry(
            lambda: self._attempt(conn, commands, packed), lambda _error: self._drop(conn))
        return replies

    async def execute(self, calls: Sequence[tuple[Script, list[str], list[Any]]]
                      ) -> list[Any] | None:
        """:meth:`send` when the line is free (None when it is busy: use the client)."""
        if self._busy:
            return None
        try:
            return await self.send(calls)
        finally:
            self._busy = False

    async def close(self) -> None:
        """Give the connection back to the client's pool."""
        conn, self._conn = self._conn, None
        if conn is not None and not self._busy:
            await self._client.connection_pool.release(conn)

    async def _attempt(self, conn: AbstractConnection, commands: list[tuple[Any, ...]],
                       packed: bytes | None) -> list[Any]:
        if not conn.is_connected:
            await conn.connect()  # type: ignore[no-untyped-call]
        replies: list[Any] = []
        try:
            stream = getattr(conn, "_reader", None)
            writer = getattr(conn, "_writer", None)
            if packed is None or writer is None or not isinstance(stream, asyncio.StreamReader):
                # a connection class of another make: its own methods
                await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
                for _ in commands:
                    try:
                        replies.append(await conn.read_response())
                    except ResponseError as e:  # read whole: the next reply follows
                        replies.append(e)
                return replies
            reader = self._reader
            if reader is None or stream is not self._stream:  # a new socket: a new reader
                reader = self._reader = hiredis.Reader(protocolError=InvalidResponse,
                                                       replyError=_parse_error)
                self._stream = stream
            writer.write(packed)
            await writer.drain()
            while len(replies) < len(commands):
                reply = reader.gets()
                if reply is False:
                    data = await stream.read(_READ_SIZE)
                    if not data:
                        raise RedisConnectionError("Connection closed by server.")
                    reader.feed(data)
                else:
                    replies.append(reply)
        except OSError as e:  # a reset socket: as redis-py says it, so that it is retried
            await self._drop(conn)
            raise RedisConnectionError(f"Error while talking to Redis: {e}") from e
        except BaseException:
            # a call cut short (an error, a cancellation) may leave its reply in the socket:
            # the next call must not read it, so the connection is closed
            await self._drop(conn)
            raise
        return replies

    async def _drop(self, conn: AbstractConnection) -> None:
        self._reader = None
        self._stream = None
        await conn.disconnect(nowait=True)

