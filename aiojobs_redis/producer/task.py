"""Tasks: registered Python callables with a stable name and default job options."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, cast, overload

from ..backoff import BackoffFunction
from ..errors import ConfigurationError, TaskNotFound
from ..keys import validate_queue_name
from ..options import Backoff, ExponentialBackoff, FixedBackoff, JobOptions, Retention

P = ParamSpec("P")
R = TypeVar("R")


class Task(Generic[P, R]):
    """A function that can run as a job. Make one with :func:`task`.

    Calling the task runs the function directly; :meth:`call` describes a job for
    :meth:`Queue.enqueue_many`; :meth:`options` gives the same task with other defaults.
    """

    __slots__ = ("backoff_fn", "dead_letter", "defaults", "fn", "good_shapes", "is_async", "name",
                 "signature")

    def __init__(
        self,
        fn: Callable[P, Any],
        *,
        name: str,
        defaults: JobOptions,
        backoff_fn: BackoffFunction | None = None,
        dead_letter: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ConfigurationError(f"invalid task name {name!r}: 1 to 200 characters")
        if not isinstance(defaults, JobOptions):
            raise ConfigurationError(f"defaults must be JobOptions, not {type(defaults).__name__}")
        self.fn = fn
        self.name = name
        self.defaults = defaults
        self.backoff_fn = backoff_fn
        #: the queue this task's jobs go to once failed for good (before the queue's own)
        self.dead_letter = None if dead_letter is None else validate_queue_name(dead_letter)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        self.good_shapes: set[Hashable] = set()

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def call(self, *args: P.args, **kwargs: P.kwargs) -> TaskCall[R]:
        """Describe one job of this task, for :meth:`Queue.enqueue_many`."""
        return TaskCall(self.name, args, kwargs, self.defaults, self)

    def fed(self, *args: Any, **kwargs: Any) -> TaskCall[R]:
        """Describe a step of a flow that is fed the results of the jobs it waits for
        (``feed=`` of :meth:`Flow.add`, :func:`chain`, :func:`chord`): the arguments
        after that first one. They are checked when the step is added to the flow."""
        return TaskCall(self.name, args, kwargs, self.defaults, self)

    def options(self, **options: Any) -> Task[P, R]:
        """The same task with other default job options, e.g. ``send.options(delay_s=5)``.

        An unknown option is a TypeError, a bad value a ConfigurationError (JobOptions)."""
        changed = JobOptions(**options).merged_over(self.defaults)
        return Task(self.fn, name=self.name, defaults=changed, backoff_fn=self.backoff_fn,
                    dead_letter=self.dead_letter)

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise TypeError at once when the arguments do not fit the function.

        Whether arguments bind depends only on how many are positional and which
        names are given, so shapes that bound once are remembered.
        """
        shape = (len(args), *kwargs) if kwargs else len(args)
        if shape in self.good_shapes:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"task {self.name!r}: {e}") from None
        if len(self.good_shapes) < 64:
            self.good_shapes.add(shape)


class TaskCall(Generic[R]):
    """One job to enqueue: a task (or its name), arguments, options."""

    __slots__ = ("args", "kwargs", "name", "options", "task")

    def __init__(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: JobOptions | None = None,
        task: Task[Any, R] | None = None,
    ) -> None:
        if options is not None and not isinstance(options, JobOptions):
            raise ConfigurationError(f"options must be JobOptions, not {type(options).__name__}")
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.options = options or JobOptions()
        self.task = task

    @classmethod
    def by_name(
        cls, name: str, *args: Any, options: JobOptions | None = None, **kwargs: Any
    ) -> TaskCall[Any]:
        """A job of a task known only by name (for producers that cannot import it)."""
        return cls(name, args, kwargs, options)

    def with_options(self, options: JobOptions) -> TaskCall[R]:
        return TaskCall(self.name, self.args, self.kwargs, options.merged_over(self.options),
                        self.task)


class TaskDecorator(Protocol):
    """What ``@task(...)`` returns: turns a function into a :class:`Task`."""

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(fn: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...
@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    *,
    name: str | None = None,
    attempts: int | None = None,
    backoff: Backoff | BackoffFunction | None = None,
    timeout_s: float | None = None,
    priority: int | None = None,
    retention: Retention | None = None,
    dead_letter: str | None = None,
) -> TaskDecorator: ...
def task(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    attempts: int | None = None,
    backoff: Backoff | BackoffFunction | None = None,
    timeout_s: float | None = None,
    priority: int | None = None,
    retention: Retention | None = None,
    dead_letter: str | None = None,
) -> Any:
    """Make a function a task. ``@task`` or ``@task(name=..., attempts=3, ...)``.

    The name defaults to the function's qualified name (``module.qualname``). A sync
    function runs in a worker thread. ``backoff`` may be a :class:`FixedBackoff`,
    an :class:`ExponentialBackoff` or a callable ``attempt -> seconds``.
    ``dead_letter``: the name of a queue (on the worker's Redis) that this task's jobs
    move to once failed for good, in place of the queue's own ``dead_letter``.
    """

    def wrap(f: Callable[..., Any]) -> Task[Any, Any]:
        if isinstance(f, Task):
            raise ConfigurationError(f"{f!r} is a task already")
        if not callable(f):
            raise ConfigurationError(f"@task needs a function, got {type(f).__name__}")
        if isinstance(backoff, type):
            raise ConfigurationError(
                f"@task(backoff=...) needs an instance such as {backoff.__name__}(), not the class"
            )
        backoff_fn = backoff if callable(backoff) else None
        struct_backoff = None if backoff_fn is not None else backoff
        if struct_backoff is not None and not isinstance(
            struct_backoff, FixedBackoff | ExponentialBackoff
        ):
            raise ConfigurationError(
                "@task(backoff=...) must be a FixedBackoff, an ExponentialBackoff or a callable"
                f" attempt -> seconds, not {type(struct_backoff).__name__}"
            )
        # JobOptions checks the types and ranges (ConfigurationError naming the option)
        defaults = JobOptions(attempts=attempts, backoff=struct_backoff,
                              timeout_s=timeout_s, priority=priority, retention=retention)
        return Task(f, name=name or f"{f.__module__}.{f.__qualname__}", defaults=defaults,
                    backoff_fn=backoff_fn, dead_letter=dead_letter)

    if fn is not None:
        return wrap(fn)
    return cast(TaskDecorator, wrap)


class TaskRegistry:
    """Tasks of a worker, by name."""

    def __init__(self, tasks: Iterable[Task[Any, Any]]) -> None:
        self._tasks: dict[str, Task[Any, Any]] = {}
        for t in tasks:
            if not isinstance(t, Task):
                raise ConfigurationError(
                    f"{t!r} is not a task: decorate it with @aiojobs_redis.task"
                )
            if t.name in self._tasks and self._tasks[t.name].fn is not t.fn:
                raise ConfigurationError(f"two different tasks are named {t.name!r}")
            self._tasks[t.name] = t

    def get(self, name: str) -> Task[Any, Any]:
        try:
            return self._tasks[name]
        except KeyError:
            raise TaskNotFound(name) from None

    def __contains__(self, name: str) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def names(self) -> list[str]:
        return sorted(self._tasks)
