"""The docs that can go stale are generated from code or checked against it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from aiojobs_redis._redis_server import RedisServer
from aiojobs_redis.keys import keys_markdown
from aiojobs_redis.scripts import scripts_markdown

DOCS = Path(__file__).resolve().parents[1] / "docs"
SECTIONS = {"keys": keys_markdown, "scripts": scripts_markdown}


def _section(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:begin -->\n(.*?)<!-- {name}:end -->", text, re.S)
    assert match, f"docs/keys.md lacks the {name} markers"
    return match.group(1)


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_keys_page_matches_code(name: str) -> None:
    text = (DOCS / "keys.md").read_text()
    assert _section(text, name) == SECTIONS[name](), "run: python -m tests.test_docs"


def test_quickstart_example_runs(redis_server: RedisServer) -> None:
    """docs/examples/quickstart.py is the README's example; it must run as written."""
    done = subprocess.run(
        [sys.executable, str(DOCS / "examples" / "quickstart.py")],
        env={"REDIS_URL": redis_server.url, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "hello ann, you have 3 new messages" in done.stdout


def regenerate() -> None:
    path = DOCS / "keys.md"
    text = path.read_text()
    for name, make in SECTIONS.items():
        begin, end = f"<!-- {name}:begin -->\n", f"<!-- {name}:end -->"
        head, rest = text.split(begin, 1)
        text = head + begin + make() + end + rest.split(end, 1)[1]
    path.write_text(text)


if __name__ == "__main__":
    regenerate()
