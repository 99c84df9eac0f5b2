"""Frozen, keyword-only option Structs. Units are in the names.

Every option is checked when its Struct is made (``__post_init__``, which msgspec
also runs when it decodes one): a value of the wrong type or out of its range is a
:class:`ConfigurationError` naming the option and its range. Integers must be
``int`` (not ``bool``, not a float such as ``2.0``); numbers of seconds may be
``int`` or ``float`` but must be finite. The ranges are in docs/options.md.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Final

import msgspec

from .errors import ConfigurationError

# The wait ZSET's score is ``(1000 - priority) * 2^40 + sequence`` (add_jobs.lua and the
# scripts that make a job wait again): with the band 0..2000 every score stays below
# 2^53, so it is an exact double and FIFO within a priority holds.
PRIORITY_MIN: Final = -1000
PRIORITY_MAX: Final = 1000
MAX_ATTEMPTS: Final = 10_000
MAX_JOB_ID_LENGTH: Final = 200
#: the longest delay, timeout, backoff delay or retention age: ten years, in seconds
MAX_DURATION_S: Final = 10 * 365.25 * 24 * 3600.0
MAX_RETENTION_COUNT: Final = 1_000_000_000
MAX_BACKOFF_FACTOR: Final = 100.0


class FixedBackoff(msgspec.Struct, frozen=True, kw_only=True, tag="fixed"):
    """Wait the same time before every retry."""

    delay_s: float = 1.0
    jitter: float = 0.0  # 0..1: the delay is reduced by up to this fraction, at random

    def __post_init__(self) -> None:
        _check_range("FixedBackoff.delay_s", self.delay_s, 0, MAX_DURATION_S)
        _check_range("FixedBackoff.jitter", self.jitter, 0, 1)


class ExponentialBackoff(msgspec.Struct, frozen=True, kw_only=True, tag="exponential"):
    """``base_s * factor ** (attempt - 1)``, capped at ``max_s``, with optional jitter."""

    base_s: float = 1.0
    factor: float = 2.0
    max_s: float = 3600.0
    jitter: float = 0.5  # 0..1: the delay is reduced by up to this fraction, at random

    def __post_init__(self) -> None:
        _check_range("ExponentialBackoff.base_s", self.base_s, 0, MAX_DURATION_S)
        _check_range("ExponentialBackoff.factor", self.factor, 1, MAX_BACKOFF_FACTOR)
        _check_range("ExponentialBackoff.max_s", self.max_s, 0, MAX_DURATION_S)
        _check_range("ExponentialBackoff.jitter", self.jitter, 0, 1)


#: how long to wait before each retry: :class:`FixedBackoff` or :class:`ExponentialBackoff`
Backoff = FixedBackoff | ExponentialBackoff


class Retention(msgspec.Struct, frozen=True, kw_only=True):
    """How many finished jobs to keep, and for how long (whichever limit comes first).

    ``None`` means unbounded on that axis; at least one axis must stay bounded
    unless ``unbounded=True`` is given explicitly.
    """

    completed_count: int | None = 1000
    completed_age_s: float | None = 24 * 3600.0
    failed_count: int | None = 10_000
    failed_age_s: float | None = 7 * 24 * 3600.0
    unbounded: bool = False

    def __post_init__(self) -> None:
        for name in ("completed_count", "failed_count"):
            value = getattr(self, name)
            if value is not None:
                _check_int(f"Retention.{name}", value, 0, MAX_RETENTION_COUNT)
        for name in ("completed_age_s", "failed_age_s"):
            value = getattr(self, name)
            if value is not None:
                _check_range(f"Retention.{name}", value, 0.001, MAX_DURATION_S)
        if not isinstance(self.unbounded, bool):
            raise ConfigurationError(
                f"Retention.unbounded must be True or False, got {self.unbounded!r}"
            )
        if not self.unbounded and (
            (self.completed_count is None and self.completed_age_s is None)
            or (self.failed_count is None and self.failed_age_s is None)
        ):
            raise ConfigurationError(
                "Retention without a count or an age keeps jobs forever; pass unbounded=True"
                " if that is what you want"
            )


class JobOptions(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Per-job options. ``None`` means: take the task's default, then the queue's."""

    job_id: str | None = None
    delay_s: float | None = None
    run_at: datetime | None = None
    priority: int | None = None
    attempts: int | None = None
    backoff: Backoff | None = None
    timeout_s: float | None = None
    retention: Retention | None = None
    #: enqueues with the same key within ``dedup_ttl_s`` of the first yield its job
    dedup_key: str | None = None
    dedup_ttl_s: float | None = None
    #: with a dedup key: a later enqueue in the window replaces the pending job's arguments
    #: and postpones it (its own delay, from now), and the window starts again
    debounce: bool | None = None
    #: a job not started this many seconds after its enqueue never runs: it is failed as
    #: expired when a worker would take it
    expires_s: float | None = None
    #: the job's group (a tenant, an account): waiting jobs of different groups take turns
    group: str | None = None

    def __post_init__(self) -> None:
        # job_id's full rule is checked at enqueue (Queue.check_job_id, InvalidJobId)
        if self.job_id is not None and not isinstance(self.job_id, str):
            raise ConfigurationError(f"job_id must be a str, not {type(self.job_id).__name__}")
        if self.delay_s is not None and self.run_at is not None:
            raise ConfigurationError("give delay_s or run_at, not both")
        if self.delay_s is not None:
            _check_range("delay_s", self.delay_s, 0, MAX_DURATION_S)
        if self.run_at is not None:
            _check_run_at(self.run_at)
        if self.priority is not None:
            _check_int("priority", self.priority, PRIORITY_MIN, PRIORITY_MAX)
        if self.attempts is not None:
            _check_int("attempts", self.attempts, 1, MAX_ATTEMPTS)
        if self.backoff is not None and not isinstance(
            self.backoff, FixedBackoff | ExponentialBackoff
        ):
            raise ConfigurationError(
                "backoff must be a FixedBackoff or an ExponentialBackoff (a callable goes to"
                f" @task(backoff=...)), not {type(self.backoff).__name__}"
            )
        if self.timeout_s is not None:
            _check_range("timeout_s", self.timeout_s, 0.001, MAX_DURATION_S)
        if self.retention is not None and not isinstance(self.retention, Retention):
            raise ConfigurationError(
                f"retention must be a Retention, not {type(self.retention).__name__}"
            )
        if self.dedup_key is not None:
            if not isinstance(self.dedup_key, str) or not 1 <= len(self.dedup_key) <= 200:
                raise ConfigurationError("dedup_key must be a str of 1-200 characters")
            if self.dedup_ttl_s is None:
                raise ConfigurationError("dedup_key needs dedup_ttl_s: the window's length")
        if self.dedup_ttl_s is not None:
            _check_range("dedup_ttl_s", self.dedup_ttl_s, 0.001, MAX_DURATION_S)
        if self.debounce is not None and not isinstance(self.debounce, bool):
            raise ConfigurationError("debounce must be a bool")
        if self.expires_s is not None:
            _check_range("expires_s", self.expires_s, 0.001, MAX_DURATION_S)
        if self.group is not None and (not isinstance(self.group, str)
                                       or not 1 <= len(self.group.encode()) <= 200):
            raise ConfigurationError("group must be a str of 1-200 bytes")

    def merged_over(self, base: JobOptions) -> JobOptions:
        """These options, with every unset field taken from ``base``."""
        if base == _EMPTY:  # the common case on the enqueue path: nothing to merge
            return self
        if self == _EMPTY:
            return base
        fields = {f: getattr(self, f) for f in self.__struct_fields__}
        for f, value in fields.items():
            if value is None:
                fields[f] = getattr(base, f)
        return JobOptions(**fields)


_EMPTY = JobOptions()


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _check_range(name: str, value: Any, low: float, high: float) -> None:
    """A finite number (int or float, not bool) from ``low`` to ``high``."""
    # NaN fails the comparison and the bounds are finite, so this refuses nan and inf too
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigurationError(
            f"{name} must be a finite number from {_num(low)} to {_num(high)},"
            f" got {_shown(value)}"
        )


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    """An ``int`` (not bool, not float) from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(
            f"{name} must be an integer from {low} to {high}, got {_shown(value)}"
        )


def _check_run_at(run_at: Any) -> None:
    """A timezone-aware datetime at most :data:`MAX_DURATION_S` ahead of this machine's clock."""
    if not isinstance(run_at, datetime) or run_at.utcoffset() is None:
        raise ConfigurationError(
            "run_at must be a timezone-aware datetime (e.g. datetime.now(UTC)), got"
            f" {_shown(run_at)}"
        )
    if run_at.timestamp() > time.time() + MAX_DURATION_S:
        raise ConfigurationError(
            f"run_at must be at most ten years ({_num(MAX_DURATION_S)} s) from now,"
            f" got {run_at.isoformat()}"
        )
