"""Find the classes a type annotation names, to register them with the serializer.

A stored value names its type, and loading resolves that name only against registered
classes (docs/security.md). So that users need not register the types their state schema
already names, ``StateGraph.compile()`` walks the schema's annotations with
:func:`register_annotation_types`: through ``Annotated``, ``Optional`` and unions, the
arguments of ``list``/``dict``/``tuple``/``set``/``Sequence``..., ``Required``/``NotRequired``/
``ReadOnly``, the fields of TypedDicts, dataclasses and pydantic models, recursively.
Dataclasses, Enums and pydantic models found are registered; nothing is imported.

Generic typing code: it knows nothing of graphs, so the checkpoint layer may hold it.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import typing
from collections.abc import Iterator
from typing import Any

from typing_extensions import get_type_hints, is_typeddict

from .serde import TypeRegistry, default_registry

__all__ = ["annotation_types", "register_annotation_types", "register_schema_types"]

_MAX_TYPES = 10_000  # a schema naming more is not written by hand; stop rather than crawl


def annotation_types(annotation: Any) -> list[type]:
    """The dataclasses, Enums and pydantic models ``annotation`` names, outermost first."""
    found: list[type] = []
    seen: set[int] = set()
    stack: list[Any] = [annotation]
    while stack and len(seen) < _MAX_TYPES:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, type) and _storable_class(node):
            found.append(node)
        stack.extend(reversed(list(_inner(node))))
    return found


def register_annotation_types(annotation: Any, registry: TypeRegistry | None = None) -> list[type]:
    """Register on ``registry`` (default: the default registry) every dataclass, Enum and
    pydantic model ``annotation`` names. Returns the classes registered (or already there)."""
    target = registry if registry is not None else default_registry
    return [cls for cls in annotation_types(annotation) if target.ensure(cls)]


def register_schema_types(schema: Any, serde: object = None) -> None:
    """Register what a state schema names: on the default registry (the one every default
    serializer reads with, whichever saver) and on ``serde``'s own registry if it has another.
    """
    types = register_annotation_types(schema)
    own = getattr(serde, "registry", None)
    if isinstance(own, TypeRegistry) and own is not default_registry:
        for cls in types:
            own.ensure(cls)


def _storable_class(cls: type) -> bool:
    if issubclass(cls, enum.Enum) or dataclasses.is_dataclass(cls):
        return True
    base = _pydantic_base()
    return base is not None and issubclass(cls, base) and cls is not base


def _pydantic_base() -> type | None:
    module = sys.modules.get("pydantic")
    base = getattr(module, "BaseModel", None) if module is not None else None
    return base if isinstance(base, type) else None


def _inner(node: Any) -> Iterator[Any]:
    """What ``node`` refers to: type arguments, metadata-free ``Annotated`` bases, fields."""
    if isinstance(node, str) or node is None or node is Any:
        return  # forward references that were not resolved: nothing to follow safely
    if isinstance(node, typing.TypeVar):
        if node.__bound__ is not None:
            yield node.__bound__
        yield from node.__constraints__
        return
    origin = typing.get_origin(node)
    if origin is not None:
        # Annotated[T, ...]: its args are T, then metadata (reducers...) not to follow.
        if origin is not typing.Annotated and isinstance(origin, type):
            yield origin
        args = typing.get_args(node)
        yield from (args[:1] if origin is typing.Annotated else args)
        return
    if not isinstance(node, type):
        return
    if is_typeddict(node) or dataclasses.is_dataclass(node):
        yield from _field_hints(node)
        return
    base = _pydantic_base()
    if base is not None and issubclass(node, base):
        for info in getattr(node, "model_fields", {}).values():
            yield info.annotation


def _field_hints(cls: type) -> list[Any]:
    try:
        hints = get_type_hints(cls, include_extras=True)
    except Exception:  # unresolvable forward references: keep what resolves
        hints = dict(getattr(cls, "__annotations__", {}))
    return list(hints.values())
