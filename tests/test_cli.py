"""The aiojobs-redis command as users run it (a real process): exit codes, and every
user error as one line ``aiojobs-redis: ...`` on stderr, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue as stdqueue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aiojobs_redis import Queue, Worker, __version__, task
from aiojobs_redis._redis_server import free_port
from tests.conftest import wait_until

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
    base = {k: v for k, v in os.environ.items()
            if k not in ("REDIS_URL", "AJR_LOG_LEVEL", "AJR_LOG_FORMAT")}
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
               "--no-uvloop", "--allow-empty", "--log-format", "json")
    assert done.returncode == 0, done.stderr
    assert "waiting" in done.stdout
    done = run("--url", redis_url, "--log-level", "warning", "--log-format", "TEXT", "counts",
               "--queue", queue.name, "--allow-empty")
    assert done.returncode == 0, done.stderr
    # the worker's own options and the global ones mix (the error is about the target)
    line = one_line_error(run("worker", "tests.test_cli:noop", "--log-level", "DEBUG",
                              "--concurrency", "2", "--queue", "a", "--burst"), 2)
    assert "is a task" in line


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"aiojobs-redis {__version__}"


def test_help_is_plain_text_and_documents_exit_codes() -> None:
    for argv in ([], ["worker"], ["schedules"], ["dashboard"], ["health"], ["counts"],
                 ["jobs"], ["jobs", "show"], ["jobs", "retry"], ["jobs", "remove"],
                 ["enqueue"]):
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


# ------------------------------------------------------------------ shared helpers


class Lines:
    """The lines a process writes to a pipe, read by a thread: wait for one with a
    deadline instead of sleeping."""

    def __init__(self, stream: object) -> None:
        self.seen: list[str] = []
        self._queue: stdqueue.Queue[str | None] = stdqueue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 30) -> str | None:
        """The next line that satisfies ``predicate``; None when none came within
        ``timeout`` seconds or the stream ended."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except stdqueue.Empty:
                return None
            if line is None:
                self._queue.put(None)  # stays ended
                return None
            self.seen.append(line)
            if predicate(line):
                return line
        return None

    def rest(self, timeout: float = 10) -> list[str]:
        """Every line up to the end of the stream."""
        self.wait_for(lambda _: False, timeout)
        self._thread.join(timeout=5)
        return self.seen


def stop_process(proc: subprocess.Popen[str], timeout: float = 30) -> int:
    """SIGTERM, then the exit code (SIGKILL only when it does not stop in time)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def finish(proc: subprocess.Popen[str], lines: Lines) -> tuple[int, list[str]]:
    """Stop a command whose stderr ``lines`` reads: its exit code and every line it wrote."""
    code = stop_process(proc)
    seen = lines.rest()
    assert proc.stderr is not None
    proc.stderr.close()
    return code, seen


async def arun(*argv: str, cwd: Path = ROOT, **extra: str) -> subprocess.CompletedProcess[str]:
    """``run`` from async code: the test's event loop (and a worker on it) keeps going."""
    proc = await asyncio.create_subprocess_exec(
        *COMMAND, *argv, cwd=cwd, env=env(**extra), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(list(argv), proc.returncode, out.decode(), err.decode())


# ------------------------------------------------------------------------ counts


def test_counts_refuses_a_queue_that_does_not_exist(redis_url: str, queue: Queue) -> None:
    line = one_line_error(run("counts", "--url", redis_url, "--queue", queue.name), 1)
    assert f"queue {queue.name!r} does not exist" in line and "--allow-empty" in line
    done = run("counts", "--url", redis_url, "--queue", queue.name, "--allow-empty")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["waiting", "0", "delayed", "0", "blocked", "0",
                                   "active", "0", "completed", "0", "failed", "0",
                                   "cancelled", "0", "paused", "False"]
    # a queue exists once any of its keys does: here, after one enqueue
    assert run("enqueue", "cli.noop", "--url", redis_url, "--queue", queue.name).returncode == 0
    done = run("counts", "--url", redis_url, "--queue", queue.name)
    assert done.returncode == 0, done.stderr
    assert "waiting    1" in done.stdout


async def test_a_paused_queue_exists(redis_url: str, queue: Queue) -> None:
    await queue.pause()  # only its meta hash
    done = await arun("counts", "--url", redis_url, "--queue", queue.name)
    assert done.returncode == 0, done.stderr
    assert "paused     True" in done.stdout


# ------------------------------------------------------------------ enqueue, jobs


@task(name="cli.boom")
async def boom(n: int, *, label: str) -> None:
    raise ValueError(f"boom {n} {label}")


@task(name="cli.bytes")
async def give_bytes() -> bytes:
    return b"\x00\xff\x1b[2J"


gate_open: asyncio.Event | None = None


@task(name="cli.hold")
async def hold() -> None:
    assert gate_open is not None
    await gate_open.wait()


async def test_enqueue_by_name_then_show(redis_url: str, queue: Queue) -> None:
    done = await arun("enqueue", "cli.boom", "--url", redis_url, "--queue", queue.name,
                      "--args", "[7]", "--kwargs", '{"label": "red\\u001b[31m", "options": 1}',
                      "--priority", "9", "--delay", "60", "--job-id", "order:1",
                      "--attempts", "4")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout == "order:1\n"
    info = await queue.job("order:1").info()
    assert info.task == "cli.boom" and info.state == "delayed" and info.priority == 9
    assert info.max_attempts == 4
    assert info.args == [7] and info.kwargs == {"label": "red\x1b[31m", "options": 1}
    assert info.due_at is not None and info.created_at is not None
    # the same id again: nothing enqueued, the id printed, a warning logged
    again = await arun("enqueue", "cli.boom", "--url", redis_url, "--queue", queue.name,
                       "--job-id", "order:1")
    assert again.returncode == 0 and again.stdout == "order:1\n"
    assert "exists already" in again.stderr and "Traceback" not in again.stderr
    # a new id each time without --job-id
    ids = {(await arun("enqueue", "cli.noop", "--url", redis_url, "--queue", queue.name)
            ).stdout.strip() for _ in range(2)}
    assert len(ids) == 2 and all(ids)

    shown = await arun("jobs", "show", "order:1", "--url", redis_url, "--queue", queue.name)
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    rows = dict(line.split(None, 1) for line in shown.stdout.splitlines())
    assert rows["state"] == "delayed" and rows["task"] == "cli.boom"
    assert rows["attempts"] == "0 of 4" and rows["priority"] == "9"
    assert rows["args"] == "[7]"
    assert "\x1b" not in shown.stdout and "\\u001b" in rows["kwargs"]  # escaped, not run
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(iso, rows["created"]) and re.fullmatch(iso, rows["due"])
    as_json = await arun("jobs", "show", "order:1", "--json", "--url", redis_url,
                         "--queue", queue.name)
    assert as_json.returncode == 0, as_json.stderr
    record = json.loads(as_json.stdout)
    assert record["id"] == "order:1" and record["state"] == "delayed"
    assert record["kwargs"] == {"label": "red\x1b[31m", "options": 1}
    assert re.fullmatch(iso, record["created_at"]) and record["finished_at"] is None
    assert record["created_at"] == info.created_at.isoformat(timespec="milliseconds"
                                                             ).replace("+00:00", "Z")


async def test_jobs_show_retry_remove_a_failed_job(redis_url: str, queue: Queue) -> None:
    failing = await queue.enqueue("cli.boom", 3, label="x")
    odd = await queue.enqueue(give_bytes)
    worker = Worker(queue, tasks=[boom, give_bytes], handle_signals=False)
    await worker.run(burst=True)
    assert (await failing.info()).state == "failed"

    shown = await arun("jobs", "show", failing.id, "--url", redis_url, "--queue", queue.name)
    assert shown.returncode == 0, shown.stderr
    assert "ValueError: boom 3 x" in shown.stdout
    assert "traceback:" in shown.stdout and "  Traceback (most recent call last):" in shown.stdout
    record = json.loads((await arun("jobs", "show", failing.id, "--json", "--url", redis_url,
                                    "--queue", queue.name)).stdout)
    assert record["state"] == "failed" and record["attempts"] == 1
    assert "boom 3 x" in record["error"] and "Traceback" in record["traceback"]
    assert record["finished_at"] > record["started_at"] >= record["created_at"]

    # a result JSON cannot hold (bytes) is shown, and no control character reaches the
    # terminal
    shown = await arun("jobs", "show", odd.id, "--url", redis_url, "--queue", queue.name)
    assert shown.returncode == 0, shown.stderr
    assert "completed" in shown.stdout and "\x1b" not in shown.stdout and "\\x1b" in shown.stdout
    record = json.loads((await arun("jobs", "show", odd.id, "--json", "--url", redis_url,
                                    "--queue", queue.name)).stdout)
    assert record["result"] == repr(b"\x00\xff\x1b[2J")

    done = await arun("jobs", "retry", failing.id, "--url", redis_url, "--queue", queue.name)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert (await failing.info()).state == "waiting"
    line = one_line_error(await arun("jobs", "retry", failing.id, "--url", redis_url,
                                     "--queue", queue.name), 1)
    assert "is waiting" in line and "only a failed job" in line

    done = await arun("jobs", "remove", failing.id, "--url", redis_url, "--queue", queue.name)
    assert done.returncode == 0 and "removed" in done.stdout, done.stderr
    for command in ("show", "retry", "remove"):
        line = one_line_error(await arun("jobs", command, failing.id, "--url", redis_url,
                                         "--queue", queue.name), 1)
        assert f"no job {failing.id!r} in queue {queue.name!r}" in line
        assert "has no keys at all" not in line


async def test_jobs_remove_refuses_an_active_job(redis_url: str, queue: Queue) -> None:
    global gate_open
    gate_open = asyncio.Event()
    job = await queue.enqueue(hold)
    worker = Worker(queue, tasks=[hold], handle_signals=False, shutdown_timeout_s=5)
    running = asyncio.create_task(worker.run())
    try:
        async def active() -> bool:
            assert not running.done()
            return await job.state() == "active"

        await wait_until(active)
        line = one_line_error(await arun("jobs", "remove", job.id, "--url", redis_url,
                                         "--queue", queue.name), 1)
        assert f"job {job.id!r} is active" in line and "cannot be removed" in line
    finally:
        gate_open.set()
        worker.stop()
        await running
    assert (await job.info()).state == "completed"


@pytest.mark.parametrize("command", ["show", "retry", "remove"])
def test_a_job_of_a_queue_that_does_not_exist(redis_url: str, queue: Queue,
                                              command: str) -> None:
    line = one_line_error(run("jobs", command, "nope", "--url", redis_url,
                              "--queue", queue.name), 1)
    assert "no job 'nope'" in line and "has no keys at all" in line


@pytest.mark.parametrize(("argv", "words"), [
    (["--args", "[1,"], ["--args must be a JSON array", "Expecting value"]),
    (["--args", '{"a": 1}'], ["--args must be a JSON array, not an object"]),
    (["--args", '"x"'], ["--args must be a JSON array, not a string"]),
    (["--kwargs", "[1]"], ["--kwargs must be a JSON object, not an array"]),
    (["--kwargs", "nul"], ["--kwargs must be a JSON object"]),
    (["--delay", "-1"], ["--delay", "from 0"]),
    (["--delay", "nan"], ["--delay", "finite"]),
    (["--delay", "soon"], ["--delay", "invalid float value"]),
    (["--priority", "5000"], ["--priority", "-1000 to 1000"]),
    (["--priority", "1.5"], ["--priority", "invalid int value"]),
    (["--attempts", "0"], ["--attempts", "from 1"]),
    (["--job-id", "a b"], ["--job-id", "whitespace"]),
    (["--job-id", "sched:x"], ["--job-id", "reserved for schedules"]),
    (["--queue", "no spaces"], ["invalid queue name"]),
])
def test_enqueue_refuses_bad_input_with_exit_2(argv: list[str], words: list[str]) -> None:
    # nothing connects: the URL is never used
    argv = ["--queue", "q", *argv] if "--queue" not in argv else argv
    line = one_line_error(run("enqueue", "some.task", "--url", closed_url(), *argv), 2)
    for word in words:
        assert word in line, line


def test_enqueue_refuses_an_empty_task_name() -> None:
    line = one_line_error(run("enqueue", "", "--queue", "q", "--url", closed_url()), 2)
    assert "task name" in line


@pytest.mark.parametrize("argv", [
    ["jobs", "show", "x", "--queue", "q"], ["jobs", "retry", "x", "--queue", "q"],
    ["jobs", "remove", "x", "--queue", "q"], ["enqueue", "t", "--queue", "q"],
])
def test_jobs_and_enqueue_with_redis_down_exit_3(argv: list[str]) -> None:
    line = one_line_error(run(*argv, "--url", closed_url()), 3)
    assert "unreachable" in line


@pytest.mark.parametrize("argv", [
    ["jobs", "show", "a b", "--queue", "q"],    # not a job id
    ["jobs", "show", "x", "--queue", "a/b"],    # not a queue name
    ["jobs", "show", "x"],                      # --queue missing
    ["jobs", "cancel", "a b", "--queue", "q"],  # not a job id
])
def test_jobs_usage_errors_exit_2(argv: list[str]) -> None:
    one_line_error(run(*argv, "--url", closed_url()), 2)


# ------------------------------------------------------------------ --log-format


@pytest.mark.parametrize("where", ["before", "after", "env"])
def test_bad_log_format_exits_2(where: str) -> None:
    argv = ["health", "--queue", "q", "--url", closed_url()]
    if where == "before":
        done = run("--log-format", "xml", *argv)
    elif where == "after":
        done = run(*argv, "--log-format", "xml")
    else:
        done = run(*argv, AJR_LOG_FORMAT="xml")
    line = one_line_error(done, 2)
    assert "'xml'" in line and "json" in line


# ------------------------------------------------------------------------ worker


def test_a_module_with_a_syntax_error_exits_2(tmp_path: Path) -> None:
    (tmp_path / "broken_mod.py").write_text("def f(:\n")
    done = subprocess.run([*COMMAND, "worker", "broken_mod:worker"], cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=60, check=False)
    line = one_line_error(done, 2)
    assert "cannot import 'broken_mod'" in line and "SyntaxError" in line and "line 1" in line


# ------------------------------------------------------------------------ --reload

RELOAD_TARGET = '''\
import os
from aiojobs_redis import Queue, Worker, task

@task(name="reload.noop")
async def noop() -> None:
    return None

def make() -> Worker:
    return Worker(Queue.from_url(os.environ["REDIS_URL"], name={queue!r}), tasks=[noop],
                  shutdown_timeout_s=1, lease_ms=2000)
'''


def _message(line: str) -> str:
    """The message of a JSON log line ('' for any other line)."""
    if not line.startswith("{"):
        return ""
    message: str = json.loads(line)["message"]
    return message


def _started_id(line: str) -> str | None:
    match = re.fullmatch(r"worker (\S+) started: .*", _message(line))
    return match.group(1) if match else None


@pytest.mark.parametrize("layout", ["cwd", "reload-dir"])
def test_worker_reload_restarts_on_change(redis_url: str, queue: Queue, tmp_path: Path,
                                          layout: str) -> None:
    pytest.importorskip("watchfiles")
    if layout == "cwd":
        source, target, extra = tmp_path / "reload_target.py", "reload_target:make", []
    else:  # the code in a directory of its own, watched with --reload-dir
        (tmp_path / "app").mkdir()
        source, target = tmp_path / "app" / "reload_target.py", "app.reload_target:make"
        extra = ["--reload-dir", "app"]
    source.write_text(RELOAD_TARGET.format(queue=queue.name))
    proc = subprocess.Popen(
        [*COMMAND, "worker", target, "--reload", *extra, "--url", redis_url,
         "--log-format", "json"],
        cwd=tmp_path, env=env(AJR_NO_PERSISTENCE_OK="1"), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    lines = Lines(proc.stderr)
    edits = 0

    def edit(text: str | None = None) -> None:
        nonlocal edits
        edits += 1
        source.write_text(text if text is not None else
                          RELOAD_TARGET.format(queue=queue.name) + f"# edit {edits}\n")

    def next_start(first: bool = False) -> str:
        """Edit the file until a new worker starts (a change made before the watcher
        was ready is not seen): its id."""
        for _ in range(5):
            if not first:
                edit()
            line = lines.wait_for(lambda x: _started_id(x) is not None or "Traceback" in x,
                                  timeout=30 if first else 8)
            assert line is None or "Traceback" not in line, lines.seen
            if line is not None:
                worker_id = _started_id(line)
                assert worker_id is not None
                return worker_id
            assert proc.poll() is None, lines.seen
            first = False
        raise AssertionError(f"the worker did not restart: {lines.seen}")

    try:
        first = next_start(first=True)
        second = next_start()
        assert second != first
        assert any(f"worker {first} stopped" in _message(x) for x in lines.seen), lines.seen
        assert any("changed: restarting the worker" in _message(x) for x in lines.seen)
        # a broken edit: the worker exits with one line; the next edit starts it again
        edit("def make(:\n")
        assert lines.wait_for(lambda x: "starts again when" in _message(x)), lines.seen
        assert any(x.startswith("aiojobs-redis: cannot import") for x in lines.seen)
        third = next_start()
        assert third not in (first, second)
    finally:
        code, seen = finish(proc, lines)
    assert code == 0, seen
    assert "Traceback" not in "\n".join(seen)
    last = [i for i in map(_started_id, seen) if i is not None][-1]  # third, or a later one
    assert any(f"worker {last} stopped" in _message(x) for x in seen), seen
    assert all(x.startswith("{") for x in seen if not x.startswith("aiojobs-redis: ")), seen
    # the worker process is gone with its parent
    pid = int(last.split(":")[1])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_worker_reload_without_watchfiles_exits_2() -> None:
    code = ("import sys; sys.modules['watchfiles'] = None\n"
            "from aiojobs_redis.cli.main import main\n"
            "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "worker", "tests.test_cli:make_worker",
                           "--reload", "--url", closed_url()], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=60, check=False)
    line = one_line_error(done, 2)
    assert "pip install 'aiojobs_redis[reload]'" in line


@pytest.mark.parametrize(("argv", "words"), [
    (["--reload", "--burst"], ["--burst"]),
    (["--reload", "--reload-dir", "no/such/dir"], ["no/such/dir", "not a directory"]),
    (["--reload-dir", "tests"], ["--reload-dir needs --reload"]),
])
def test_worker_reload_usage_errors_exit_2(argv: list[str], words: list[str]) -> None:
    if "--reload" in argv:
        pytest.importorskip("watchfiles")
    line = one_line_error(run("worker", "tests.test_cli:make_worker", *argv,
                              "--url", closed_url()), 2)
    for word in words:
        assert word in line, line


def test_reload_child_gets_every_worker_option() -> None:
    """The --reload parent runs the worker with the options it was given: every option of
    the worker command (a new one too) must be passed on, or this fails."""
    from aiojobs_redis.cli.main import build_parser
    from aiojobs_redis.cli.reload import child_argv

    given = ["--url", "redis://h:1/2", "--log-level", "debug", "--log-format", "json",
             "--no-uvloop", "worker", "m:w", "--reload", "--reload-dir", "d", "--burst",
             "--concurrency", "7", "--queue", "a", "--queue", "b", "--processes", "3"]
    args = build_parser().parse_args(given)
    child = child_argv(args)
    assert child[:3] == [sys.executable, "-m", "aiojobs_redis"]
    again = build_parser().parse_args(child[3:])
    parent_only = ("reload", "reload_dir", "processes")
    expected = {k: v for k, v in vars(args).items() if k not in parent_only}
    assert {k: v for k, v in vars(again).items() if k not in parent_only} == expected
    assert not again.reload and again.reload_dir is None and again.processes == 1
    # the check above sees every option only if `given` sets each one
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = {a.dest for a in sub.choices["worker"]._actions if a.option_strings}
    defaults = build_parser().parse_args(["worker", "m:w"])
    unset = {d for d in options - {"help"} if getattr(args, d) == getattr(defaults, d, None)}
    assert not unset, f"set these in `given`: {unset}"
