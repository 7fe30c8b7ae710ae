"""Fixtures shared by the whole test suite.

Savers, parametrized over :data:`backends.BACKENDS` (test ids are the backend names):

- ``saver`` / ``asaver``: a fresh, isolated sync / async saver, closed after the test.
- ``make_saver(**options)`` / ``await amake_saver(**options)``: more savers of the same
  backend with saver options (``ttl=0.2``, ``serde=...``), each fresh and closed after the test.
- ``sync_backend`` / ``async_backend``: the :class:`backends.Backend` in use.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from backends import Backend, backend_params

from threadline.checkpoint.base import BaseCheckpointSaver


@pytest.fixture(params=backend_params(is_async=False))
def sync_backend(request: pytest.FixtureRequest) -> Backend:
    backend: Backend = request.param
    backend.require()
    return backend


@pytest.fixture(params=backend_params(is_async=True))
def async_backend(request: pytest.FixtureRequest) -> Backend:
    backend: Backend = request.param
    backend.require()
    return backend


@pytest.fixture
def make_saver(sync_backend: Backend) -> Iterator[Callable[..., BaseCheckpointSaver]]:
    """``make_saver(**options)``: a fresh sync saver of the backend under test."""
    with contextlib.ExitStack() as stack:

        def make(**options: Any) -> BaseCheckpointSaver:
            saver: BaseCheckpointSaver = stack.enter_context(sync_backend.factory(**options))
            return saver

        yield make


@pytest.fixture
async def amake_saver(
    async_backend: Backend,
) -> AsyncIterator[Callable[..., Awaitable[BaseCheckpointSaver]]]:
    """``await amake_saver(**options)``: a fresh async saver of the backend under test."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(**options: Any) -> BaseCheckpointSaver:
            saver: BaseCheckpointSaver = await stack.enter_async_context(
                async_backend.factory(**options)
            )
            return saver

        yield make


@pytest.fixture
def saver(make_saver: Callable[..., BaseCheckpointSaver]) -> BaseCheckpointSaver:
    """A fresh, isolated sync saver with default options."""
    return make_saver()


@pytest.fixture
async def asaver(
    amake_saver: Callable[..., Awaitable[BaseCheckpointSaver]],
) -> BaseCheckpointSaver:
    """A fresh, isolated async saver with default options."""
    return await amake_saver()
