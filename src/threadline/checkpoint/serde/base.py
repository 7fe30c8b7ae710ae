"""LangGraph's ``langgraph.checkpoint.serde.base`` names, for programs that import them.

threadline's savers depend on :class:`threadline.checkpoint.serde.Serializer` (``dumps`` /
``loads``); :class:`SerializerProtocol` is LangGraph's typed protocol, which
:class:`~threadline.checkpoint.serde.MsgpackSerializer` (and so
:class:`~threadline.checkpoint.serde.jsonplus.JsonPlusSerializer`) also implements.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from . import Serializer

__all__ = ["CipherProtocol", "Serializer", "SerializerProtocol", "UntypedSerializerProtocol"]


@runtime_checkable
class UntypedSerializerProtocol(Protocol):
    """A serializer with ``dumps``/``loads`` only."""

    def dumps(self, obj: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


@runtime_checkable
class SerializerProtocol(Protocol):
    """A serializer that tags each value with its format: ``(type tag, bytes)``."""

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]: ...

    def loads_typed(self, data: tuple[str, bytes]) -> Any: ...


@runtime_checkable
class CipherProtocol(Protocol):
    """LangGraph's cipher interface. threadline's savers do not take one: encryption is
    built into the serializer (``MsgpackSerializer(encryption_key=...)``)."""

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]: ...

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes: ...
