"""``JsonPlusSerializer`` under LangGraph's import path, mapped onto threadline's serializer.

``from threadline.checkpoint.serde.jsonplus import JsonPlusSerializer`` gives a
:class:`~threadline.checkpoint.serde.MsgpackSerializer`: the same safe format (never pickle;
loading never imports a class a stored value names), with LangGraph's constructor arguments
mapped onto it:

* ``pickle_fallback=True`` is refused (threadline never pickles);
* ``allowed_msgpack_modules``: classes (or ``(module, name)`` pairs) in it are registered
  (:func:`~threadline.checkpoint.serde.register_type`), so they can be stored and read back;
  ``None`` and ``True`` are accepted and change nothing (unregistered classes are refused
  either way);
* ``allowed_json_modules`` is accepted and ignored: LangGraph's ``"json"`` values are read
  back only for standard types, messages and registered classes (see ``_lgjson``);
* ``__unpack_ext_hook__`` is refused.

``dumps_typed``/``loads_typed`` work (:meth:`MsgpackSerializer.dumps_typed`) with LangGraph's
tags (``"null"``, ``"bytes"``, ``"bytearray"`` as LangGraph writes them, ``"msgpack"`` in
threadline's format, not LangGraph's); ``loads_typed`` also reads LangGraph's ``"json"`` pairs.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any, Literal

from ...errors import SerializationError
from . import EncryptionKeys, MsgpackSerializer, TypeRegistry

__all__ = ["JsonPlusSerializer"]

AllowedModules = Iterable[tuple[str, ...] | type]


class JsonPlusSerializer(MsgpackSerializer):
    """threadline's :class:`MsgpackSerializer`, constructed with LangGraph's arguments."""

    def __init__(
        self,
        *,
        pickle_fallback: bool = False,
        allowed_json_modules: Iterable[tuple[str, ...]] | Literal[True] | None = None,
        allowed_msgpack_modules: AllowedModules | Literal[True] | None = None,
        registry: TypeRegistry | None = None,
        compression: Literal["zlib", "zstd"] | None = "zlib",
        encryption_key: EncryptionKeys | None = None,
        allow_plaintext: bool = False,
        **kwargs: Any,
    ) -> None:
        if pickle_fallback:
            raise SerializationError(
                "JsonPlusSerializer(pickle_fallback=True) is not supported: threadline's"
                " serializer never pickles (stored rows are untrusted input). Make the values"
                " dataclasses, Enums or pydantic models, or register the types with"
                " threadline.checkpoint.serde.register_type(cls, encode=..., decode=...)"
            )
        if "__unpack_ext_hook__" in kwargs:
            raise SerializationError(
                "JsonPlusSerializer(__unpack_ext_hook__=...) is not supported: register the"
                " type with threadline.checkpoint.serde.register_type(cls, encode=...,"
                " decode=...) instead"
            )
        super().__init__(
            registry=registry,
            compression=compression,
            encryption_key=encryption_key,
            allow_plaintext=allow_plaintext,
            **kwargs,
        )
        self.pickle_fallback = False
        del allowed_json_modules  # "json" values only build known or registered types
        if allowed_msgpack_modules is not None and allowed_msgpack_modules is not True:
            self._allow(allowed_msgpack_modules)

    def with_msgpack_allowlist(self, extra_allowlist: AllowedModules) -> JsonPlusSerializer:
        """Register the classes in ``extra_allowlist``; returns this serializer."""
        self._allow(extra_allowlist)
        return self

    def _allow(self, allowlist: AllowedModules) -> None:
        registry = self.registry
        for item in allowlist:
            cls = item if isinstance(item, type) else _resolve(item)
            if cls in registry or registry.ensure(cls):
                continue
            raise SerializationError(
                f"cannot allow {cls.__module__}.{cls.__qualname__}: only dataclasses, Enums"
                " and pydantic models are registered by name; register it with"
                " threadline.checkpoint.serde.register_type(cls, encode=..., decode=...)"
            )


def _resolve(item: Any) -> type:
    """The class an allowlist entry ``(module, name)`` names (this is program configuration,
    never data read from a saver)."""
    if (
        not isinstance(item, tuple)
        or len(item) < 2
        or not all(isinstance(part, str) for part in item)
    ):
        raise SerializationError(
            f"allowed_msgpack_modules entries are classes or (module, name) tuples, got {item!r}"
        )
    target: Any = importlib.import_module(item[0])
    for part in item[1:]:
        target = getattr(target, part, None)
    if not isinstance(target, type):
        raise SerializationError(f"allowed_msgpack_modules entry {item!r} does not name a class")
    return target
