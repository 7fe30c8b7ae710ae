"""The error for input a pydantic state rejects: pydantic's ``ValidationError`` (what
LangGraph raises) that is also threadline's :class:`InvalidUpdateError`, naming the fields.

The class is made on first use, so threadline imports without pydantic.
"""

from __future__ import annotations

import functools
from typing import Any

from ..errors import InvalidUpdateError

__all__ = ["input_validation_error"]


@functools.cache
def _error_class(validation_error: type[Any]) -> type[Any]:
    def __str__(self: Any) -> str:
        base: Any = validation_error.__str__
        return f"{base(self)}\n{self.hint}"

    return type(
        "InputValidationError",
        (validation_error, InvalidUpdateError),
        {"__str__": __str__, "__module__": __name__, "hint": ""},
    )


def input_validation_error(pydantic: Any, schema_name: str, exc: Any, errors: list[Any]) -> Any:
    """A ``ValidationError`` of ``errors`` (from ``exc``), with how to fix the input."""
    cls = _error_class(pydantic.ValidationError)
    out = cls.from_exception_data(exc.title, errors)
    parts = []
    for e in errors:
        where = ".".join(str(x) for x in e.get("loc") or ()) or "(state)"
        parts.append(f"field {where!r}: {e.get('msg')} (got {e.get('input')!r})")
    out.hint = (
        f"input does not match state schema {schema_name}: {'; '.join(parts)}. Fix the input"
        " values (pydantic validates the input of a pydantic state)"
    )
    return out
