"""How a project tests its tasks with aiojobs_redis.testing: no conftest.py, the fixtures
come from the plugin that pytest loads by itself. (Named check_tasks.py so that the
repository's own test run does not collect it; tests/test_testing_kit.py copies it to a
temporary directory as test_tasks.py and runs it there.)"""

from __future__ import annotations

from typing import Any

from aiojobs_redis import JobState, Queue, WorkerContext
from aiojobs_redis.testing import call_task, job_context, run_until_idle

from .tasks import charge, thumbnail


class FlakyGateway:
    """Fails the first ``failures`` charges, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def charge(self, order: str, cents: int) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("gateway unreachable")
        return f"{order}: charged {cents}"


def with_gateway(gateway: FlakyGateway) -> Any:
    def on_startup(worker: WorkerContext) -> None:
        worker.state["gateway"] = gateway
    return on_startup


# ------------------------------------------------------------ unit tests: no Redis

async def test_thumbnail_reports_progress() -> None:
    with job_context() as ctx:
        assert await call_task(thumbnail, "cat.png", width=64) == "cat-64.png"
    assert ctx.progress_values == [50, 100]


async def test_charge_gives_up_on_the_last_attempt() -> None:
    gateway = FlakyGateway(failures=5)
    with job_context(task=charge, attempt=3, worker_state={"gateway": gateway}):
        assert await call_task(charge, "o-1", 500) == "o-1: gave up after 3 attempts"
    assert gateway.calls == 1


# ------------------------------------------------- integration tests: a real worker

async def test_thumbnails_run_on_a_worker(ajr_queue: Queue) -> None:
    jobs = [await ajr_queue.enqueue(thumbnail, f"img{i}.png", width=32) for i in range(3)]
    done = await run_until_idle(ajr_queue, [thumbnail])
    assert done.completed == 3
    assert [await job.result(timeout=0) for job in jobs] == [
        "img0-32.png", "img1-32.png", "img2-32.png"]


async def test_a_delayed_job_is_not_waited_for(ajr_queue: Queue) -> None:
    later = await ajr_queue.enqueue(thumbnail.options(delay_s=3600), "late.png", width=8)
    done = await run_until_idle(ajr_queue, [thumbnail])
    assert (done.completed, done.delayed) == (0, 1)
    done = await run_until_idle(ajr_queue, [thumbnail], include_delayed=True)
    assert done.completed == 1
    assert await later.result(timeout=0) == "late-8.png"


async def test_charge_is_retried_without_waiting_out_its_backoff(ajr_queue: Queue) -> None:
    gateway = FlakyGateway(failures=1)
    job = await ajr_queue.enqueue(charge, "o-2", 1250)
    done = await run_until_idle(ajr_queue, [charge], on_startup=[with_gateway(gateway)])
    assert (done.retried, done.delayed) == (1, 1)  # the retry waits 60 s: not run here
    assert await job.state() == JobState.DELAYED
    done = await run_until_idle(ajr_queue, [charge], include_delayed=True,
                                on_startup=[with_gateway(gateway)])
    assert done.completed == 1
    assert await job.result(timeout=0) == "o-2: charged 1250"
