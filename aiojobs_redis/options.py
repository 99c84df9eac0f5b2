"""Frozen, keyword-only option Structs. Units are in the names."""

from __future__ import annotations

from datetime import datetime

import msgspec

from .errors import ConfigurationError

PRIORITY_MIN = -1000
PRIORITY_MAX = 1000
MAX_JOB_ID_LENGTH = 200


class FixedBackoff(msgspec.Struct, frozen=True, kw_only=True, tag="fixed"):
    """Wait the same time before every retry."""

    delay_s: float = 1.0
    jitter: float = 0.0  # 0..1: the delay is reduced by up to this fraction, at random

    def __post_init__(self) -> None:
        _check_range("FixedBackoff.delay_s", self.delay_s, 0, None)
        _check_range("FixedBackoff.jitter", self.jitter, 0, 1)


class ExponentialBackoff(msgspec.Struct, frozen=True, kw_only=True, tag="exponential"):
    """``base_s * factor ** (attempt - 1)``, capped at ``max_s``, with optional jitter."""

    base_s: float = 1.0
    factor: float = 2.0
    max_s: float = 3600.0
    jitter: float = 0.5  # 0..1: the delay is reduced by up to this fraction, at random

    def __post_init__(self) -> None:
        _check_range("ExponentialBackoff.base_s", self.base_s, 0, None)
        _check_range("ExponentialBackoff.factor", self.factor, 1, None)
        _check_range("ExponentialBackoff.max_s", self.max_s, 0, None)
        _check_range("ExponentialBackoff.jitter", self.jitter, 0, 1)


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
                _check_range(f"Retention.{name}", value, 0, None)
        for name in ("completed_age_s", "failed_age_s"):
            value = getattr(self, name)
            if value is not None:
                _check_range(f"Retention.{name}", value, 0.001, None)
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

    def __post_init__(self) -> None:
        if self.delay_s is not None and self.run_at is not None:
            raise ConfigurationError("give delay_s or run_at, not both")
        if self.delay_s is not None:
            _check_range("delay_s", self.delay_s, 0, None)
        if self.run_at is not None and self.run_at.tzinfo is None:
            raise ConfigurationError("run_at must be timezone-aware (e.g. datetime.now(UTC))")
        if self.priority is not None:
            _check_range("priority", self.priority, PRIORITY_MIN, PRIORITY_MAX)
        if self.attempts is not None:
            _check_range("attempts", self.attempts, 1, None)
        if self.timeout_s is not None:
            _check_range("timeout_s", self.timeout_s, 0.001, None)

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


def _check_range(name: str, value: float, low: float | None, high: float | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number, not {type(value).__name__}")
    if value != value:  # NaN
        raise ConfigurationError(f"{name} must be a number, not NaN")
    if low is not None and value < low:
        raise ConfigurationError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ConfigurationError(f"{name} must be <= {high}, got {value}")
