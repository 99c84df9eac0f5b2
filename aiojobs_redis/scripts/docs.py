"""What docs/keys.md shows of the scripts, generated from their specs and sources (a
test keeps the page in step): the table of transitions, and the commands each script may
run (what an ACL rule or a proxy in front of Redis must let through)."""

from __future__ import annotations

import itertools
import re
from importlib import resources

from . import SCRIPTS, SPECS


def scripts_markdown() -> str:
    """The script table of docs/keys.md: each transition, its keys and arguments."""
    lines = ["| script | transition | KEYS | ARGV |", "|---|---|---|---|"]
    for spec in SPECS:
        source = SCRIPTS[spec.name].source
        head = source.split("--[[ ", 1)[1].split(": ", 1)[1]
        head = re.split(r"\n\s*(?:KEYS|ARGV)\[", head, maxsplit=1)[0]
        summary = " ".join(head.split()).split(". ")[0].rstrip(".").replace("|", "\\|")
        argv = ", ".join(spec.argv) + (f", then groups of ({', '.join(spec.group)})"
                                       if spec.group else "")
        lines.append(f"| [`{spec.name}`](../aiojobs_redis/scripts/{spec.name}.lua) | {summary} |"
                     f" {', '.join(spec.keys)} | {argv} |")
    return "\n".join(lines) + "\n"


_COMMAND = re.compile(r"(?:redis\.p?call\(|call_chunked\(\{)\s*'([A-Za-z|]+)'")
_LIB_FUNCTION = re.compile(r"^local function (\w+)\(", re.M)


def script_commands() -> dict[str, tuple[str, ...]]:
    """The Redis commands each script may run: its own calls and those of the ``lib/``
    helpers it calls, directly or through other helpers (every call names its command
    literally; a test keeps it so). What an ACL rule or a proxy must let through."""
    folder = resources.files("aiojobs_redis.scripts")
    helpers: dict[str, tuple[set[str], str]] = {}
    for lib in sorted(p.name for p in folder.joinpath("lib").iterdir()
                      if p.name.endswith(".lua")):
        text = folder.joinpath("lib", lib).read_text("utf-8")
        starts = [m.start() for m in _LIB_FUNCTION.finditer(text)] + [len(text)]
        for start, end in itertools.pairwise(starts):
            body = text[start:end]
            name = _LIB_FUNCTION.match(body)
            assert name is not None
            helpers[name.group(1)] = ({c.upper() for c in _COMMAND.findall(body)}, body)

    def calls(body: str, seen: set[str]) -> set[str]:
        found = {c.upper() for c in _COMMAND.findall(body)}
        for helper, (_, helper_body) in helpers.items():
            if helper not in seen and re.search(rf"\b{helper}\(", body):
                seen.add(helper)
                found |= calls(helper_body.split("\n", 1)[1], seen)
        return found

    return {spec.name: tuple(sorted(calls(
        folder.joinpath(f"{spec.name}.lua").read_text("utf-8"), set()))) for spec in SPECS}


def commands_markdown() -> str:
    """The table of docs/keys.md: the Redis commands each script may run."""
    lines = ["| script | commands it may run |", "|---|---|"]
    for name, commands in script_commands().items():
        lines.append(f"| `{name}` | {' '.join(commands)} |")
    return "\n".join(lines) + "\n"
