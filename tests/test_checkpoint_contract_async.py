"""The checkpointer contract on every async backend, through its ``a*`` methods.

The tests themselves live in ``test_checkpoint_contract.py`` (:class:`CheckpointerContract`);
this module only supplies async savers to them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from backends import Backend, Driver
from test_checkpoint_contract import CheckpointerContract, MakeDriver

from threadline.checkpoint.base import BaseCheckpointSaver


class TestAsyncContract(CheckpointerContract):
    """The contract on every async backend."""

    @pytest.fixture
    def make_cp(
        self,
        amake_saver: Callable[..., Awaitable[BaseCheckpointSaver]],
        async_backend: Backend,
    ) -> MakeDriver:
        async def make(**options: Any) -> Driver:
            return Driver(await amake_saver(**options), async_backend)

        return make
