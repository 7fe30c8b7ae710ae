"""``EncryptedSerializer`` under LangGraph's import path, mapped onto threadline's encryption.

threadline encrypts inside its own frames (AES-256-GCM, each value bound to the row it is
stored in; see :class:`~threadline.checkpoint.serde.MsgpackSerializer`), so
:meth:`EncryptedSerializer.from_pycryptodome_aes` returns a serializer with that encryption
(no pycryptodome needed; ``threadline[crypto]`` is). The key is ``key=`` or, as in LangGraph,
the ``LANGGRAPH_AES_KEY`` environment variable (its UTF-8 bytes); it must be 32 bytes long
(AES-256): 16- and 24-byte keys are refused. Wrapping a custom cipher
(``EncryptedSerializer(cipher, serde)``) is not supported.
"""

from __future__ import annotations

import os
from typing import Any

from ...errors import SerializationError
from .jsonplus import JsonPlusSerializer

__all__ = ["EncryptedSerializer"]


class EncryptedSerializer(JsonPlusSerializer):
    """A :class:`JsonPlusSerializer` that encrypts every value it writes."""

    def __init__(self, cipher: Any = None, serde: Any = None, **kwargs: Any) -> None:
        if cipher is not None or serde is not None:
            raise SerializationError(
                "EncryptedSerializer(cipher, serde) is not supported: threadline encrypts with"
                " its own AES-256-GCM. Use EncryptedSerializer.from_pycryptodome_aes(key=...)"
                " or MsgpackSerializer(encryption_key=...)"
            )
        if kwargs.get("encryption_key") is None:
            raise SerializationError(
                "EncryptedSerializer needs a key: use"
                " EncryptedSerializer.from_pycryptodome_aes(key=...)"
            )
        super().__init__(**kwargs)

    @classmethod
    def from_pycryptodome_aes(cls, serde: Any = None, **kwargs: Any) -> EncryptedSerializer:
        """An encrypting serializer keyed by ``key=`` or ``LANGGRAPH_AES_KEY``.

        ``serde`` may be a threadline :class:`JsonPlusSerializer` (its type registry is kept)
        or None. ``mode=`` other than None is refused (the mode is always GCM)."""
        if "key" in kwargs:
            key = kwargs.pop("key")
        else:
            env = os.getenv("LANGGRAPH_AES_KEY")
            if env is None:
                raise ValueError("LANGGRAPH_AES_KEY environment variable is not set.")
            key = env.encode()
        if kwargs.pop("mode", None) is not None:
            raise SerializationError(
                "from_pycryptodome_aes(mode=...) is not supported: threadline always uses"
                " AES-256-GCM"
            )
        if kwargs:
            raise SerializationError(
                f"from_pycryptodome_aes() does not take {', '.join(sorted(kwargs))}"
            )
        if isinstance(key, str):
            key = key.encode()
        if not isinstance(key, bytes) or len(key) != 32:
            size = len(key) if isinstance(key, bytes) else type(key).__name__
            raise SerializationError(
                f"threadline encrypts with AES-256: the key must be 32 bytes, got {size}"
            )
        registry = serde.registry if isinstance(serde, JsonPlusSerializer) else None
        if serde is not None and registry is None:
            raise SerializationError(
                "from_pycryptodome_aes(serde=...) takes a threadline JsonPlusSerializer or None"
            )
        return cls(encryption_key=key, registry=registry)
