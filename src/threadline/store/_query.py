"""What every store backend computes the same way: namespace keys, filters, ranking, listing.

Filters have one meaning everywhere, that of :func:`matches` on an item's JSON form
(:func:`threadline.checkpoint.jsonable.to_jsonable`): a plain value matches by equality (a
nested dict matches nested fields), and the operators ``$eq $ne $gt $gte $lt $lte`` compare
numbers with numbers and strings with strings (by code point); a comparison across types, or
with a missing field, is false (``$ne``: true). SQL backends compile a filter to parametrized
SQL with exactly that meaning (:class:`Dialect`); parts they cannot express exactly are
filtered here instead, after the rows are read.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import ListNamespacesOp, MatchCondition

__all__ = [
    "OPERATORS",
    "Dialect",
    "compile_filter",
    "dot_scores",
    "list_namespaces",
    "matches",
    "ns_key",
    "ns_of",
    "prefix_range",
]

SEP = "."
OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
_MISSING: Any = object()


# ---------------------------------------------------------------------- namespaces


def ns_key(namespace: tuple[str, ...]) -> str:
    """The stored form of a namespace: labels joined by ``"."`` (labels never contain it)."""
    return SEP.join(namespace)


def ns_of(key: str) -> tuple[str, ...]:
    return tuple(key.split(SEP)) if key else ()


def prefix_range(prefix: tuple[str, ...]) -> tuple[str, str, str] | None:
    """``(exact, low, high)``: a namespace under ``prefix`` is ``exact`` or in ``[low, high)``.

    ``"/"`` follows ``"."`` in every collation-free order, so the range holds exactly the keys
    starting with ``exact + "."``: an index range scan, no LIKE pattern to escape.
    """
    if not prefix:
        return None
    exact = ns_key(prefix)
    return exact, exact + SEP, exact + chr(ord(SEP) + 1)


def _pattern_matches(labels: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    return len(pattern) <= len(labels) and all(
        p == "*" or p == label for p, label in zip(pattern, labels)
    )


def _condition_holds(ns: tuple[str, ...], condition: MatchCondition) -> bool:
    if condition.match_type == "prefix":
        return _pattern_matches(ns, condition.path)
    return _pattern_matches(ns[::-1], condition.path[::-1])


def list_namespaces(namespaces: Iterable[tuple[str, ...]], op: ListNamespacesOp) -> list[Any]:
    """Apply ``op`` (conditions, depth, paging) to the distinct namespaces holding items."""
    found: set[tuple[str, ...]] = set()
    for ns in namespaces:
        if all(_condition_holds(ns, c) for c in op.match_conditions or ()):
            found.add(ns[: op.max_depth] if op.max_depth is not None else ns)
    return sorted(found)[op.offset : op.offset + op.limit]


def literal_prefix(op: ListNamespacesOp) -> tuple[str, ...]:
    """The labels before the first wildcard of ``op``'s prefix condition (for an SQL range)."""
    for c in op.match_conditions or ():
        if c.match_type == "prefix":
            out = []
            for label in c.path:
                if label == "*":
                    break
                out.append(label)
            return tuple(out)
    return ()


# ---------------------------------------------------------------------- filters


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _compare(value: Any, op: str, target: Any) -> bool:
    if op == "$eq":
        return value is not _MISSING and _equal(value, target)
    if op == "$ne":
        return value is _MISSING or not _equal(value, target)
    if _is_number(value) and _is_number(target):
        pass
    elif not (isinstance(value, str) and isinstance(target, str)):
        return False
    if op == "$gt":
        return bool(value > target)
    if op == "$gte":
        return bool(value >= target)
    if op == "$lt":
        return bool(value < target)
    return bool(value <= target)


def _equal(value: Any, target: Any) -> bool:
    if isinstance(value, bool) or isinstance(target, bool):
        return isinstance(value, bool) and isinstance(target, bool) and value == target
    return bool(value == target)


def _is_operator_dict(v: Any) -> bool:
    return isinstance(v, Mapping) and bool(v) and all(str(k).startswith("$") for k in v)


def check_filter(filter: Mapping[str, Any] | None, path: str = "") -> None:
    """Raise ``ValueError`` for an operator that is not supported, naming the field."""
    for key, want in (filter or {}).items():
        field = f"{path}.{key}" if path else str(key)
        if not isinstance(key, str):
            raise ValueError(f"filter keys must be strings, got {key!r}")
        if _is_operator_dict(want):
            for op in want:
                if op not in OPERATORS:
                    raise ValueError(
                        f"filter on {field!r} uses {op!r}; supported: {', '.join(OPERATORS)}"
                    )
        elif isinstance(want, Mapping):
            check_filter(want, field)


def matches(doc: Any, filter: Mapping[str, Any] | None) -> bool:
    """Whether an item's JSON form ``doc`` satisfies ``filter``."""
    for key, want in (filter or {}).items():
        value = doc.get(key, _MISSING) if isinstance(doc, Mapping) else _MISSING
        if _is_operator_dict(want):
            if not all(_compare(value, op, target) for op, target in want.items()):
                return False
        elif isinstance(want, Mapping):
            if not isinstance(value, Mapping) or not matches(value, want):
                return False
        elif value is _MISSING or not _equal(value, want):
            return False
    return True


def compile_filter(filter: Mapping[str, Any] | None) -> Callable[[Any], bool]:
    """:func:`matches` with ``filter`` fixed, for testing many items: the shape of each
    condition is looked at once, not once per item."""
    items = list((filter or {}).items())
    if not items:
        return _always
    if all(type(want) is str for _, want in items):
        # The common case, ``{"kind": "note"}``: a str equals only a str, so plain ``==``
        # (a missing field reads None, which never equals a str) is exactly _equal.
        if len(items) == 1:
            [(field, text)] = items

            def equal_string(doc: Any) -> bool:
                if type(doc) is dict:
                    return bool(doc.get(field) == text)
                return matches(doc, filter)

            return equal_string
        pairs = tuple(items)

        def equal_strings(doc: Any) -> bool:
            if type(doc) is not dict:
                return matches(doc, filter)
            get = doc.get
            return all(get(key) == want for key, want in pairs)

        return equal_strings
    tests: list[tuple[str, int, Any]] = []
    for key, want in items:
        if _is_operator_dict(want):
            tests.append((key, 0, tuple(want.items())))
        elif isinstance(want, Mapping):
            tests.append((key, 1, compile_filter(want)))
        else:
            tests.append((key, 2, want))

    def general(doc: Any) -> bool:
        mapping = isinstance(doc, Mapping)
        for key, kind, want in tests:
            value = doc.get(key, _MISSING) if mapping else _MISSING
            if kind == 0:
                if not all(_compare(value, op, target) for op, target in want):
                    return False
            elif kind == 1:
                if not isinstance(value, Mapping) or not want(value):
                    return False
            elif value is _MISSING or not _equal(value, want):
                return False
        return True

    return general


def _always(doc: Any) -> bool:
    return True


def flatten(
    filter: Mapping[str, Any], path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], str, Any]]:
    """``filter`` as ``(path, operator, value)`` conditions, all of which must hold."""
    out: list[tuple[tuple[str, ...], str, Any]] = []
    for key, want in filter.items():
        p = (*path, key)
        if _is_operator_dict(want):
            out.extend((p, op, target) for op, target in want.items())
        elif isinstance(want, Mapping) and want:
            out.extend(flatten(want, p))
        else:
            out.append((p, "$eq", want))
    return out


class Dialect:
    """How a SQL backend expresses one filter condition; ``None`` when it cannot exactly.

    Subclasses give the JSON accessors; values are always bound as parameters, never spliced.
    """

    def condition(self, path: tuple[str, ...], op: str, value: Any) -> tuple[str, list[Any]] | None:
        raise NotImplementedError

    def compile(self, filter: Mapping[str, Any] | None) -> tuple[str, list[Any], bool]:
        """``(sql, params, exact)``: SQL for what it can express, and whether that is all."""
        parts: list[str] = []
        params: list[Any] = []
        exact = True
        for path, op, value in flatten(filter or {}):
            compiled = self.condition(path, op, value)
            if compiled is None:
                exact = False
                continue
            parts.append(compiled[0])
            params.extend(compiled[1])
        return " AND ".join(parts), params, exact


def scalar_kind(value: Any) -> str | None:
    """``"number"``, ``"string"``, ``"bool"`` or ``"null"`` for values SQL compares exactly."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number" if math.isfinite(value) and abs(value) < 2**53 else None
    if isinstance(value, str):
        return "string"
    return None


# ---------------------------------------------------------------------- ranking


def unit(vector: Sequence[float]) -> list[float]:
    """``vector`` scaled to length 1 (a zero vector stays zero): stored vectors are unit
    vectors, so a cosine similarity is one dot product."""
    norm = math.sqrt(sum(map(operator.mul, vector, vector)))
    return [x / norm for x in vector] if norm else [0.0] * len(vector)


def dot_scores(query: Sequence[float], vectors: Sequence[Sequence[float]]) -> list[float]:
    """The dot product of ``query`` with each vector (numpy when installed)."""
    if not vectors:
        return []
    try:
        import numpy as np  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return [sum(map(operator.mul, query, v)) for v in vectors]
    m = np.asarray(vectors, dtype=np.float32)
    return [float(x) for x in m @ np.asarray(query, dtype=np.float32)]


def rank(
    query: Sequence[float],
    candidates: Sequence[tuple[Any, Sequence[float]]],
    unscored: Sequence[Any],
    offset: int,
    limit: int,
) -> list[tuple[Any, float | None]]:
    """The page ``[offset, offset + limit)`` of items ranked by their best vector's cosine
    similarity to ``query`` (all unit vectors);
    items without vectors follow, unscored."""
    best: dict[Any, float] = {}
    for (ident, _), score in zip(candidates, dot_scores(query, [v for _, v in candidates])):
        if ident not in best or score > best[ident]:
            best[ident] = score
    ordered: list[tuple[Any, float | None]] = [
        (ident, score) for ident, score in sorted(best.items(), key=lambda kv: -kv[1])
    ]
    ordered.extend((ident, None) for ident in unscored if ident not in best)
    return ordered[offset : offset + limit]
