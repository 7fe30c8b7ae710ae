"""Search bodies checked once: filters as SQL, choices, paging, sorting and field selection.

Every check answers 422 with the allowed values, so a client learns how to fix its request.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .http import ApiError

__all__ = [
    "MAX_LIMIT",
    "Where",
    "choice",
    "json_object",
    "order_by",
    "page",
    "selected",
]

MAX_LIMIT = 1000


@dataclass
class Where:
    """A WHERE clause built condition by condition, with its arguments."""

    kind: str
    conditions: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)

    def add(self, condition: str, *args: Any) -> None:
        self.conditions.append(condition)
        self.args += args

    def contains(self, column: str, wanted: dict[str, Any]) -> None:
        """``column`` (JSON text) contains ``wanted``, as PostgreSQL's ``jsonb @>`` decides."""
        if not wanted:
            return
        if self.kind == "postgres":
            self.add(f"({column})::jsonb @> (?)::jsonb", json.dumps(wanted))
        else:  # tl_json_contains is registered on every SQLite connection (db.py)
            self.add(f"tl_json_contains({column}, ?) = 1", json.dumps(wanted))

    def any_of(self, column: str, values: Sequence[Any]) -> None:
        self.add(f"{column} IN ({', '.join('?' * len(values))})", *values)

    def sql(self) -> str:
        return (" WHERE " + " AND ".join(self.conditions)) if self.conditions else ""


def choice(value: Any, allowed: Sequence[str], what: str, default: str | None = None) -> str:
    """``value`` if it is one of ``allowed`` (``default`` when absent), else 422."""
    if value is None and default is not None:
        return default
    if not isinstance(value, str) or value not in allowed:
        raise ApiError(422, f"{what} must be one of {list(allowed)}, got {value!r}")
    return value


def json_object(value: Any, what: str) -> dict[str, Any]:
    """``value`` as a JSON object (``{}`` when absent), else 422."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(422, f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _integer(value: Any, what: str, default: int, low: int, high: int | None) -> int:
    if value is None:
        return default
    if isinstance(value, str) and value.lstrip("-").isdigit():  # from a query string
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ApiError(422, f"{what} must be an integer of at least {low}, got {value!r}")
    if high is not None and value > high:
        raise ApiError(422, f"{what} must be at most {high}, got {value}")
    return value


def page(body: dict[str, Any], default_limit: int = 10) -> tuple[int, int]:
    """``(limit, offset)`` of a search body: limit 1..1000, offset 0 or more."""
    limit = _integer(body.get("limit"), "limit", default_limit, 1, MAX_LIMIT)
    return limit, _integer(body.get("offset"), "offset", 0, 0, None)


def order_by(body: dict[str, Any], allowed: Sequence[str], default: str, tie: str) -> str:
    """The ORDER BY clause of ``sort_by`` / ``sort_order`` (``tie`` breaks ties)."""
    column = choice(body.get("sort_by"), allowed, "sort_by", default)
    direction = choice(body.get("sort_order"), ("asc", "desc"), "sort_order", "desc")
    quoted = f'"{column}"'  # a checked name: one of ``allowed``
    if column == tie:
        return f" ORDER BY {quoted} {direction.upper()}"
    return f" ORDER BY {quoted} {direction.upper()}, {tie} {direction.upper()}"


def selected(body: dict[str, Any], allowed: Sequence[str]) -> list[str] | None:
    """The fields ``select`` asks for (None: all), each one of ``allowed``."""
    fields = body.get("select")
    if fields is None:
        return None
    if not isinstance(fields, list) or not fields:
        raise ApiError(422, f"select must be a non-empty list of fields from {list(allowed)}")
    for name in fields:
        choice(name, allowed, "each select field")
    return [str(f) for f in fields]
