"""The one rule for retrying a failed node or task: :func:`threadline.runtime.retry.retry_delay`."""

from __future__ import annotations

from threadline.errors import mark_invalid_resume
from threadline.runtime.retry import retry_delay
from threadline.types import RetryPolicy


def test_the_first_policy_that_retries_the_error_decides() -> None:
    on_value = RetryPolicy(max_attempts=2, initial_interval=1.0, jitter=False, retry_on=ValueError)
    on_key = RetryPolicy(max_attempts=4, initial_interval=0.5, backoff_factor=3.0, jitter=False,
                         retry_on=KeyError)  # fmt: skip
    # One policy, several (the first that retries the error), or none.
    assert retry_delay(on_value, 1, ValueError()) == 1.0
    assert retry_delay((on_value, on_key), 1, ValueError()) == 1.0
    assert retry_delay((on_value, on_key), 2, KeyError()) == 1.5
    assert retry_delay(None, 1, ValueError()) is None
    assert retry_delay((), 1, ValueError()) is None
    # An error no policy retries; attempts used up under the policy that retries it (a later
    # policy that would retry it too is not asked).
    assert retry_delay((on_value, on_key), 1, TypeError()) is None
    assert retry_delay(on_value, 2, ValueError()) is None
    assert retry_delay((on_value, RetryPolicy(max_attempts=9, retry_on=ValueError)), 2,
                       ValueError()) is None  # fmt: skip
    assert retry_delay((on_value, on_key), 4, KeyError()) is None
    # An answer an interrupt's response_schema rejected is never retried: it would fail again.
    rejected = ValueError("not an answer")
    mark_invalid_resume(rejected, "interrupt-id")
    assert retry_delay(on_value, 1, rejected) is None
    assert retry_delay((on_value,), 1, rejected) is None
