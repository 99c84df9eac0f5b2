"""Job ids: the ones a producer makes (unique, so that a retried enqueue is idempotent)
and the rule for ids given by users."""

from __future__ import annotations

import itertools
import os
import re
import secrets
from typing import Final

from ..errors import InvalidJobId
from ..options import MAX_JOB_ID_LENGTH

_BAD_ID = re.compile(r"[\s\x00-\x1f\x7f]")


class _JobIds:
    """Job ids made by the producer, so that a retried enqueue is idempotent: a random
    64-bit prefix per process (renewed in a forked child) and a counter."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        prefix = secrets.token_urlsafe(8)
        while prefix.startswith("-"):  # an id that reads as an option on a command line
            prefix = secrets.token_urlsafe(8)
        self.prefix = prefix
        self.counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


new_job_id = _JobIds()


RESERVED_JOB_ID_PREFIX: Final = "sched:"  # schedules' ids: sched:<name>:<tick ms>
# Schedules.run_now's ids, sched:<schedule name>:now:<12 hex digits>; the name part is
# schedules.spec._NAME's rule (copied: producer/ may not import schedules/, and
# tests/test_validation.py checks that the two agree)
_RUN_NOW_ID = re.compile(r"sched:[A-Za-z0-9][A-Za-z0-9_.:/@\-]{0,99}:now:[0-9a-f]{12}")
# what enqueue refuses on top of _BAD_ID: path separators, and characters that are
# invisible or cannot be encoded (C1 controls, format characters such as zero-width
# spaces and bidi overrides, lone surrogates)
_PATH_SEPARATORS = frozenset("/\\")
_INVISIBLE_CATEGORIES = frozenset(("Cc", "Cf", "Cs"))


def check_job_id(job_id: str, *, enqueue: bool = False) -> str:
    """Return ``job_id`` if it is a valid job id, else raise :class:`InvalidJobId`.

    Any id (``enqueue=False``, how existing jobs are addressed): a non-empty ``str`` of
    at most ``MAX_JOB_ID_LENGTH`` characters without whitespace or control characters.

    A new id given at enqueue (``enqueue=True``) must also not contain ``/`` or ``\\``,
    not be ``.`` or ``..``, not contain invisible characters (Unicode categories Cc, Cf,
    Cs), and not start with ``sched:``: that prefix is reserved for schedules, whose
    tick ids ``sched:<name>:<tick ms>`` are predictable, so a producer could otherwise
    take a tick's id before the tick fires. The one ``sched:`` form accepted is the one
    :meth:`Schedules.run_now` makes, ``sched:<schedule name>:now:<12 hex digits>``.
    ``:`` and every other printable character are allowed.
    """
    if not isinstance(job_id, str) or not job_id:
        raise InvalidJobId(f"a job id must be a non-empty string, got {job_id!r}")
    if len(job_id) > MAX_JOB_ID_LENGTH:
        raise InvalidJobId(
            f"a job id may have at most {MAX_JOB_ID_LENGTH} characters, got {len(job_id)}"
        )
    if _BAD_ID.search(job_id):
        raise InvalidJobId(f"a job id may not contain whitespace or control characters: {job_id!r}")
    if not enqueue:
        return job_id
    if job_id.startswith(RESERVED_JOB_ID_PREFIX):
        if _RUN_NOW_ID.fullmatch(job_id):
            return job_id
        raise InvalidJobId(
            f"job ids starting with {RESERVED_JOB_ID_PREFIX!r} are reserved for schedules"
            f" (a tick's job is sched:<name>:<tick ms>); choose another id: {job_id!r}"
        )
    if job_id in (".", ".."):
        raise InvalidJobId(f"a job id may not be '.' or '..': {job_id!r}")
    if not _PATH_SEPARATORS.isdisjoint(job_id):
        raise InvalidJobId(
            f"a job id may not contain '/' or '\\' (ids appear in URL paths; use ':' to"
            f" structure ids): {job_id!r}"
        )
    if not job_id.isascii():
        import unicodedata

        if any(unicodedata.category(c) in _INVISIBLE_CATEGORIES for c in job_id):
            raise InvalidJobId(
                "a job id may not contain invisible characters (C1 controls, format"
                f" characters such as zero-width spaces or bidi overrides, surrogates): {job_id!r}"
            )
    return job_id
