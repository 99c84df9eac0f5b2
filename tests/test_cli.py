"""The aiojobs-redis command as users run it (a real process): exit codes, and every
user error as one line ``aiojobs-redis: ...`` on stderr, never a traceback."""

from __future__ import annotations

import os
import queue as stdqueue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aiojobs_redis import Queue, Worker, __version__, task
from aiojobs_redis._redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]
COMMAND = [sys.executable, "-m", "aiojobs_redis"]


@task(name="cli.noop")
async def noop() -> None:
    return None


def make_worker() -> Worker:
    """A worker factory that builds its queue from $REDIS_URL, as --url expects."""
    queue = Queue.from_url(os.environ["REDIS_URL"], name=os.environ.get("AJR_TEST_QUEUE", "cli"))
    return Worker(queue, tasks=[noop], concurrency=4, shutdown_timeout_s=1, lease_ms=2000)


def fixed_worker() -> Worker:
    """A worker that ignores $REDIS_URL (never connected here)."""
    return Worker(Queue.from_url("redis://127.0.0.1:1/0", name="fixed"), tasks=[noop])


class App:
    """Something callable that is not a Worker factory (like an ASGI app)."""

    async def __call__(self, scope: object, receive: object, send: object) -> None:
        return None


app = App()


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "AJR_LOG_LEVEL")}
    return {**base, **extra}


def run(*argv: str, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *argv], cwd=ROOT, env=env(**extra), capture_output=True,
                          text=True, timeout=timeout, check=False)


def one_line_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("aiojobs-redis: "), done.stderr
    return lines[0]


def closed_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.mark.parametrize("command", ["health", "workers", "counts"])
def test_unreachable_redis_exits_3(command: str) -> None:
    line = one_line_error(run(command, "--url", closed_url(), "--queue", "q"), 3)
    assert "unreachable" in line


def test_missing_url_exits_2() -> None:
    line = one_line_error(run("health", "--queue", "q"), 2)
    assert "--url" in line and "REDIS_URL" in line


@pytest.mark.parametrize("url", ["localhost:1234", "http://user:secret@host:1/0"])
def test_bad_url_scheme_exits_2(url: str) -> None:
    line = one_line_error(run("health", "--url", url, "--queue", "q"), 2)
    assert "not a Redis URL" in line and "redis://" in line
    assert "secret" not in line


@pytest.mark.parametrize("where", ["before", "after"])
def test_bad_log_level_exits_2(where: str) -> None:
    argv = ["health", "--queue", "q", "--url", closed_url()]
    argv = ["--log-level", "verbose", *argv] if where == "before" else [*argv, "--log-level",
                                                                         "verbose"]
    line = one_line_error(run(*argv), 2)
    assert "verbose" in line and "DEBUG" in line


def test_a_task_given_to_worker_exits_2() -> None:
    line = one_line_error(run("worker", "tests.test_cli:noop"), 2)
    assert "is a task" in line and "not a Worker" in line


def test_a_callable_that_is_no_worker_exits_2() -> None:
    line = one_line_error(run("worker", "tests.test_cli:app"), 2)
    assert "not a Worker" in line


@pytest.mark.parametrize("target", ["no_such_module_here:worker", "tests.test_cli:nothing",
                                    "no-colon"])
def test_a_target_that_cannot_be_loaded_exits_2(target: str) -> None:
    one_line_error(run("worker", target), 2)


def test_options_after_the_subcommand(redis_url: str, queue: Queue) -> None:
    done = run("counts", "--queue", queue.name, "--url", redis_url, "--log-level", "DEBUG",
               "--no-uvloop")
    assert done.returncode == 0, done.stderr
    assert "waiting" in done.stdout
    done = run("--url", redis_url, "--log-level", "warning", "counts", "--queue", queue.name)
    assert done.returncode == 0, done.stderr
    # the worker's own options and the global ones mix (the error is about the target)
    line = one_line_error(run("worker", "tests.test_cli:noop", "--log-level", "DEBUG",
                              "--concurrency", "2", "--queue", "a", "--burst"), 2)
    assert "is a task" in line


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"aiojobs-redis {__version__}"


def test_help_is_plain_text_and_documents_exit_codes() -> None:
    for argv in ([], ["worker"], ["schedules"], ["dashboard"], ["health"]):
        done = run(*argv, "--help")
        assert done.returncode == 0, done.stderr
        assert "``" not in done.stdout, argv
    top = run("--help").stdout
    assert "exit codes" in top and "Redis is unreachable" in top


def test_health_without_a_worker_exits_1(redis_url: str, queue: Queue) -> None:
    done = run("health", "--url", redis_url, "--queue", queue.name)
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("UNHEALTHY") and done.stderr == ""
    assert run("workers", "--url", redis_url, "--queue", queue.name).returncode == 1


def test_health_with_a_live_worker_exits_0(redis_url: str, queue: Queue) -> None:
    worker = subprocess.Popen(
        [*COMMAND, "worker", "tests.test_cli:make_worker", "--url", redis_url,
         "--concurrency", "3"],
        cwd=ROOT, env=env(AJR_TEST_QUEUE=queue.name), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while (done := run("health", "--url", redis_url, "--queue", queue.name)).returncode:
            assert time.monotonic() < deadline, done.stdout + done.stderr
            assert worker.poll() is None, worker.communicate()[1]
            time.sleep(0.2)
        assert done.stdout.startswith("OK: 1 live worker")
        listed = run("workers", "--url", redis_url, "--queue", queue.name)
        assert listed.returncode == 0
        worker_id = listed.stdout.splitlines()[1].split()[0]
        assert run("health", "--url", redis_url, "--queue", queue.name,
                   "--worker-id", worker_id).returncode == 0
        assert run("health", "--url", redis_url, "--queue", queue.name,
                   "--worker-id", "not-a-worker").returncode == 1
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr
    assert "concurrency 3" in stderr and "Traceback" not in stderr


def test_worker_overrides_are_checked() -> None:
    url = closed_url()
    line = one_line_error(run("worker", "tests.test_cli:make_worker", "--url", url,
                              "--queue", "other", AJR_TEST_QUEUE="mine"), 2)
    assert "does not serve" in line and "'other'" in line
    line = one_line_error(run("worker", "tests.test_cli:fixed_worker", "--url", url), 2)
    assert "does not apply" in line
    line = one_line_error(run("worker", "tests.test_cli:make_worker", "--url", url,
                              "--concurrency", "0"), 2)
    assert "concurrency" in line


def test_worker_with_redis_down_stops_cleanly_on_sigterm() -> None:
    proc = subprocess.Popen(
        [*COMMAND, "worker", "tests.test_cli:make_worker", "--url", closed_url()],
        cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: stdqueue.Queue[str] = stdqueue.Queue()
    assert proc.stderr is not None

    def read() -> None:
        for line in proc.stderr or ():
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while not any("Redis is unreachable" in x for x in seen):
            assert time.monotonic() < deadline, seen
            try:
                seen.append(lines.get(timeout=1))
            except stdqueue.Empty:
                assert proc.poll() is None, seen
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    proc.stderr.close()
    while not lines.empty():
        seen.append(lines.get())
    stderr = "".join(seen)
    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr
    errors = [x for x in seen if x.startswith("aiojobs-redis: ")]
    assert len(errors) == 1 and seen[-1] == errors[0], stderr


def test_dashboard_without_the_web_extra_exits_2() -> None:
    code = ("import sys; sys.modules['uvicorn'] = None; sys.modules['starlette'] = None\n"
            "from aiojobs_redis.cli.main import main\n"
            "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "dashboard", "--queue", "q",
                           "--url", closed_url()], cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=60, check=False)
    line = one_line_error(done, 2)
    assert "pip install 'aiojobs_redis[web]'" in line
