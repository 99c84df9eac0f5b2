"""``aiojobs-redis schedules list | sync | remove | run-now`` through the real parser."""

from __future__ import annotations

import pytest

from aiojobs_redis import Queue, Schedule, Worker, task
from aiojobs_redis.cli.main import build_parser


@task(name="cli.report")
async def report(kind: str) -> None:
    return None


SCHEDULES = [
    Schedule("daily-report", report, cron="30 6 * * *", tz="Europe/Berlin", args=("daily",)),
    Schedule("pulse", report, every_s=10, args=("pulse",)),
]


def make_worker() -> Worker:
    queue = Queue.from_url("redis://127.0.0.1:1/0", name="from-worker")  # never connected
    return Worker(queue, tasks=[report], schedules=SCHEDULES[:1])


async def cli(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    code: int = await args.func(args)
    return code


async def test_sync_list_run_now_remove(queue: Queue, redis_url: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    common = ("--url", redis_url, "--queue", queue.name)
    assert await cli("schedules", "sync", "tests.test_schedules_cli:SCHEDULES", *common) == 0
    out = capsys.readouterr().out
    assert "daily-report: created" in out and "pulse: created" in out
    assert await cli("schedules", "sync", "tests.test_schedules_cli:SCHEDULES", *common) == 0
    assert "0 changed" in capsys.readouterr().out  # idempotent

    assert await cli("schedules", "list", *common) == 0
    out = capsys.readouterr().out
    assert "daily-report" in out and "30 6 * * *" in out and "Europe/Berlin" in out
    assert "every 10 s" in out

    assert await cli("schedules", "run-now", "pulse", *common) == 0
    assert "enqueued job sched:pulse:now:" in capsys.readouterr().out
    assert len(await queue.job_ids(__import__("aiojobs_redis").JobState.WAITING)) == 1

    assert await cli("schedules", "remove", "pulse", *common) == 0
    assert await cli("schedules", "remove", "pulse", *common) == 1
    assert [i.name for i in await queue.schedules.list()] == ["daily-report"]


async def test_sync_prune_and_worker_targets(queue: Queue, redis_url: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    await queue.schedules.upsert(Schedule("stale", report, every_s=60, args=("x",)))
    common = ("--url", redis_url, "--queue", queue.name)
    assert await cli("schedules", "sync", "tests.test_schedules_cli:make_worker", "--prune",
                     *common) == 0
    out = capsys.readouterr().out
    assert "stale: removed" in out
    assert [i.name for i in await queue.schedules.list()] == ["daily-report"]
    with pytest.raises(SystemExit, match="expected a Schedule"):
        await cli("schedules", "sync", "tests.test_schedules_cli:report", *common)
