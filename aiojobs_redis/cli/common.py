"""What the commands share: exit codes, the Redis URL option, help text, long text cut.

A command reports a user error with ``raise SystemExit("what went wrong")``: the
command prints it as one line ``aiojobs-redis: ...`` and exits with EXIT_USAGE."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from ..connection import CLUSTER_SCHEMES, SENTINEL_SCHEME
from ..errors import wrap_redis_errors
from ..keys import QueueKeys

if TYPE_CHECKING:
    from ..producer.queue import Queue

#: exit codes of every command (documented in the epilog and in docs/cli.md)
EXIT_OK = 0
EXIT_UNHEALTHY = 1
#: the same code: no such job, queue or schedule
EXIT_NOT_FOUND = EXIT_UNHEALTHY
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

URL_SCHEMES = ("redis", "rediss", "unix", SENTINEL_SCHEME, *CLUSTER_SCHEMES)


def plain(doc: str | None) -> str:
    """A docstring as help text: without reST's double backticks."""
    return (doc or "").replace("``", "")


def add_url_option(parser: argparse.ArgumentParser, text: str = "") -> None:
    """--url on a subcommand. No default there: a --url given before the command (on the
    root parser, which has the default) must survive the subcommand's parse."""
    parser.add_argument("--url", default=argparse.SUPPRESS, metavar="URL",
                        help=text or "Redis URL (default: $REDIS_URL)")


def redis_url(args: argparse.Namespace) -> str:
    """The Redis URL of a command: --url, else $REDIS_URL; checked, not connected."""
    url: str | None = getattr(args, "url", None) or os.environ.get("REDIS_URL")
    if not url:
        raise SystemExit("no Redis URL: give --url redis://HOST:PORT/DB or set REDIS_URL")
    check_url(url)
    return url


def check_url(url: str) -> None:
    scheme = urlsplit(url).scheme
    if scheme not in URL_SCHEMES:
        raise SystemExit(f"{redact(url)!r} is not a Redis URL: it must start with one of "
                         + ", ".join(f"{s}://" for s in URL_SCHEMES))


def redact(url: str) -> str:
    """The URL without its password (it goes to terminals and logs)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


def cut(text: str, cap: int) -> str:
    """``text`` cut at ``cap`` characters, saying how many more there are (``--json``
    prints the whole of a job's record)."""
    if len(text) <= cap:
        return text
    return f"{text[:cap]}… [{len(text) - cap} more characters: use --json]"


def fail(code: int, message: str) -> int:
    """Print ``message`` as the one error line of the command; return ``code``."""
    line = " ".join(message.split())  # one line, whatever the message holds
    print(f"aiojobs-redis: {line}", file=sys.stderr)
    return code


def queue_key_names(keys: QueueKeys) -> list[str]:
    """Every fixed key of a queue (not the per-job, per-worker, ... ones)."""
    return [getattr(keys, f.name) for f in dataclasses.fields(keys)
            if f.name not in ("queue", "base") and not f.name.endswith("_prefix")]


async def queue_exists(queue: Queue) -> bool:
    """Whether any key of the queue exists: one EXISTS over its fixed keys (they share
    the queue's hash tag, so one slot on a Cluster too)."""
    with wrap_redis_errors(f"look for queue {queue.name!r}"):
        found = await queue.client.exists(*queue_key_names(queue.keys))
    return int(found) > 0
