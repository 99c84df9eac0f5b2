"""The front door and the producer: names, misuse errors, enqueue shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

import aiojobs_redis
from aiojobs_redis import (
    ConfigurationError,
    EncodeError,
    InvalidJobId,
    InvalidQueueName,
    JobNotFound,
    JobOptions,
    JobState,
    Queue,
    RedisUnavailable,
    Retention,
    TaskCall,
    queue_slot,
    task,
)
from aiojobs_redis._redis_server import free_port


@task(name="greet")
async def greet(name: str, *, punctuation: str = "!") -> str:
    return f"hello {name}{punctuation}"


def test_all_attributes() -> None:
    assert isinstance(aiojobs_redis.__all__, tuple)
    assert list(aiojobs_redis.__all__) == sorted(aiojobs_redis.__all__)
    for name in aiojobs_redis.__all__:
        assert hasattr(aiojobs_redis, name), name
    public = {n for n in dir(aiojobs_redis) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(aiojobs_redis, n)).__name__ == "module"}
    assert public - modules - {"logging"} <= set(aiojobs_redis.__all__)


def test_task_name_defaults_to_qualified_name() -> None:
    @task
    async def local() -> None: ...

    assert local.name == f"{__name__}.test_task_name_defaults_to_qualified_name.<locals>.local"
    assert greet.name == "greet"


@pytest.mark.parametrize("name", ["", "a b", "x{y}", "q:", ":q", "a:b:c", "a:-b", "-lead",
                                  "é", "x" * 101])
def test_invalid_queue_names(client: aioredis.Redis, name: str) -> None:
    with pytest.raises(InvalidQueueName):
        Queue(client, name=name)


def test_a_tagged_queue_shares_its_tags_slot(client: aioredis.Redis) -> None:
    tagged, plain = Queue(client, name="crawl:fetch"), Queue(client, name="crawl")
    assert tagged.keys.wait == "ajr:{crawl}/fetch:wait" and plain.keys.wait == "ajr:{crawl}:wait"
    assert queue_slot("crawl:fetch") == queue_slot("crawl:parse") == queue_slot("crawl")


async def test_decode_responses_client_is_refused(redis_url: str) -> None:
    c = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(ConfigurationError, match="decode_responses"):
            Queue(c, name="q")
    finally:
        await c.aclose()


def test_options_are_keyword_only_and_validated() -> None:
    with pytest.raises(TypeError):
        JobOptions("id")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        JobOptions(delay=5)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError):
        JobOptions(priority=5000)
    with pytest.raises(ConfigurationError):
        JobOptions(attempts=0)
    with pytest.raises(ConfigurationError):
        JobOptions(delay_s=1, run_at=datetime.now(UTC))
    with pytest.raises(ConfigurationError):
        JobOptions(run_at=datetime.now())  # naive
    with pytest.raises(ConfigurationError):
        Retention(completed_count=None, completed_age_s=None)
    assert Retention(completed_count=None, completed_age_s=None, unbounded=True)


async def test_enqueue_typed_checks_arguments_now(queue: Queue) -> None:
    with pytest.raises(TypeError, match="greet"):
        await queue.enqueue(greet)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        await queue.enqueue(greet, "a", colour="red")  # type: ignore[call-arg]
    assert (await queue.counts())[JobState.WAITING] == 0, "nothing was written"
    job = await queue.enqueue(greet, "ann", punctuation="?")
    info = await job.info()
    assert info.task == "greet" and info.args == ["ann"] and info.kwargs == {"punctuation": "?"}


async def test_unencodable_arguments_fail_at_enqueue(queue: Queue) -> None:
    with pytest.raises(EncodeError, match="greet"):
        await queue.enqueue(greet, object())  # type: ignore[call-overload]
    assert (await queue.counts())[JobState.WAITING] == 0


@pytest.mark.parametrize("job_id", ["", "a b", "x" * 201, "tab\tid", "nul\x00"])
async def test_bad_job_ids(queue: Queue, job_id: str) -> None:
    with pytest.raises(InvalidJobId):
        await queue.enqueue("greet", "x", options=JobOptions(job_id=job_id))


async def test_enqueue_by_name_with_options(queue: Queue) -> None:
    run_at = datetime.now(UTC) + timedelta(hours=1)
    job = await queue.enqueue("greet", "bob", options=JobOptions(run_at=run_at, priority=3,
                                                                  attempts=4))
    info = await job.info()
    assert info.state is JobState.DELAYED and info.priority == 3 and info.max_attempts == 4
    assert info.due_at is not None and abs((info.due_at - run_at).total_seconds()) < 0.01
    with pytest.raises(ConfigurationError):
        await queue.enqueue("greet", options={"delay_s": 1})


async def test_duplicate_id_returns_existing_job(queue: Queue) -> None:
    first = await queue.enqueue(greet.options(job_id="same"), "a")
    second = await queue.enqueue(greet.options(job_id="same"), "b")
    assert first == second and second.existed and not first.existed
    assert (await second.info()).args == ["a"]


async def test_enqueue_many_in_order_with_duplicates(queue: Queue) -> None:
    calls = [greet.call(str(i)) for i in range(1200)]
    calls.append(TaskCall.by_name("greet", "dup", options=JobOptions(job_id="d")))
    calls.append(TaskCall.by_name("greet", "dup2", options=JobOptions(job_id="d")))
    jobs = await queue.enqueue_many(calls)
    assert len(jobs) == 1202 and len({j.id for j in jobs[:1200]}) == 1200
    assert [j.existed for j in jobs[-2:]] == [False, True]
    assert (await queue.counts())[JobState.WAITING] == 1201
    ids = await queue.job_ids(JobState.WAITING, limit=3)
    assert ids == [j.id for j in jobs[:3]], "FIFO order is the enqueue order"
    assert await queue.enqueue_many([]) == []


async def test_missing_job(queue: Queue) -> None:
    assert await queue.job_info("nope") is None
    with pytest.raises(JobNotFound):
        await queue.job("nope").info()
    with pytest.raises(JobNotFound):
        await queue.job("nope").result(timeout=1)


async def test_unreachable_redis_is_a_clear_error() -> None:
    q = Queue.from_url(f"redis://127.0.0.1:{free_port()}/0", name="down",
                       client_kwargs={"socket_connect_timeout": 0.2})
    try:
        with pytest.raises(RedisUnavailable, match="enqueue"):
            await q.enqueue("greet", "x")
    finally:
        await q.close()


async def test_from_url_reads_redis_url(redis_url: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from aiojobs_redis import ConfigurationError

    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(ConfigurationError, match="REDIS_URL"):
        Queue.from_url(name="env")
    monkeypatch.setenv("REDIS_URL", redis_url)
    async with Queue.from_url(name="env") as q:
        job = await q.enqueue("t")
        assert (await job.info()).state == "waiting"
        await q.obliterate()
