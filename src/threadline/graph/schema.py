"""State schemas: a TypedDict, dataclass or pydantic model becomes a set of channels.

A field annotated ``Annotated[T, reducer]`` accumulates (``new = reducer(old, update)``); other
fields keep the last value written.
"""

from __future__ import annotations

import dataclasses
import operator
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import typing_extensions

from .._copy import private_copy
from ..errors import GraphValidationError, InvalidUpdateError

__all__ = ["ChannelSpec", "StateSchema"]

Reducer = Callable[[Any, Any], Any]

# Reducers known to build a new value instead of mutating their first argument: the runtime
# may hand them shared (cached) values without a defensive copy.
PURE_REDUCERS: set[Any] = {operator.add, operator.or_, operator.concat}


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """One state key: its reducer (None: last value wins) and whether appends are deltas."""

    name: str
    reducer: Reducer | None
    pure: bool


class StateSchema:
    """What the runtime needs to know about a state class."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.kind: Literal["typeddict", "dataclass", "pydantic", "dict"] = _kind_of(schema)
        self.channels: dict[str, ChannelSpec] = {}
        for name, annotation in _field_annotations(schema, self.kind).items():
            reducer = _reducer_of(annotation)
            if reducer is not None and not callable(reducer):
                raise GraphValidationError(f"reducer of state key {name!r} is not callable")
            self.channels[name] = ChannelSpec(
                name, reducer, reducer is None or reducer in PURE_REDUCERS
            )
        self.defaults = _defaults_of(schema, self.kind)

    @property
    def name(self) -> str:
        return getattr(self.schema, "__name__", repr(self.schema))

    # ------------------------------------------------------------------ input

    def updates_from(self, value: Any, *, who: str) -> dict[str, Any]:
        """The writes a node's return (or an input) makes: only keys the caller actually set."""
        if value is None:
            return {}
        if isinstance(value, Mapping):
            updates = dict(value)
        elif self.kind == "pydantic" and isinstance(value, self.schema):
            updates = {k: getattr(value, k) for k in value.model_fields_set}
        elif self.kind == "dataclass" and isinstance(value, self.schema):
            updates = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        else:
            raise InvalidUpdateError(
                f"{who} returned {type(value).__name__}; expected a dict of state updates, an"
                f" instance of {self.name}, a Command or None"
            )
        unknown = [k for k in updates if k not in self.channels]
        if unknown and self.kind != "dict":
            raise InvalidUpdateError(
                f"{who} wrote keys that are not in the state schema {self.name}: "
                f"{', '.join(map(repr, unknown))}; known keys: {', '.join(self.channels)}"
            )
        return updates

    def changed_fields(self, value: Any, before: Mapping[str, Any]) -> dict[str, Any]:
        """For a node returning the whole state instance: the fields that differ from its input."""
        updates = self.updates_from(value, who="node")
        return {
            k: v
            for k, v in updates.items()
            if k not in before or (before[k] is not v and before[k] != v)
        }

    # ------------------------------------------------------------------ output

    def node_input(self, values: Mapping[str, Any]) -> Any:
        """A private copy of the state, in the form nodes take."""
        if self.kind in ("typeddict", "dict"):
            return PrivateState(values)
        return self.instance({k: private_copy(v) for k, v in values.items()})

    def instance(self, values: Mapping[str, Any]) -> Any:
        """The state as the caller sees it: a dict, or an instance of the schema."""
        if self.kind in ("typeddict", "dict"):
            return dict(values)
        if self.kind == "pydantic":
            return self.schema.model_construct(**values)
        missing = [k for k in self.channels if k not in values and k not in self.defaults]
        if missing:
            raise InvalidUpdateError(
                f"state {self.name} has no value yet for required field(s)"
                f" {', '.join(map(repr, missing))}; give them in the input or a default"
            )
        return self.schema(**values)

    def output(self, values: Mapping[str, Any]) -> Any:
        """The state handed to callers: private, so mutating it never reaches stored state.

        Dict states copy each value on first read; model states are built from copies.
        """
        if self.kind in ("typeddict", "dict"):
            return PrivateState(values)
        return self.instance({k: private_copy(v) for k, v in values.items()})


class PrivateState(dict[str, Any]):
    """The state dict a node receives: each value is copied the first time it is read.

    A node that mutates what it reads changes only its own copy; keys it never reads cost
    nothing, so per-step cost does not grow with the size of untouched state.
    """

    __slots__ = ("_fresh",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self._fresh: set[str] = set(values)

    def _own(self, key: str) -> Any:
        value = dict.__getitem__(self, key)
        if key in self._fresh:
            self._fresh.discard(key)
            value = private_copy(value)
            dict.__setitem__(self, key, value)
        return value

    def __getitem__(self, key: str) -> Any:
        return self._own(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self._own(key) if dict.__contains__(self, key) else default

    def __setitem__(self, key: str, value: Any) -> None:
        self._fresh.discard(key)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        self._fresh.discard(key)
        dict.__delitem__(self, key)

    def __iter__(self) -> typing.Iterator[str]:
        # Overriding __iter__ makes dict(state) and {**state} go through __getitem__.
        return iter(list(dict.keys(self)))

    def values(self) -> Any:
        return [self._own(k) for k in list(dict.keys(self))]

    def items(self) -> Any:
        return [(k, self._own(k)) for k in list(dict.keys(self))]

    def pop(self, key: str, *default: Any) -> Any:
        if dict.__contains__(self, key):
            value = self._own(key)
            dict.__delitem__(self, key)
            return value
        if default:
            return default[0]
        raise KeyError(key)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if dict.__contains__(self, key):
            return self._own(key)
        self[key] = default
        return default

    def copy(self) -> dict[str, Any]:
        return {k: self._own(k) for k in list(dict.keys(self))}

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        return {**self.copy(), **other}

    def __reduce__(self) -> Any:
        return (dict, (self.copy(),))


def _kind_of(schema: Any) -> Literal["typeddict", "dataclass", "pydantic", "dict"]:
    if schema is dict:
        return "dict"
    # typing_extensions' check also recognises typing_extensions.TypedDict classes, which
    # typing.is_typeddict does not on Python 3.10/3.11.
    if isinstance(schema, type) and typing_extensions.is_typeddict(schema):
        return "typeddict"
    if isinstance(schema, type) and dataclasses.is_dataclass(schema):
        return "dataclass"
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
        return "pydantic"
    raise GraphValidationError(
        f"state schema must be a TypedDict, a dataclass or a pydantic BaseModel, got {schema!r}"
    )


def _field_annotations(schema: Any, kind: str) -> dict[str, Any]:
    if kind == "dict":
        return {}
    try:
        hints = typing_extensions.get_type_hints(schema, include_extras=True)
    except Exception as exc:
        raise GraphValidationError(
            f"cannot resolve the annotations of state schema {schema!r}: {exc}"
        ) from exc
    if kind == "dataclass":
        return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(schema)}
    if kind == "pydantic":
        return {name: hints.get(name, Any) for name in schema.model_fields}
    return {name: _strip_qualifiers(hint) for name, hint in hints.items()}


# Required / NotRequired / ReadOnly say whether a TypedDict key must be present; they wrap the
# field's type (and its Annotated reducer), so they are peeled off before reading the reducer.
_QUALIFIERS = {
    q
    for mod in (typing, typing_extensions)
    for q in (getattr(mod, n, None) for n in ("Required", "NotRequired", "ReadOnly"))
    if q is not None
}


def _strip_qualifiers(annotation: Any) -> Any:
    while typing_extensions.get_origin(annotation) in _QUALIFIERS:
        annotation = typing_extensions.get_args(annotation)[0]
    return annotation


def _reducer_of(annotation: Any) -> Reducer | None:
    if typing.get_origin(annotation) is typing.Annotated:
        for meta in reversed(annotation.__metadata__):
            if callable(meta):
                return typing.cast(Reducer, meta)
    return None


def _defaults_of(schema: Any, kind: str) -> dict[str, Any]:
    if kind == "dataclass":
        out: dict[str, Any] = {}
        for f in dataclasses.fields(schema):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory
        return out
    if kind == "pydantic":
        return {n: f for n, f in schema.model_fields.items() if not f.is_required()}
    return {}
