"""``interrupt(value, response_schema=...)``: the JSON Schema an interrupt shows, and the check
of the answer it gets.

A ``dict`` is JSON Schema already: shown as it is, and answers are not checked. Anything else
(a pydantic model, a ``TypedDict``, a dataclass, or another type pydantic's ``TypeAdapter``
takes) is turned into JSON Schema by pydantic, which also validates the answer: ``interrupt()``
then returns the validated value, and an answer that does not match raises the
``pydantic.ValidationError``, marked so that :func:`threadline.errors.is_invalid_resume` knows
it and the runtime withdraws the answer. Only these need pydantic (``threadline[pydantic]``).

The dataclasses, Enums and pydantic models such a schema names are registered with the
serializer (the default registry) when it is first used, as ``compile()`` registers those of
the state schema: a node may store the validated answer.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ..checkpoint.typewalk import register_annotation_types
from ..errors import mark_invalid_resume

__all__ = ["NO_SCHEMA", "ResponseSchema", "response_schema"]


@dataclass(frozen=True, slots=True)
class ResponseSchema:
    """What an interrupt shows of its schema (``json``) and how its answer is checked."""

    json: dict[str, Any] | None
    adapter: Any = None  # a pydantic TypeAdapter, for schemas that validate

    def check(self, answer: Any, interrupt_id: str) -> Any:
        """``answer`` as the schema validates it (as it is, for a dict or no schema)."""
        if self.adapter is None:
            return answer
        from pydantic import ValidationError

        try:
            return self.adapter.validate_python(answer)
        except ValidationError as exc:
            mark_invalid_resume(exc, interrupt_id)
            raise


NO_SCHEMA = ResponseSchema(None)


def response_schema(schema: Any) -> ResponseSchema:
    """The :class:`ResponseSchema` of ``interrupt(response_schema=schema)``."""
    if schema is None:
        return NO_SCHEMA
    if isinstance(schema, dict):
        return ResponseSchema(schema)
    try:
        hash(schema)
    except TypeError:  # e.g. an Annotated[...] with an unhashable marker: made each time
        adapter = _adapter(schema)
    else:
        adapter = _cached_adapter(schema)
    # A fresh dict each time: whoever reads the interrupt may change the one it gets.
    return ResponseSchema(adapter.json_schema(), adapter)


def _adapter(schema: Any) -> Any:
    try:
        from pydantic import TypeAdapter
    except ImportError as exc:
        name = getattr(schema, "__name__", None) or repr(schema)
        raise ImportError(
            f"interrupt(response_schema={name}) needs pydantic, to turn the class into JSON"
            " Schema and validate answers: pip install 'threadline[pydantic]' (or pass a JSON"
            " Schema dict, which is shown as it is and does not validate answers)"
        ) from exc
    adapter = TypeAdapter(schema)
    # The answer comes back as these types (a model, a dataclass...), and the node may store
    # it: the code named them, so the serializer may store and load them too.
    register_annotation_types(schema)
    return adapter


_cached_adapter = functools.lru_cache(maxsize=256)(_adapter)
