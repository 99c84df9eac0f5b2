"""Every .lua header states its keys and arguments; the Python specs agree with it,
and the body uses exactly what the header documents."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from aiojobs_redis.scripts import SCRIPTS, SPECS, ScriptSpec

_KEY_LINE = re.compile(r"^\s*KEYS\[(\d+)\]\s+(\w+)", re.M)
_ARG_LINE = re.compile(r"^\s*ARGV\[(\d+)\]\s+(\w+)", re.M)
_GROUP_LINE = re.compile(r"^\s*ARGV\[(\d+)\.\.\]\s+(?:groups of (\d+): (.+)|(job ids))", re.M)


#: scripts that may run while Redis is out of memory (maxmemory with noeviction): they
#: free memory (trimming, removal) or keep running work alive without growing it, so
#: in-flight jobs can finish while new enqueues are refused
ALLOW_OOM = {"complete_jobs", "fail_jobs", "extend_leases", "remove_job", "drain_queue",
             "cancel_job",
             "record_metrics",
             "obliterate_queue"}


def _header(source: str) -> str:
    assert source.startswith(("#!lua\n", "#!lua flags=allow-oom\n")), "starts with #!lua"
    start = source.index("--[[")
    end = source.index("]]", start)
    return source[start:end]


def _body(source: str) -> str:
    return source[source.index("]]") + 2:]


def _lua_files() -> set[str]:
    folder = resources.files("aiojobs_redis.scripts")
    return {p.name[:-4] for p in folder.iterdir() if p.name.endswith(".lua")}


def test_every_lua_file_has_a_spec_and_vice_versa() -> None:
    assert _lua_files() == {s.name for s in SPECS}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_header_matches_spec(spec: ScriptSpec) -> None:
    source = SCRIPTS[spec.name].source
    header = _header(source)
    assert header.startswith(f"--[[ {spec.name}: "), "the header starts with the script's name"
    assert source.startswith("#!lua flags=allow-oom\n") == (spec.name in ALLOW_OOM)
    keys = [(int(n), name) for n, name in _KEY_LINE.findall(header)]
    assert [n for n, _ in keys] == list(range(1, len(keys) + 1))
    assert tuple(name for _, name in keys) == spec.keys
    args = [(int(n), name) for n, name in _ARG_LINE.findall(header)]
    assert [n for n, _ in args] == list(range(1, len(args) + 1))
    assert tuple(name for _, name in args) == spec.argv
    groups = _GROUP_LINE.findall(header)
    if spec.group:
        assert len(groups) == 1, "a repeated argument group is documented once"
        first, size, names, ids = groups[0]
        assert int(first) == len(spec.argv) + 1
        if ids:
            assert spec.group == ("id",)
        else:
            assert int(size) == len(spec.group)
            names = re.sub(r"\s*\(.*?\)", "", names)  # drop remarks in parentheses
            assert tuple(n.strip() for n in names.split(",")) == spec.group
    else:
        assert not groups
    for line in ("Returns:",):
        assert line in header


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_body_uses_what_the_header_documents(spec: ScriptSpec) -> None:
    source = SCRIPTS[spec.name].source
    body = _body(source)
    used_keys = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", body)}
    for var, low, high in re.findall(r"for (\w+) = (\d+), (\d+) do", body):
        if f"KEYS[{var}]" in body:
            used_keys |= set(range(int(low), int(high) + 1))
    assert used_keys == set(range(1, len(spec.keys) + 1)), "every key used and documented"
    used_args = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", body)}
    assert used_args == set(range(1, len(spec.argv) + 1)), "fixed ARGV used as documented"
    if "TIME" in body:
        assert "Time:    redis.call('TIME')" in _header(source)
    if spec.group or "Derived:" in _header(source):
        assert "Derived:" in _header(source) or "prefix" not in body
    # keys built inside the script come from the declared job prefix only
    assert "redis.call('KEYS'" not in body and 'redis.call("KEYS"' not in body


def test_every_call_names_its_command() -> None:
    """script_commands() (docs/keys.md, the ACL test) reads commands from the sources:
    every redis.call names its command as a literal string, save call_chunked's own."""
    folder = resources.files("aiojobs_redis.scripts")
    sources = [folder.joinpath(f"{name}.lua").read_text("utf-8") for name in _lua_files()]
    sources += [p.read_text("utf-8") for p in folder.joinpath("lib").iterdir()
                if p.name.endswith(".lua")]
    for source in (re.sub(r"--[^\n]*", "", text) for text in sources):  # code, no comments
        for call in re.finditer(r"redis\.p?call\((?!')(.{0,20})", source):
            assert call.group(1).startswith("unpack(args))"), f"redis.call({call.group(1)}"
        for chunked in re.finditer(r"call_chunked\((?!\{')(.{0,20})", source):
            assert chunked.group(1).startswith("head, values)"), chunked.group(0)
