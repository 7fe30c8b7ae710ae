"""State schemas: a TypedDict, dataclass or pydantic model becomes a set of channels.

A field annotated ``Annotated[T, reducer]`` accumulates (``new = reducer(old, update)``); other
fields keep the last value written.
"""

from __future__ import annotations

import collections.abc
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
from .input_errors import input_validation_error

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
    """What the runtime needs to know about a state class.

    ``fields`` are the class's own keys; ``channels`` may hold more: the keys of the graph's
    input, output and node input schemas, merged in by the builder (private state).
    ``managed`` keys (``RemainingSteps``, ``IsLastStep``) are computed, never stored.
    """

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.kind: Literal["typeddict", "dataclass", "pydantic", "dict"] = _kind_of(schema)
        self.channels: dict[str, ChannelSpec] = {}
        self.managed: dict[str, Any] = {}
        self.annotations: dict[str, Any] = {}
        for name, annotation in _field_annotations(schema, self.kind).items():
            manager = managed_of(annotation)
            if manager is not None:
                self.managed[name] = manager
                continue
            reducer = _reducer_of(annotation)
            if reducer is not None and not callable(reducer):
                raise GraphValidationError(f"reducer of state key {name!r} is not callable")
            self.channels[name] = ChannelSpec(
                name, reducer, reducer is None or reducer in PURE_REDUCERS
            )
            self.annotations[name] = annotation
        self.fields: tuple[str, ...] = (*self.channels, *self.managed)
        # The graph's input and output schemas (``StateGraph(input_schema=, output_schema=)``).
        self.input_schema: StateSchema = self
        self.output_schema: StateSchema = self
        self.defaults = _defaults_of(schema, self.kind)
        self._required: tuple[str, ...] | None = None  # pydantic: fields without a default
        # Reducer keys never written read as the reducer's empty value (list -> [], ...).
        self.empty_keys: tuple[str, ...] = tuple(
            k for k, c in self.channels.items() if c.reducer is not None and self.has_initial(k)
        )

    def merge(self, other: StateSchema) -> None:
        """Take ``other``'s keys as channels too (an input, output or node input schema)."""
        for name, spec in other.channels.items():
            mine = self.channels.get(name)
            if mine is None:
                self.channels[name] = spec
                self.annotations[name] = other.annotations[name]
                if spec.reducer is not None and other.has_initial(name):
                    self.empty_keys = (*self.empty_keys, name)
                    self.defaults.setdefault(name, _Initial(other, name))
            elif spec.reducer is not None and spec.reducer is not mine.reducer:
                raise GraphValidationError(
                    f"state key {name!r} has reducer {_name_of(mine.reducer)} in {self.name}"
                    f" but {_name_of(spec.reducer)} in {other.name}; give it one reducer"
                )
        for name, manager in other.managed.items():
            self.managed.setdefault(name, manager)

    def has_initial(self, key: str) -> bool:
        return self.initial(key) is not _NO_VALUE

    def initial(self, key: str) -> Any:
        """A fresh empty value for a reducer key: its default, or one made from its type."""
        default = self.defaults.get(key, _NO_VALUE)
        if isinstance(default, _Initial):
            return default()
        if default is not _NO_VALUE:
            if self.kind == "dataclass" and callable(default):
                return default()
            if hasattr(default, "get_default"):
                return default.get_default(call_default_factory=True)
            return default
        return empty_of(self.annotations.get(key))

    def view(self, values: Mapping[str, Any], extra: Mapping[str, Any] | None) -> Any:
        """What a node with this input schema reads: its keys of ``values`` (plus managed)."""
        own = {k: values[k] for k in self.channels if k in values}
        if extra:
            own.update({k: v for k, v in extra.items() if k in self.managed})
        return self.node_input(own)

    def check_complete(self, values: Mapping[str, Any]) -> None:
        """Pydantic states: a node's view must be a valid model, as LangGraph builds it before
        the node runs; required fields without a value raise pydantic's ``ValidationError``."""
        if self.kind != "pydantic":
            return
        required = self._required
        if required is None:
            model_fields = self.schema.model_fields
            required = self._required = tuple(
                k for k in self.channels if k in model_fields and model_fields[k].is_required()
            )
        if any(k not in values for k in required):
            self.schema.model_validate({k: values[k] for k in self.fields if k in values})

    def validate_input(self, updates: dict[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
        """Pydantic states: the input validated and coerced by the model, field by field.

        A wrong value raises pydantic's ``ValidationError`` (as LangGraph does), which is also
        an :class:`InvalidUpdateError` naming the field.
        """
        if self.kind != "pydantic" or not updates:
            return updates
        own = {k: v for k, v in updates.items() if k in self.fields}
        if not own:
            return updates
        pydantic = sys.modules["pydantic"]
        merged = {k: v for k, v in current.items() if k in self.fields}
        merged.update(own)
        try:
            model = self.schema.model_validate(merged)
        except pydantic.ValidationError as exc:
            wrong = [e for e in exc.errors() if e["type"] != "missing" or _loc(e) in own]
            if wrong:
                raise input_validation_error(pydantic, self.name, exc, wrong) from exc
            model = self._validate_fields(own, pydantic)
        return {**updates, **{k: getattr(model, k) for k in own}}

    def _validate_fields(self, own: dict[str, Any], pydantic: Any) -> Any:
        """Validate only the given fields: the state has no value yet for other required ones."""
        model = self.schema.model_construct()
        for key, value in own.items():
            try:
                self.schema.__pydantic_validator__.validate_assignment(model, key, value)
            except pydantic.ValidationError as exc:
                raise input_validation_error(pydantic, self.name, exc, exc.errors()) from exc
        return model

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
        unknown = [k for k in updates if k not in self.channels and k not in self.managed]
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
        if len(self.channels) + len(self.managed) != len(self.fields):
            values = {k: v for k, v in values.items() if k in self.fields}
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


class _Initial:
    """The initial value of a key merged in from another schema (its own default/type)."""

    __slots__ = ("key", "schema")

    def __init__(self, schema: StateSchema, key: str) -> None:
        self.schema = schema
        self.key = key

    def __call__(self) -> Any:
        return self.schema.initial(self.key)


_NO_VALUE: Any = object()

_ABSTRACT_TO_CONCRETE: dict[Any, Any] = {
    collections.abc.Sequence: list,
    collections.abc.MutableSequence: list,
    collections.abc.Set: set,
    collections.abc.MutableSet: set,
    collections.abc.Mapping: dict,
    collections.abc.MutableMapping: dict,
}


def empty_of(annotation: Any) -> Any:
    """The empty value LangGraph gives a reducer key: its type called with no arguments
    (``list`` -> ``[]``, ``int`` -> ``0``), or none when that type cannot be called so."""
    base = annotation
    while True:
        origin = typing.get_origin(base)
        if origin is typing.Annotated or origin in _REQUIRED_FORMS:
            base = typing.get_args(base)[0]
        elif origin is not None:
            base = origin
            break
        else:
            break
    base = _ABSTRACT_TO_CONCRETE.get(base, base)
    if not isinstance(base, type) or base is type(None):
        return _NO_VALUE
    try:
        return base()
    except Exception:
        return _NO_VALUE


_REQUIRED_FORMS: tuple[Any, ...] = tuple(
    form
    for module in (typing, sys.modules.get("typing_extensions"))
    if module is not None
    for form in (getattr(module, "Required", None), getattr(module, "NotRequired", None))
    if form is not None
)


def managed_of(annotation: Any) -> Any:
    """The ``RemainingSteps``/``IsLastStep`` marker of an annotation, or None."""
    from ..managed import managed_value_of

    return managed_value_of(annotation)


def managed_value(marker: Any, remaining: int) -> Any:
    """A managed key's value where ``remaining`` steps are left: ``RemainingSteps`` is the
    count, ``IsLastStep`` holds where one remains (LangGraph's rule)."""
    return remaining == 1 if marker.name == "is_last_step" else remaining


def _name_of(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _loc(error: Any) -> Any:
    loc = error.get("loc") or ()
    return loc[0] if loc else None
