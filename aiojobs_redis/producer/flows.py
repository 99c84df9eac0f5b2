"""Flows: jobs that wait for other jobs (chains, fan-out/fan-in, DAGs).

A :class:`Flow` is built in memory, step by step, each step naming the steps (or existing
jobs of the same queue) it waits for; :meth:`Queue.enqueue_flow` adds it in order, in
chunks of bounded size (``add_flow.lua``). A job that waits is *blocked* until the last
job it waits for has finished; the script that finishes a job releases its dependents
in the same atomic step (``settle`` in ``scripts/lib/jobs.lua``), each edge once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

from .. import codec
from ..errors import ConfigurationError, wrap_redis_errors
from ..keys import queue_tag
from ..options import JobOptions
from ..scripts import SCRIPTS
from .headers import HEADER_SOURCES, collect_headers
from .job import Dependency, Job
from .job_ids import check_job_id, new_job_id
from .task import TaskCall

if TYPE_CHECKING:
    from .queue import Queue

#: what a job does when a job it waits for fails, is cancelled, expires or is removed
OnFailure = Literal["fail", "cancel", "continue", "ignore"]
_POLICY: Final[dict[str, str]] = {"fail": "f", "cancel": "d", "continue": "c", "ignore": "i"}
#: how a step receives the results of the jobs it waits for, as its first argument
Feed = Literal["previous", "all"]
FEED_HEADER: Final = "ajr-feed"
MAX_EDGES: Final = 10_000  # jobs one job may wait for, and jobs that may wait for one job
_ROWS_PER_CALL: Final = 500
_EDGES_PER_CALL: Final = 20_000


class Edge(NamedTuple):
    """One job of a flow waiting for another: the other's id, the policy letter, and the
    other's queue (None: the queue the flow is enqueued to)."""

    job_id: str
    policy: str
    queue: Queue | None


class Step:
    """One job of a :class:`Flow`; its id is known before the flow is enqueued."""

    __slots__ = ("after", "call", "dependents", "feed", "job_id", "queue")

    def __init__(self, call: TaskCall[Any], job_id: str, after: list[Edge],
                 feed: Feed | None, queue: Queue | None) -> None:
        self.call = call
        self.job_id = job_id
        self.after = after  # the jobs it waits for, in the order given
        self.feed = feed
        #: the queue its job goes to (None: the one the flow is enqueued to)
        self.queue = queue
        self.dependents: list[Edge] = []  # steps of the flow waiting for this one

    def __repr__(self) -> str:
        return f"<Step {self.call.name} {self.job_id}>"


class Flow:
    """Jobs that wait for other jobs, built step by step and enqueued at once with
    :meth:`Queue.enqueue_flow`. A step comes after the steps it waits for::

        flow = Flow()
        page = flow.add(fetch.call(url))
        words = flow.add(count_words.fed(), after=[page], feed="previous")
        links = flow.add(find_links.fed(), after=[page], feed="previous")
        flow.add(report.call(), after=[words, (links, "continue")], feed="all")
        jobs = await queue.enqueue_flow(flow)

    ``after``: steps of this flow, or ids (or :class:`Job` handles) of jobs already in the
    same queue; an entry may be a pair ``(dependency, on_failure)`` to set that edge's
    policy. ``on_failure`` (for the other entries): what this job does when a job it
    waits for does not complete (fails for good, is cancelled, expires or is removed):
    ``"fail"`` (the default: it fails too, and so do the jobs waiting for it),
    ``"cancel"`` (it is cancelled), ``"continue"`` (it runs, the failure recorded in
    its dependencies) or ``"ignore"`` (it runs as if that edge were not there).
    ``feed``: ``"previous"`` passes the result of the one job it waits for as the first
    argument, ``"all"`` a list of the results of all of them, in ``after`` order (None for
    one that did not complete, left out when ignored).
    """

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self._by_id: dict[str, Step] = {}

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, call: TaskCall[Any], *, after: Iterable[Any] = (),
            on_failure: OnFailure = "fail", feed: Feed | None = None,
            queue: Queue | None = None) -> Step:
        """Add one job that runs once every job in ``after`` has finished. ``queue``: the
        queue its job goes to, when not the one the flow is enqueued to (a queue of the
        same tag: ``"<tag>:<name>"`` names, see :meth:`Queue.enqueue_flow`)."""
        if not isinstance(call, TaskCall):
            raise ConfigurationError(f"Flow.add needs a TaskCall (task.call(...)), not {call!r}")
        opts = call.options
        if opts.dedup_key is not None or opts.group is not None or opts.expires_s is not None:
            raise ConfigurationError("a flow's jobs cannot use dedup_key, group or expires_s")
        default = policy_letter(on_failure)
        edges: list[Edge] = []
        for entry in after:
            target, policy = entry, default
            if isinstance(entry, tuple):
                if len(entry) != 2:
                    raise ConfigurationError(f"an after entry pair is (dependency, on_failure),"
                                             f" not {entry!r}")
                target, policy = entry[0], policy_letter(entry[1])
            dep_id, dep_queue = _dependency(target, self, queue)
            edges.append(Edge(dep_id, policy, dep_queue))
        if len({e.job_id for e in edges}) != len(edges):
            raise ConfigurationError("a step lists the same dependency twice")
        if len(edges) > MAX_EDGES:
            raise ConfigurationError(f"a job can wait for at most {MAX_EDGES:,} jobs")
        if feed is not None and feed not in ("previous", "all"):
            raise ConfigurationError(f"feed must be 'previous', 'all' or None, not {feed!r}")
        if feed == "previous" and len(edges) != 1:
            raise ConfigurationError("feed='previous' needs exactly one job in after")
        if feed is not None and call.task is not None:  # the results come first
            call.task.check_arguments((None, *call.args), call.kwargs)
        job_id = (new_job_id() if opts.job_id is None
                  else check_job_id(opts.job_id, enqueue=True))
        if job_id in self._by_id:
            raise ConfigurationError(f"job id {job_id!r} is twice in the flow")
        step = Step(call, job_id, edges, feed, queue)
        for edge in edges:
            before = self._by_id.get(edge.job_id)
            if before is not None and before.queue is edge.queue:
                if len(before.dependents) >= MAX_EDGES:
                    raise ConfigurationError(f"at most {MAX_EDGES:,} jobs can wait for one job")
                before.dependents.append(Edge(job_id, edge.policy, queue))
        self.steps.append(step)
        self._by_id[job_id] = step
        return step


def policy_letter(on_failure: object) -> str:
    """The edge policy letter the scripts read (f, d, c, i) of an ``on_failure``."""
    policy = _POLICY.get(on_failure) if isinstance(on_failure, str) else None
    if policy is None:
        raise ConfigurationError(f"on_failure must be one of {sorted(_POLICY)}, not"
                                 f" {on_failure!r}")
    return policy


def _dependency(target: object, flow: Flow, queue: Queue | None) -> tuple[str, Any]:
    """(job id, queue) of an ``after`` entry: a step of the flow, a job id (in the same
    queue as the step that waits) or a Job handle (in its queue)."""
    if isinstance(target, Step):
        if flow._by_id.get(target.job_id) is not target:
            raise ConfigurationError(f"{target!r} is not a step of this flow (added before)")
        return target.job_id, target.queue
    if isinstance(target, str):
        return check_job_id(target), queue
    if isinstance(target, Job):
        return check_job_id(target.id), target.queue
    raise ConfigurationError(f"after takes steps, job ids or jobs, not {target!r}")


def chain(*calls: TaskCall[Any], on_failure: OnFailure = "fail",
          feed: bool = True) -> Flow:
    """Each job after the one before; with ``feed`` each receives the previous one's
    result as its first argument."""
    flow = Flow()
    previous: Step | None = None
    for call in calls:
        after = [] if previous is None else [previous]
        previous = flow.add(call, after=after, on_failure=on_failure,
                            feed="previous" if feed and after else None)
    return flow


def group(*calls: TaskCall[Any]) -> Flow:
    """Jobs that wait for nothing: a flow to add more steps to (or :func:`chord`)."""
    flow = Flow()
    for call in calls:
        flow.add(call)
    return flow


def chord(calls: Iterable[TaskCall[Any]], callback: TaskCall[Any], *,
          on_failure: OnFailure = "fail", feed: bool = True) -> Flow:
    """``calls`` run side by side (fan-out); ``callback`` runs once all of them have
    finished (fan-in), with the list of their results as its first argument."""
    flow = group(*calls)
    flow.add(callback, after=list(flow.steps), on_failure=on_failure,
             feed="all" if feed else None)
    return flow


def fed_results(feed: str, deps: list[Dependency]) -> Any:
    """What a step with ``feed`` receives as its first argument: the one dependency's
    result ("previous"), or the list of them ("all"; None for one that did not complete,
    left out when ignored)."""
    values = [d.result for d in deps if d.state != "ignored"]
    if feed == "previous":
        return values[0] if values else None
    return values


def _queues_of(queue: Queue, flow: Flow) -> dict[str, Queue]:
    """Every queue the flow touches, by name; refused unless they share one hash tag."""
    queues: dict[str, Queue] = {queue.name: queue}
    for step in flow.steps:
        for q in (step.queue, *(e.queue for e in step.after)):
            if q is not None:
                if not hasattr(q, "keys"):
                    raise ConfigurationError(f"a flow needs Queue objects, not {q!r}")
                queues.setdefault(q.name, q)
    tags = {queue_tag(name) for name in queues}
    if len(tags) > 1:
        raise ConfigurationError(
            f"a flow cannot span queues of different hash tags ({', '.join(sorted(queues))}):"
            " its jobs must live in one Redis Cluster slot. Name queues that belong"
            " together '<tag>:<name>' with the same tag, e.g. 'crawl:fetch', 'crawl:parse'")
    return queues


def _edge_row(edge: Edge, own: Queue, target: Queue) -> list[Any]:
    """An edge as add_flow reads it: [id, policy(, the other queue's key prefix)]."""
    other = edge.queue or target
    if other.name == own.name:
        return [edge.job_id, edge.policy]
    return [edge.job_id, edge.policy, other.keys.base]


def flow_rows(queue: Queue, flow: Flow,
              headers: dict[str, str] | None) -> list[tuple[Queue, list[Any]]]:
    """The add_flow rows of a flow, in step order, each with the queue it goes to."""
    rows: list[tuple[Queue, list[Any]]] = []
    for step in flow.steps:
        own = step.queue or queue
        step_headers = headers
        if step.feed is not None:
            step_headers = {**(headers or {}), FEED_HEADER: step.feed}
        call = step.call
        # the id the step was given when added; a fed step's arguments were checked then
        call = TaskCall(call.name, call.args, call.kwargs,
                        JobOptions(job_id=step.job_id).merged_over(call.options),
                        None if step.feed is not None else call.task)
        one: list[list[Any]] = []
        own._job_argv(call, one, step_headers)
        one[0] += [[_edge_row(e, own, queue) for e in step.after],
                   [_edge_row(e, own, queue) for e in step.dependents]]
        rows.append((own, one[0]))
    return rows


def chunks(rows: Sequence[tuple[Queue, list[Any]]]) -> list[tuple[Queue, bytes]]:
    """add_flow calls: rows in order, one queue per call, at most _ROWS_PER_CALL rows and
    about _EDGES_PER_CALL edges per call (a job with 10,000 edges goes in a call of its
    own)."""
    out: list[tuple[Queue, bytes]] = []
    start, edges = 0, 0
    for i, (q, row) in enumerate(rows):
        n = len(row[8]) + len(row[9])
        if i > start and (i - start >= _ROWS_PER_CALL or edges + n > _EDGES_PER_CALL
                          or q is not rows[start][0]):
            out.append((rows[start][0], codec.pack([r for _, r in rows[start:i]])))
            start, edges = i, 0
        edges += n
    if start < len(rows):
        out.append((rows[start][0], codec.pack([r for _, r in rows[start:]])))
    return out


async def enqueue_flow(queue: Queue, flow: Flow) -> list[Job[Any]]:
    """See :meth:`Queue.enqueue_flow`."""
    if not isinstance(flow, Flow):
        raise ConfigurationError(f"enqueue_flow needs a Flow, not {flow!r}")
    if not flow.steps:
        return []
    _queues_of(queue, flow)
    rows = flow_rows(queue, flow, collect_headers() if HEADER_SOURCES else None)
    script = SCRIPTS["add_flow"]
    batch = queue.batch()  # one slot: every call goes to the same node, in order
    for q, packed in chunks(rows):
        batch.add(script, script.keys_of(q.keys), [q.keys.job_prefix, q.events_maxlen, packed])
    with wrap_redis_errors(f"enqueue a flow to queue {queue.name!r}"):
        results = await batch.execute(queue.client)
    ids = [step.job_id for step in flow.steps]
    queue.check_replicated(batch, "enqueue a flow", tuple(ids))
    statuses = [int(s) for chunk in results for s in chunk]
    return [Job(step.queue or queue, step.job_id, existed=status == 0)
            for step, status in zip(flow.steps, statuses, strict=True)]
