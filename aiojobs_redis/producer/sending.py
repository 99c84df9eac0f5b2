"""How an enqueue's rows reach Redis: natural batching of concurrent calls, the lean
call path (``scripts/direct.py``) and the producer's call memo (methods of
:class:`~aiojobs_redis.producer.queue.Queue`)."""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Any, Final

from .. import codec
from ..connection import AnyRedis
from ..errors import NotReplicated, wrap_redis_errors
from ..keys import QueueKeys
from ..options import JobOptions
from ..scripts import SCRIPTS, Batch
from ..scripts.direct import DirectLine
from .job_ids import check_job_id, new_job_id
from .task import TaskCall

_CHUNK: Final = 500  # jobs per add_jobs call in a bulk enqueue


class RowSending:
    """Sends add_jobs rows for a :class:`~aiojobs_redis.producer.queue.Queue`."""

    client: AnyRedis
    keys: QueueKeys
    name: str
    events_maxlen: int
    replicas: int
    defaults: JobOptions

    def _init_sending(self) -> None:
        # enqueues that arrive while one is on its way to Redis go together in the next
        # round trip (natural batching: a lone call is sent at once, never held back)
        self._sending = False
        self._sender: asyncio.Task[None] | None = None
        self._queued: list[tuple[list[list[Any]], tuple[str, ...],
                                 asyncio.Future[list[Any]]]] = []
        # one connection of the client's pool for the enqueue round trips, without
        # redis-py's per-call layers (a plain client, no replicas to wait for)
        self._line = (DirectLine(self.client)
                      if not self.replicas and DirectLine.suits(self.client) else None)
        # add_jobs keeps its reply under <call_prefix><producer>:<n> for the n-th call of
        # this producer's last round trip: a round trip sent again after a lost reply gets
        # the first replies (and adds nothing that has run and been deleted since)
        self._memo = f"{self.keys.call_prefix}{secrets.token_hex(6)}:"
        self._round_trips = 0

    if TYPE_CHECKING:  # Queue's own
        def batch(self) -> Batch: ...

        def check_replicated(self, batch: Batch, what: str,
                             job_ids: tuple[str, ...] = ()) -> None: ...

    async def _add_rows(self, rows: list[list[Any]], ids: tuple[str, ...]) -> list[Any]:
        """add_jobs for these rows; returns their statuses, in order.

        Natural batching: a call made while no other is on its way goes at once; calls made
        meanwhile (concurrent ``enqueue()`` of a web app's requests) wait for it and then
        go together, in one round trip (one add_jobs call per 500 jobs), sent by a task
        of their own so that the first caller is not held back. Each caller gets its own
        statuses, or the error of the round trip its jobs were in."""
        if self._sending:
            future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._queued.append((rows, ids, future))
            return await future
        self._sending = True
        try:
            statuses, batch = await self._send_rows(rows)
        finally:
            if self._queued:
                self._sender = asyncio.get_running_loop().create_task(self._send_queued())
            else:
                self._sending = False
        self.check_replicated(batch, "enqueue", ids)
        return statuses

    async def _send_queued(self) -> None:
        """Send what waited, all of it per round trip, until nothing waits."""
        try:
            while self._queued:
                waiting, self._queued = self._queued, []
                rows = [row for group, _, _ in waiting for row in group]
                try:
                    statuses, batch = await self._send_rows(rows)
                except BaseException as e:  # each caller gets the round trip's error
                    for _, _, future in waiting:
                        if future.done():
                            continue
                        if isinstance(e, asyncio.CancelledError):
                            future.cancel()
                        else:
                            future.set_exception(e)
                    if not isinstance(e, Exception):
                        raise
                    continue
                start = 0
                for group, group_ids, future in waiting:
                    mine = statuses[start:start + len(group)]
                    start += len(group)
                    if future.done():
                        continue
                    try:
                        self.check_replicated(batch, "enqueue", group_ids)
                    except NotReplicated as e:
                        future.set_exception(e)
                    else:
                        future.set_result(mine)
        finally:
            self._sending = False

    async def _send_rows(self, rows: list[list[Any]]) -> tuple[list[Any], Batch]:
        batch = self.batch()
        script = SCRIPTS["add_jobs"]
        keys = script.keys_of(self.keys)
        self._round_trips += 1
        call_id = str(self._round_trips)
        memo, head = self._memo, [self.keys.job_prefix, self.events_maxlen]
        tail = [self.keys.dedup_prefix, self.keys.group_prefix]
        with wrap_redis_errors(f"enqueue to queue {self.name!r}"):
            if self._line is not None and len(rows) <= _CHUNK:  # one call: the lean path
                return await self._line.call(
                    script, keys, [*head, codec.pack(rows), *tail, memo + "0", call_id]), batch
            for n, start in enumerate(range(0, len(rows), _CHUNK)):
                batch.add(script, keys, [*head, codec.pack(rows[start:start + _CHUNK]), *tail,
                                         f"{memo}{n}", call_id])
            results = await batch.execute(self.client)
        return [s for chunk in results for s in chunk], batch

    def _job_argv(self, call: TaskCall[Any], out: list[list[Any]],
                  headers: dict[str, str] | None) -> str:
        if call.task is not None:
            call.task.check_arguments(call.args, call.kwargs)
        opts = call.options.merged_over(self.defaults)
        # the options' types and ranges were checked when the JobOptions was made
        job_id = (new_job_id() if opts.job_id is None
                  else check_job_id(opts.job_id, enqueue=True))
        payload = codec.encode_args(call.name, call.args, call.kwargs, headers)
        delay_ms = -1 if opts.delay_s is None else int(opts.delay_s * 1000)
        due_at_ms = -1 if opts.run_at is None else int(opts.run_at.timestamp() * 1000)
        stored = JobOptions(backoff=opts.backoff, timeout_s=opts.timeout_s,
                            retention=opts.retention)
        row = [job_id, call.name, payload, codec.encode_options(stored), opts.priority or 0,
               opts.attempts or 1, delay_ms, due_at_ms]
        if opts.dedup_key is not None or opts.expires_s is not None or opts.group is not None:
            extras: dict[str, Any] = {}
            if opts.dedup_key is not None:
                assert opts.dedup_ttl_s is not None  # JobOptions checks it
                extras["dedup"] = opts.dedup_key
                extras["ttl_ms"] = max(1, int(opts.dedup_ttl_s * 1000))
                if opts.debounce:
                    extras["debounce"] = 1
            if opts.expires_s is not None:
                extras["expires_ms"] = max(1, int(opts.expires_s * 1000))
            if opts.group is not None:
                extras["group"] = opts.group
            row.append(extras)
        out.append(row)
        return job_id

