"""The package's layout: dependencies between its parts point one way.

Parts, from the bottom up: the core modules at the top of the package (errors,
options, codec, keys, states, connection, backoff), then ``scripts``, ``producer``,
``schedules``, ``ops``, ``worker``, ``testing`` (the users' testing kit) and ``cli``.
A module may import its own part and the parts below it, never one above: a new import
cycle between parts fails here.
Imports under ``if TYPE_CHECKING:`` count too: an annotation is a dependency. A part
that needs something of a part above it takes a small protocol instead (the worker's
lanes take a ``LaneHost``, a ``Job`` takes a ``JobSource``).

And the modules stay small: none is longer than MAX_LINES but the few being split now
(LONG_MODULES), and ``producer/job.py`` never imports ``producer/queue.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import aiojobs_redis

PACKAGE = Path(aiojobs_redis.__file__).parent
LAYERS = ("core", "scripts", "producer", "schedules", "ops", "worker", "testing", "cli")
#: the one import that points up, deferred to call time (and named for its annotation):
#: ``Queue.schedules`` hands out the schedule store of a queue
DEFERRED_UP = {("aiojobs_redis.producer.queue", "aiojobs_redis.schedules.store")}
#: the front doors re-export from every part
FRONT_DOORS = {"aiojobs_redis", "aiojobs_redis.__main__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def part_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return parts[1]
    return "core"


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level) for each import of the package in a file."""
    module = module_name(path)
    is_pkg = path.name == "__init__.py"
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".")[: len(module.split(".")) - child.level
                                              + (1 if is_pkg else 0)]
                    target = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    target = child.module or ""
                if target.split(".")[0] == "aiojobs_redis":
                    names = [f"{target}.{a.name}" for a in child.names]
                    subs = [n for n in names if (PACKAGE.parent / n.replace(".", "/")).is_dir()
                            or (PACKAGE.parent / (n.replace(".", "/") + ".py")).is_file()]
                    found.extend((n, top) for n in (subs or [target]))
            elif isinstance(child, ast.Import):
                found.extend((a.name, top) for a in child.names
                             if a.name.split(".")[0] == "aiojobs_redis")
            inner = top and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            visit(child, inner)

    visit(ast.parse(path.read_text("utf-8")), True)
    return found


def test_parts_import_only_parts_below_them() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        if module in FRONT_DOORS:
            continue
        mine = LAYERS.index(part_of(module))
        for target, _top in imports(path):
            theirs = LAYERS.index(part_of(target))
            if theirs <= mine:
                continue
            if (module, target) in DEFERRED_UP:
                continue
            wrong.append(f"{module} ({LAYERS[mine]}) imports {target} ({LAYERS[theirs]})")
    assert not wrong, "imports that point up:\n" + "\n".join(wrong)


def test_every_module_belongs_to_a_known_part() -> None:
    parts = {part_of(module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert parts <= set(LAYERS), parts - set(LAYERS)


def test_the_checker_sees_an_upward_import() -> None:
    """The check itself: a module-level import from a lower part is found as such."""
    found = imports(PACKAGE / "producer" / "queue.py")
    assert ("aiojobs_redis.schedules.store", False) in found  # the deferred one
    assert all(part_of(t) != "worker" for t, _ in found)
    assert ("aiojobs_redis.keys", True) in found


# ------------------------------------------------------------------ module size

#: no module of the package grows past this many lines: a longer one is split along its
#: seams into modules of the same subpackage (each then at most about 400 lines)
MAX_LINES = 450
#: the modules over MAX_LINES that are being split now, each with why it may be; nothing
#: else goes here (a module that grows past the limit is split, not listed)
LONG_MODULES: dict[str, str] = {}


def line_count(path: Path) -> int:
    return len(path.read_text("utf-8").splitlines())


def test_no_module_is_longer_than_the_limit() -> None:
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE.parent).as_posix()
        if name in LONG_MODULES:
            continue
        n = line_count(path)
        if n > MAX_LINES:
            long.append(f"{name}: {n} lines")
    assert not long, (f"modules longer than {MAX_LINES} lines (split each along its seams"
                      " into modules of the same subpackage):\n" + "\n".join(long))


def test_the_long_modules_are_only_those_being_split() -> None:
    """The list is empty today: a module that grows past the limit is split, and one
    listed while it is being split leaves the list once it is."""
    assert all(reason.strip() for reason in LONG_MODULES.values())
    still_long = [name for name in LONG_MODULES
                  if line_count(PACKAGE.parent / name) > MAX_LINES]
    assert still_long == list(LONG_MODULES), "a split module leaves the list"


# ------------------------------------------------------------ job.py and queue.py

QUEUE_MODULE = "aiojobs_redis.producer.queue"
JOB_PATH = PACKAGE / "producer" / "job.py"


def test_job_never_imports_queue() -> None:
    """``Job`` reaches its queue through the ``JobSource`` protocol it declares, so
    ``producer/job.py`` imports ``producer/queue.py`` nowhere: not at module level, not
    under ``if TYPE_CHECKING:``, not inside a function (``queue.py`` importing
    ``job.py`` is the one direction there is)."""
    found = [(target, top) for target, top in imports(JOB_PATH)
             if target == QUEUE_MODULE or target.startswith(QUEUE_MODULE + ".")]
    assert not found, f"producer/job.py imports producer/queue.py: {found}"


def test_the_checker_sees_job_imports() -> None:
    """The check above reads job.py's relative imports, at every level."""
    found = imports(JOB_PATH)
    assert ("aiojobs_redis.states", True) in found
    assert ("aiojobs_redis.errors", True) in found
