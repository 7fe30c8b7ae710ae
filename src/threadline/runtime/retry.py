"""When a failed node (graph API) or task (functional API) is tried again."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import is_invalid_resume
from ..types import RetryPolicy

__all__ = ["retry_delay"]


def retry_delay(
    policies: RetryPolicy | Sequence[RetryPolicy] | None, attempt: int, exc: Exception
) -> float | None:
    """Seconds to wait before another attempt after failed attempt ``attempt`` (1-based), or
    None to give up: under the first of ``policies`` that retries ``exc``, while it has
    attempts left. An answer its interrupt's ``response_schema`` rejected is never retried:
    the same answer fails the same way, so the person is asked again instead."""
    if is_invalid_resume(exc):
        return None
    if isinstance(policies, RetryPolicy):
        policies = (policies,)
    for policy in policies or ():
        if policy.should_retry(exc):
            return policy.delay(attempt) if attempt < policy.max_attempts else None
    return None
