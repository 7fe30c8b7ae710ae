"""``@task`` calls: made inside a running node, run in parallel, their results durable.

A call's key is its position among the calls made under one context: ``"0"``, ``"1"``, ... in
the node itself, ``"1.0"`` for the first call made inside call ``"1"``. The node's task owns
every result: a finished call is saved at once as a pending write of task id
``"<node task id>.<key>"`` against the checkpoint the node runs from (``core.CALL``), so a rerun
of the node (after an interrupt, a failure or a crash) gets the saved result back instead of
calling the function again. Call order must therefore be deterministic, as LangGraph requires.

Sync calls run on a thread pool owned by the node's execution (closed, after waiting for what
is still running, when the node ends); async calls run as tasks of the run's event loop.

In stream modes ``tasks`` and ``debug`` a call is a task of its own, as in LangGraph: it starts
(id ``"<node task id>.<key>"``, input ``(args, kwargs)``, trigger ``__pregel_push``) whenever
it is called, a saved result replayed included, and ends with ``{"__return__": value}`` or its
error once it ran (a cache hit or a question asked with ``interrupt()`` sends no end).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import datetime
import hashlib
import inspect
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .._copy import private_copy
from ..errors import GraphBubbleUp, NodeTimeoutError, ThreadlineError
from ..types import RetryPolicy
from .context import TaskContext, enter, leave, running_task
from .retry import retry_delay
from .task_events import task_result, task_start

__all__ = [
    "AsyncTaskFuture",
    "CallScope",
    "TaskFunction",
    "TaskFuture",
    "aclose_scope",
    "close_scope",
]

T = TypeVar("T")

MAX_WORKERS = 32
_CACHE_NS = "__threadline_task__"


class TaskFuture(concurrent.futures.Future[T]):
    """What calling a task from sync code returns: a ``concurrent.futures.Future``
    (``.result()`` waits for it) that async code may also ``await``."""

    @classmethod
    def of(cls, value: T) -> TaskFuture[T]:
        done: TaskFuture[T] = cls()
        done.set_result(value)
        return done

    def __await__(self) -> Generator[Any, None, T]:
        return asyncio.wrap_future(self).__await__()


class AsyncTaskFuture(asyncio.Task[T]):
    """What calling a task from async code returns: an ``asyncio.Task`` to ``await`` (or pass
    to ``asyncio.gather``), whose ``.result()`` says so when called too early."""

    def result(self) -> T:
        if not self.done():
            raise ThreadlineError(
                "the result of a task started from async code is not ready: await the future"
                " (`await my_task(...)`, or asyncio.gather(...)) instead of calling .result()"
            )
        return super().result()


class TaskFunction(Generic[T]):
    """A function decorated with ``@task``: calling it inside a running entrypoint or node
    starts it (once: a saved result is reused) and returns a :class:`TaskFuture`."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None,
        retry_policy: Sequence[RetryPolicy],
        cache_policy: Any,
        timeout: Any = None,
    ) -> None:
        self.func = func
        self.name: str = name or str(getattr(func, "__name__", type(func).__name__))
        self.retry_policy = tuple(retry_policy)
        self.cache_policy = cache_policy
        self.is_async = inspect.iscoroutinefunction(func)
        self.timeout = timeout_seconds(timeout, f"task {self.name!r}", is_async=self.is_async)
        self.__name__ = self.name
        self.__doc__ = getattr(func, "__doc__", None)
        self.__wrapped__ = func

    def __call__(self, *args: Any, **kwargs: Any) -> TaskFuture[T] | AsyncTaskFuture[T]:
        ctx = running_task()
        if ctx is None:
            raise ThreadlineError(
                f"task {self.name!r} was called outside a running entrypoint or graph node."
                " Call tasks inside an @entrypoint function, another task, or a node while the"
                " graph runs"
            )
        future: TaskFuture[T] | AsyncTaskFuture[T] = scope_of(ctx).call(self, args, kwargs)
        return future

    def cache_namespace(self) -> tuple[str, ...]:
        module = getattr(self.func, "__module__", None) or "?"
        qualname = getattr(self.func, "__qualname__", None) or self.name
        return (_CACHE_NS, f"{module}.{qualname}")

    def clear_cache(self, cache: Any) -> None:
        """Forget this task's cached results in ``cache``."""
        if self.cache_policy is not None:
            cache.clear([self.cache_namespace()])

    async def aclear_cache(self, cache: Any) -> None:
        """Async :meth:`clear_cache`."""
        if self.cache_policy is not None:
            await cache.aclear([self.cache_namespace()])


@dataclass
class _Call:
    """One call being run: what to call, under which context, and where it reports."""

    fn: TaskFunction[Any]
    key: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    ctx: TaskContext
    cache_key: tuple[tuple[str, ...], str] | None
    report: Callable[[str, dict[str, Any]], None] | None = None  # modes tasks/debug, if any


class CallScope:
    """The ``@task`` calls made under one context (a node, or a call running other calls)."""

    def __init__(self, ctx: TaskContext, prefix: str = "") -> None:
        self.ctx = ctx
        self.prefix = prefix
        self.count = 0
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._running: list[Any] = []

    @property
    def cache(self) -> Any:
        """The run's cache (``compile(cache=...)``, ``entrypoint(cache=...)``), or None."""
        return self.ctx.run_scope.cache

    @property
    def root_id(self) -> str:
        task = self.ctx.task
        return str(task.id) if task is not None else self.ctx.task_id

    def call(self, fn: TaskFunction[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self._lock:
            key = f"{self.prefix}{self.count}"
            self.count += 1
        call_id = f"{self.root_id}.{key}"
        report = None if self.ctx.parent is None else self.ctx.parent.task_event
        if report is not None:
            start = task_start(
                call_id, fn.name, (args, kwargs), ("__pregel_push",), self.ctx.config
            )
            report("task", start)
        saved = self._saved()
        if key in saved:
            return TaskFuture.of(private_copy(saved[key]))
        child = dataclasses.replace(
            self.ctx,
            task_id=call_id,
            node=fn.name,
            calls=0,
            child_calls=0,
            raised=[],
        )
        child.scope = CallScope(child, f"{key}.")
        cache_key = None
        if fn.cache_policy is not None and self.cache is not None:
            raw = fn.cache_policy.key_func(*args, **kwargs)
            digest = hashlib.sha256(raw.encode() if isinstance(raw, str) else raw).hexdigest()
            cache_key = (fn.cache_namespace(), digest)
        job = _Call(fn, key, args, kwargs, child, cache_key, report)
        # The async path only on the run's own event loop: a sync run started from code that
        # happens to run inside a loop (a notebook) keeps to threads.
        loop = _running_loop()
        if loop is not None and loop is self.ctx.loop:
            future: Any = AsyncTaskFuture(self._arun(job, loop), loop=loop)
        elif fn.is_async:
            raise ThreadlineError(
                f"task {fn.name!r} is async, and it was called from sync code; make the"
                " entrypoint (or node) async and run it with ainvoke()/astream()"
            )
        else:
            future = TaskFuture()
            self._executor().submit(contextvars.copy_context().run, self._settle, future, job)
        self._running.append(future)
        return future

    def _settle(self, future: TaskFuture[Any], job: _Call) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(self._run(job))
        except BaseException as exc:
            future.set_exception(exc)

    def _saved(self) -> dict[str, Any]:
        task = self.ctx.task
        return task.calls if task is not None else {}

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    MAX_WORKERS, thread_name_prefix="threadline-task"
                )
            return self._pool

    # ------------------------------------------------------------------ running a call

    def _run(self, job: _Call) -> Any:
        """A sync call, on a worker thread."""
        if job.cache_key is not None:
            hit = self.cache.get([job.cache_key])
            if job.cache_key in hit:
                return self._finished(job, hit[job.cache_key], cached=True)
        token = enter(job.ctx)
        try:
            attempt = 0
            while True:
                attempt += 1
                try:
                    value = job.fn.func(*job.args, **job.kwargs)
                    break
                except GraphBubbleUp:
                    raise  # an interrupt (or a parent command): not the call's failure
                except Exception as exc:
                    delay = retry_delay(job.fn.retry_policy, attempt, exc)
                    if delay is None:
                        _failed(job, exc)
                        raise
                    time.sleep(delay)
        finally:
            close_scope(job.ctx)
            leave(token)
        if job.cache_key is not None:
            self.cache.set({job.cache_key: (value, job.fn.cache_policy.ttl)})
        return self._finished(job, value)

    async def _arun(self, job: _Call, loop: asyncio.AbstractEventLoop) -> Any:
        """A call started from async code: async functions are awaited, sync ones run on the
        scope's threads. Its result is saved from the event loop."""
        if job.cache_key is not None:
            hit = await self.cache.aget([job.cache_key])
            if job.cache_key in hit:
                return await self._afinished(job, hit[job.cache_key], cached=True)
        attempt = 0
        while True:
            attempt += 1
            try:
                value = await self._attempt(job, loop)
                break
            except GraphBubbleUp:
                raise
            except Exception as exc:
                delay = retry_delay(job.fn.retry_policy, attempt, exc)
                if delay is None:
                    _failed(job, exc)
                    raise
                await asyncio.sleep(delay)
        if job.cache_key is not None:
            await self.cache.aset({job.cache_key: (value, job.fn.cache_policy.ttl)})
        return await self._afinished(job, value)

    async def _attempt(self, job: _Call, loop: asyncio.AbstractEventLoop) -> Any:
        if job.fn.is_async:
            token = enter(job.ctx)  # this asyncio task runs in its own copy of the context
            try:
                return await with_timeout(
                    job.fn.func(*job.args, **job.kwargs), job.fn.timeout, f"task {job.fn.name!r}"
                )
            finally:
                await aclose_scope(job.ctx)
                leave(token)
        ctx = contextvars.copy_context()
        return await loop.run_in_executor(self._executor(), ctx.run, self._sync_attempt, job)

    @staticmethod
    def _sync_attempt(job: _Call) -> Any:
        token = enter(job.ctx)
        try:
            value = job.fn.func(*job.args, **job.kwargs)
        finally:
            close_scope(job.ctx)
            leave(token)
        if inspect.isawaitable(value):
            raise ThreadlineError(f"task {job.fn.name!r} returned an awaitable from sync code")
        return value

    def _finished(self, job: _Call, value: Any, *, cached: bool = False) -> Any:
        task, sink = self.ctx.task, _sink(self.ctx)
        if sink is not None and task is not None:
            sink.save_call(task, job.key, value)
        elif task is not None:
            task.calls[job.key] = value
        self._announce(job, value, cached)
        return value

    async def _afinished(self, job: _Call, value: Any, *, cached: bool = False) -> Any:
        task, sink = self.ctx.task, _sink(self.ctx)
        if sink is not None and task is not None:
            await sink.asave_call(task, job.key, value)
        elif task is not None:
            task.calls[job.key] = value
        self._announce(job, value, cached)
        return value

    def _announce(self, job: _Call, value: Any, cached: bool) -> None:
        """Mode updates: ``{name: value}``; then modes tasks/debug: the call's end (a cache
        hit has none, as in LangGraph)."""
        if self.ctx.emit_event is not None:
            update = {job.fn.name: value}
            if cached:
                update["__metadata__"] = {"cached": True}  # as LangGraph marks a cache hit
            self.ctx.emit_event("updates", update)
        if job.report is not None and not cached:
            end = task_result(
                job.ctx.task_id, job.fn.name, writes=[("__return__", value)], error=None,
                interrupts=(),
            )  # fmt: skip
            job.report("task_result", end)

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Wait for the sync calls still running (their results get saved), free the threads."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    async def aclose(self) -> None:
        running = [f for f in self._running if isinstance(f, asyncio.Future)]
        self._running = []
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True)


def timeout_seconds(timeout: Any, what: str, *, is_async: bool) -> float | None:
    """A ``timeout=`` (seconds, a ``timedelta`` or a ``TimeoutPolicy``'s ``run_timeout``) in
    seconds; only async functions can be stopped in the middle."""
    if timeout is None:
        return None
    if hasattr(timeout, "run_timeout"):
        if getattr(timeout, "idle_timeout", None) is not None:
            raise ValueError(
                f"{what}: idle_timeout is not supported (threadline has no heartbeats yet);"
                " give run_timeout, a wall-clock cap per attempt"
            )
        timeout = timeout.run_timeout
        if timeout is None:
            return None
    seconds = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else timeout
    if not is_async:
        raise ValueError(
            f"timeout is supported only for async functions: {what} is sync, and a thread"
            " cannot be stopped safely. Make it async, or drop the timeout"
        )
    if not isinstance(seconds, (int, float)) or seconds <= 0:
        raise ValueError(f"{what}: timeout must be a positive number of seconds, got {timeout!r}")
    return float(seconds)


async def with_timeout(awaitable: Any, seconds: float | None, what: str) -> Any:
    if seconds is None:
        return await awaitable
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        raise NodeTimeoutError(
            f"{what} ran longer than its timeout of {seconds:g}s and was cancelled; raise the"
            " timeout, or give a RetryPolicy to try again"
        ) from None


def scope_of(ctx: TaskContext) -> CallScope:
    """The calls made under ``ctx`` (made on first use)."""
    if ctx.scope is None:
        ctx.scope = CallScope(ctx)
    scope: CallScope = ctx.scope
    return scope


def close_scope(ctx: TaskContext) -> None:
    if ctx.scope is not None:
        ctx.scope.close()


async def aclose_scope(ctx: TaskContext) -> None:
    if ctx.scope is not None:
        await ctx.scope.aclose()


def _failed(job: _Call, exc: Exception) -> None:
    """Modes tasks/debug: the call failed for good (no retry left)."""
    if job.report is not None:
        end = task_result(job.ctx.task_id, job.fn.name, writes=None, error=exc, interrupts=())
        job.report("task_result", end)


def _sink(ctx: TaskContext) -> Any:
    return None if ctx.parent is None else ctx.parent.sink


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
