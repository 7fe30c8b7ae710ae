"""``@task``: a function whose calls inside an entrypoint (or a node) run in parallel and are
checkpointed once finished (see ``threadline.runtime.tasks``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, overload

from ..runtime.tasks import TaskFunction
from ..types import RetryPolicy

__all__ = ["task"]


@overload
def task(
    __func_or_none__: None = None,
    *,
    name: str | None = None,
    retry_policy: RetryPolicy | Sequence[RetryPolicy] | None = None,
    cache_policy: Any = None,
    timeout: Any = None,
) -> Callable[[Callable[..., Any]], TaskFunction[Any]]: ...


@overload
def task(__func_or_none__: Callable[..., Any]) -> TaskFunction[Any]: ...


def task(
    __func_or_none__: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    retry_policy: RetryPolicy | Sequence[RetryPolicy] | None = None,
    cache_policy: Any = None,
    timeout: Any = None,
) -> Callable[[Callable[..., Any]], TaskFunction[Any]] | TaskFunction[Any]:
    """Make ``func`` a task: calling it inside an ``@entrypoint`` function, another task or a
    running graph node returns a future (``.result()``, or ``await`` for async tasks).

    Args:
        name: the task's name in streams (default: the function's name).
        retry_policy: a ``RetryPolicy`` (or several: the first that matches the error applies).
        cache_policy: reuse results for equal arguments, in the entrypoint's ``cache``.
        timeout: seconds (or a ``timedelta``, or a ``TimeoutPolicy`` with ``run_timeout``) an
            attempt of an async task may take; then ``NodeTimeoutError`` (retryable).
    """
    policies: Sequence[RetryPolicy] = (
        ()
        if retry_policy is None
        else (retry_policy,)
        if isinstance(retry_policy, RetryPolicy)
        else tuple(retry_policy)
    )

    def decorate(func: Callable[..., Any]) -> TaskFunction[Any]:
        return TaskFunction(
            func, name=name, retry_policy=policies, cache_policy=cache_policy, timeout=timeout
        )

    if __func_or_none__ is not None:
        return decorate(__func_or_none__)
    return decorate
