"""aiojobs_redis.testing, the users' testing kit: run_until_idle against a real worker,
the fake job context, and the pytest plugin's fixtures (loaded through the package's
``pytest11`` entry point, as in a user's project: this module asks for no plugin but
pytester). Tests wait on results and conditions, never on fixed sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest

from aiojobs_redis import (
    EncodeError,
    ExponentialBackoff,
    FixedBackoff,
    JobState,
    Queue,
    WorkerContext,
    current_job,
    task,
)
from aiojobs_redis.testing import (
    FakeJobContext,
    IdleTimeout,
    RedisServer,
    call_task,
    job_context,
    run_until_idle,
)

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).parent / "kit_example"
TESTING_PAGE = Path(__file__).resolve().parents[1] / "docs" / "testing.md"


# ----------------------------------------------------------------- tasks

@task(name="kit.echo")
async def echo(value: Any) -> Any:
    return value


@task(name="kit.flaky", attempts=3, backoff=FixedBackoff(delay_s=3600))
async def flaky(word: str) -> str:
    """Fails its first two attempts; each retry waits an hour."""
    job = current_job()
    if job.attempt < 3:
        raise ConnectionError(f"attempt {job.attempt} failed")
    return f"{word} on attempt {job.attempt}"


@task(name="kit.broken", attempts=2, backoff=ExponentialBackoff(base_s=600))
async def broken() -> None:
    raise ValueError("always broken")


GATE = "gate"  # worker.state key of the event a stuck job waits for


@task(name="kit.stuck")
async def stuck() -> None:
    await current_job().worker.state[GATE].wait()


@task(name="kit.report")
async def report(steps: int) -> dict[str, Any]:
    job = current_job()
    for i in range(1, steps + 1):
        await job.progress({"done": i, "of": steps})
    job.worker.state["seen"] = job.worker.state.get("seen", 0) + 1
    return {"attempt": job.attempt, "of": job.max_attempts, "task": job.task, "id": job.id}


@task(name="kit.count_sync")
def count_sync(items: list[int]) -> int:
    """A sync task: runs in a thread, reports progress through anyio.from_thread."""
    assert threading.current_thread() is not threading.main_thread()
    anyio.from_thread.run(current_job().progress, len(items))
    return sum(items)


@task(name="kit.shape")
async def shape(pair: Any, **extra: Any) -> str:
    return f"{type(pair).__name__} {sorted(extra)}"


@task(name="kit.fan_out")
async def fan_out(n: int) -> int:
    for i in range(n):
        await current_job().queue.enqueue(echo, i)
    return n


# ------------------------------------------------------- run_until_idle

async def test_an_empty_queue_is_idle_at_once(ajr_queue: Queue) -> None:
    done = await run_until_idle(ajr_queue, echo, timeout=5)  # one task, or a list of them
    assert (done.completed, done.failed, done.attempts, done.delayed) == (0, 0, (), 0)


async def test_delayed_jobs_are_not_waited_out(ajr_queue: Queue) -> None:
    now = [await ajr_queue.enqueue(echo, i) for i in range(3)]
    later = await ajr_queue.enqueue(echo.options(delay_s=3600), "later")
    done = await run_until_idle(ajr_queue, [echo], timeout=5)
    assert (done.completed, done.failed, done.delayed) == (3, 0, 1)
    assert set(done.job_ids) == {job.id for job in now}
    assert done.elapsed_s < 5  # the timeout would have raised: the hour was not waited out
    assert await later.state() == JobState.DELAYED

    done = await run_until_idle(ajr_queue, [echo], include_delayed=True, timeout=5)
    assert (done.completed, done.promoted, done.delayed, done.job_ids) == (1, 1, 0, (later.id,))
    assert await later.result(timeout=0) == "later"


async def test_retries_and_their_backoff(ajr_queue: Queue) -> None:
    job = await ajr_queue.enqueue(flaky, "hello")
    done = await run_until_idle(ajr_queue, [flaky], timeout=5)
    # attempt 1 failed; the retry is an hour away: not run, not waited for
    assert (done.completed, done.failed, done.retried, done.delayed) == (0, 0, 1, 1)
    assert [(a.attempt, a.ok, a.will_retry) for a in done.attempts] == [(1, False, True)]
    assert "ConnectionError: attempt 1 failed" in done.attempts[0].error
    assert await job.state() == JobState.DELAYED

    done = await run_until_idle(ajr_queue, [flaky], include_delayed=True, timeout=5)
    assert [(a.attempt, a.ok) for a in done.attempts] == [(2, False), (3, True)]
    assert (done.completed, done.retried, done.promoted) == (1, 1, 2)
    assert await job.result(timeout=0) == "hello on attempt 3"


async def test_a_job_out_of_attempts_fails(ajr_queue: Queue) -> None:
    job = await ajr_queue.enqueue(broken)
    unknown = await ajr_queue.enqueue("kit.no_such_task")
    done = await run_until_idle(ajr_queue, [broken], include_delayed=True, timeout=5)
    assert (done.completed, done.failed, done.retried) == (0, 2, 1)
    info = await job.info()
    assert (info.state, info.attempts) == (JobState.FAILED, 2)
    assert "ValueError: always broken" in (info.error or "")
    assert (await unknown.info()).state == JobState.FAILED  # TaskNotFound: not retried


async def test_worker_hooks_fill_the_state(ajr_queue: Queue) -> None:
    state: dict[str, Any] = {}

    def on_startup(worker: WorkerContext) -> None:
        state["worker"] = worker.state  # the dict the handlers see

    jobs = [await ajr_queue.enqueue(report, 2) for _ in range(3)]
    done = await run_until_idle(ajr_queue, [report], on_startup=[on_startup], timeout=5)
    assert done.completed == 3
    assert state["worker"]["seen"] == 3
    info = await jobs[0].info()
    assert info.progress == {"done": 2, "of": 2}


async def test_a_stuck_job_times_out_naming_it(ajr_queue: Queue) -> None:
    gate = asyncio.Event()

    def on_startup(worker: WorkerContext) -> None:
        worker.state[GATE] = gate

    job = await ajr_queue.enqueue(stuck)
    with pytest.raises(IdleTimeout) as caught:
        await run_until_idle(ajr_queue, [stuck], on_startup=[on_startup], timeout=0.5)
    assert caught.value.pending == {"active": [job.id]}
    message = str(caught.value)
    assert job.id in message and "kit.stuck" in message and "1 active" in message
    assert await job.state() == JobState.WAITING  # the worker handed it back as it stopped

    gate.set()  # the same job, once it can finish, is idle again
    done = await run_until_idle(ajr_queue, [stuck], on_startup=[on_startup], timeout=5)
    assert (done.completed, done.job_ids) == (1, (job.id,))


async def test_a_paused_queue_times_out_saying_so(ajr_queue: Queue) -> None:
    await ajr_queue.pause()
    job = await ajr_queue.enqueue(echo, 1)
    with pytest.raises(IdleTimeout, match="paused") as caught:
        await run_until_idle(ajr_queue, [echo], timeout=0.3)
    assert caught.value.pending == {"waiting": [job.id]}


async def test_cancelling_the_call_stops_its_worker(ajr_queue: Queue) -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    @task(name="kit.blocks")
    async def blocks() -> None:
        entered.set()
        await gate.wait()

    job = await ajr_queue.enqueue(blocks)
    call = asyncio.create_task(run_until_idle(ajr_queue, [blocks], timeout=30))
    await asyncio.wait_for(entered.wait(), 5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(call, 10)
    assert await job.state() == JobState.WAITING  # handed back by the stopped worker
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("ajr-")]


async def test_a_cancellation_a_redis_call_swallows_still_stops_the_call(
        ajr_queue: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py sometimes returns a reply instead of raising when its caller is cancelled
    as the reply arrives (seen about once in 40 with ``client.eval``); the call went on
    until its timeout then. Here every look at the queue swallows the cancellation so:
    the call must stop all the same."""
    from aiojobs_redis.testing import idle

    look = idle._snapshot

    looking = asyncio.Event()

    async def swallowing(queue: Queue) -> Any:
        looking.set()
        with contextlib.suppress(asyncio.CancelledError):  # as redis-py, when its reply
            await asyncio.sleep(0.01)  # wins the race with the cancellation
        return await look(queue)

    monkeypatch.setattr(idle, "_snapshot", swallowing)
    gate = asyncio.Event()
    entered = asyncio.Event()

    @task(name="kit.blocks.swallowed")
    async def blocks() -> None:
        entered.set()
        await gate.wait()

    job = await ajr_queue.enqueue(blocks)
    call = asyncio.create_task(run_until_idle(ajr_queue, [blocks], timeout=30))
    await asyncio.wait_for(entered.wait(), 5)
    looking.clear()
    await asyncio.wait_for(looking.wait(), 5)  # the call is in a look at the queue
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(call, 10)
    assert await job.state() == JobState.WAITING


async def test_follow_up_jobs_run_in_the_same_call(ajr_queue: Queue) -> None:
    await ajr_queue.enqueue(fan_out, 4)
    done = await run_until_idle(ajr_queue, [fan_out, echo], timeout=5)
    assert done.completed == 5


# ------------------------------------------------------ fake job context

async def test_fake_context_attempt_state_and_progress() -> None:
    state: dict[str, Any] = {"db": "fake-db"}
    with job_context(task=report, id="j-1", attempt=2, worker_state=state) as ctx:
        assert current_job() is ctx
        result = await report.fn(3)
    assert result == {"attempt": 2, "of": 2, "task": "kit.report", "id": "j-1"}
    assert ctx.progress_values == [{"done": i, "of": 3} for i in (1, 2, 3)]
    assert state == {"db": "fake-db", "seen": 1}  # the handler's writes, in the same dict
    with pytest.raises(LookupError):  # reset afterwards
        current_job()


async def test_fake_context_nests_and_resets_after_an_error() -> None:
    async def fails_inside(inner: job_context) -> None:
        with inner:
            assert (current_job().attempt, current_job().max_attempts) == (3, 5)
            raise ValueError("boom")

    async with job_context(attempt=1) as outer:
        with pytest.raises(ValueError, match="boom"):
            await fails_inside(job_context(attempt=3, max_attempts=5))
        assert current_job() is outer
    with pytest.raises(LookupError):
        current_job()


async def test_call_task_without_a_context_makes_one() -> None:
    result = await call_task(report, 1)
    assert result == {"attempt": 1, "of": 1, "task": "kit.report", "id": "fake-job"}
    with pytest.raises(LookupError):
        current_job()


async def test_call_task_runs_a_sync_task_in_a_thread() -> None:
    with job_context() as ctx:
        assert await call_task(count_sync, [1, 2, 3]) == 6
    assert ctx.progress_values == [3]
    assert ctx.task == "kit.count_sync"  # filled in from the task


async def test_call_task_checks_what_a_worker_would() -> None:
    # arguments go through MessagePack as on a real enqueue: a tuple arrives as a list
    assert await call_task(shape, (1, 2), b=1, a=2) == "list ['a', 'b']"
    with pytest.raises(EncodeError):
        await call_task(echo, object())
    with pytest.raises(TypeError, match=r"kit\.echo"):
        await call_task(echo, 1, 2)
    with pytest.raises(EncodeError, match="cannot be encoded"):
        await call_task(shape, 1, bad=lambda: None)
    with job_context() as ctx, pytest.raises(TypeError, match="MessagePack"):
        await ctx.progress(object())
    assert ctx.progress_values == []


async def test_fake_context_headers_and_a_result_that_cannot_be_encoded() -> None:
    @task(name="kit.weird_result")
    async def weird_result() -> object:
        return current_job().headers.get("request-id"), object()

    with job_context(headers={"request-id": "r-1"}) as ctx:
        with pytest.raises(TypeError, match="MessagePack"):  # as a worker fails the job
            await call_task(weird_result)
    assert ctx.headers == {"request-id": "r-1"}


async def test_fake_context_queue() -> None:
    with job_context() as ctx:
        with pytest.raises(RuntimeError, match=r"job_context\(queue=\.\.\.\)"):
            await call_task(fan_out, 1)
    assert isinstance(ctx, FakeJobContext) and "no queue" in repr(ctx)


async def test_fake_context_with_a_queue_enqueues_for_real(ajr_queue: Queue) -> None:
    with job_context(queue=ajr_queue) as ctx:
        assert await call_task(fan_out, 2) == 2
    assert ctx.worker.queues == (ajr_queue,)
    assert (await ajr_queue.counts())[JobState.WAITING] == 2


# ------------------------------------------------------------ the plugin

async def test_plugin_fixtures_live_beside_the_suites_own(
        ajr_queue: Queue, ajr_redis_server: RedisServer, ajr_redis_url: str,
        queue: Queue, redis_server: RedisServer) -> None:
    """tests/conftest.py has redis_server and queue fixtures of its own: both sets work."""
    assert ajr_redis_url == ajr_redis_server.url != redis_server.url
    assert ajr_queue.name != queue.name
    assert ajr_queue.name.startswith("test_plugin_fixtures_live_beside")
    await ajr_queue.enqueue(echo, 1)
    await queue.enqueue(echo, 2)
    assert (await run_until_idle(ajr_queue, [echo])).completed == 1
    assert (await run_until_idle(queue, [echo])).completed == 1


def test_ajr_queue_is_obliterated_after_the_test(pytester: pytest.Pytester) -> None:
    """The fixture's teardown deletes every key of its queue, even one the test closed
    itself, and a test's queue is not the next one's."""
    pytester.makeini("[pytest]\nasyncio_mode = auto\n"
                     "asyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_left_behind="""
        import redis.asyncio

        from aiojobs_redis import JobOptions, Queue

        names = []

        async def test_leave_jobs_behind(ajr_queue: Queue) -> None:
            names.append(ajr_queue.name)
            await ajr_queue.enqueue("some.task", 1)
            await ajr_queue.enqueue("some.task", 2, options=JobOptions(delay_s=60))
            await ajr_queue.close()

        async def test_nothing_is_left(ajr_queue: Queue, ajr_redis_url: str) -> None:
            assert ajr_queue.name not in names
            client = redis.asyncio.Redis.from_url(ajr_redis_url)
            try:
                assert await client.dbsize() == 0
            finally:
                await client.aclose()
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly",
                                           timeout=60)
    result.assert_outcomes(passed=2)


def test_example_project_runs_with_the_entry_point_plugin(pytester: pytest.Pytester) -> None:
    """tests/kit_example: no conftest.py, the fixtures come from the installed plugin."""
    shutil.copy(EXAMPLE / "pytest.ini", pytester.path / "pytest.ini")
    package = pytester.mkpydir("kit_example")
    for name in ("__init__.py", "tasks.py"):
        shutil.copy(EXAMPLE / name, package / name)
    shutil.copy(EXAMPLE / "check_tasks.py", package / "test_tasks.py")
    assert not list(pytester.path.rglob("conftest.py"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=5)


def test_missing_redis_server_fails_clearly_and_only_where_used(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that needs no fixture of the kit starts nothing; one that does fails with
    how to get a redis-server."""
    monkeypatch.setenv("REDIS_SERVER", str(pytester.path / "no-such-redis-server"))
    pytester.makeini("[pytest]\nasyncio_mode = auto\n"
                     "asyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_mixed="""
        def test_no_redis_needed() -> None:
            assert True

        async def test_needs_redis(ajr_queue) -> None:
            raise AssertionError("not reached")
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*needs a redis-server: REDIS_SERVER=*no-such-redis-server*"
                                 " is neither an executable file nor a command on PATH;"
                                 " install Redis 7 or newer*apt-get install redis-server*"])


def test_the_examples_of_docs_testing_md_pass(pytester: pytest.Pytester) -> None:
    """Every ```python (and ```toml) block of docs/testing.md is a file of one project,
    named by its first line; together they are a test suite that passes. The FastAPI
    example needs fastapi, which this repository does not depend on."""
    page = TESTING_PAGE.read_text(encoding="utf-8")
    files = {}
    for body in re.findall(r"```(?:python|toml)\n(.*?)```", page, re.S):
        first = re.fullmatch(r"# (\S+)", body.splitlines()[0])
        assert first, f"a block of docs/testing.md does not start with its file name: {body!r}"
        files[first.group(1)] = body
    assert {"pyproject.toml", "tasks.py", "test_unit.py", "web.py", "test_web.py"} <= set(files)
    if importlib.util.find_spec("fastapi") is None:
        del files["web.py"], files["test_web.py"]
    for name, body in files.items():
        (pytester.path / name).write_text(body, encoding="utf-8")
    tests = sum(body.count("\nasync def test_") + body.count("\ndef test_")
                for name, body in files.items() if name.startswith("test_"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=tests)
