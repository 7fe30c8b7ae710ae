"""Before a batch reaches storage: validate it, and embed what semantic search needs.

Shared by every store; embedding is the only step that may be async (an async embed function),
so it is split into "what to embed" (:func:`plan`) and "the vectors" (:func:`embed` /
:func:`aembed`), and storage then runs with all vectors known.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._query import unit
from .base import IndexConfig, Op, PutOp, SearchOp, validate_op
from .embed import Embedder, ensure_embeddings, get_text_at_path

__all__ = ["Index", "Plan", "plan"]

#: Per put (namespace, key): the ``(field, vector)`` pairs to store.
PutVectors = dict[tuple[tuple[str, ...], str], list[tuple[str, list[float]]]]


@dataclass(frozen=True)
class Index:
    """A store's validated semantic-search settings."""

    embedder: Embedder
    dims: int
    fields: list[str]

    @classmethod
    def make(cls, config: IndexConfig | None) -> Index | None:
        if config is None:
            return None
        if not isinstance(config, dict) or "embed" not in config:
            raise ValueError(
                "index must be a dict like {'embed': <Embeddings or function>, 'dims': 1536,"
                " 'fields': ['text']}"
            )
        dims = config.get("dims")
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
            raise ValueError(f"index['dims'] must be a positive int, got {dims!r}")
        fields = config.get("fields") or ["$"]
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise ValueError(f"index['fields'] must be a list of paths, got {fields!r}")
        return cls(ensure_embeddings(config["embed"]), dims, list(fields))


@dataclass
class Plan:
    """A validated batch and the texts it needs embedded."""

    ops: list[Op]
    texts: list[str] = field(default_factory=list)
    # (op index, field name) for each text, in order
    owners: list[tuple[int, str]] = field(default_factory=list)
    queries: dict[int, str] = field(default_factory=dict)

    def vectors(
        self,
        documents: Sequence[Sequence[float]],
        queries: Mapping[int, Sequence[float]],
        dims: int,
    ) -> tuple[PutVectors, dict[int, list[float]]]:
        """Attach computed vectors to their puts and searches, checking their length."""
        for vector in [*documents, *queries.values()]:
            if len(vector) != dims:
                raise ValueError(
                    f"the embed function returned a vector of {len(vector)} numbers; the store's"
                    f" index says dims={dims}"
                )
        per_put: PutVectors = {}
        for (i, name), vector in zip(self.owners, documents):
            op = self.ops[i]
            assert isinstance(op, PutOp)
            per_put.setdefault((op.namespace, op.key), []).append((name, unit(vector)))
        return per_put, {i: unit(v) for i, v in queries.items()}


def plan(ops: Iterable[Op], index: Index | None) -> Plan:
    """Validate ``ops``; of several puts to one item only the last is kept (as LangGraph does),
    in the position of the last. Collect the texts to embed."""
    checked = [validate_op(op) for op in ops]
    last_put: dict[tuple[tuple[str, ...], str], int] = {}
    for i, op in enumerate(checked):
        if isinstance(op, PutOp):
            last_put[(op.namespace, op.key)] = i
    out = Plan(ops=checked)
    for i, op in enumerate(checked):
        if isinstance(op, PutOp) and last_put[(op.namespace, op.key)] != i:
            out.ops[i] = op._replace(value=_SKIPPED)
            continue
        if index is None:
            continue
        if isinstance(op, PutOp) and op.value is not None and op.value is not _SKIPPED:
            paths = index.fields if op.index is None else (op.index or [])
            for path in paths:
                for n, text in enumerate(get_text_at_path(op.value, path)):
                    out.texts.append(text)
                    out.owners.append((i, f"{path}#{n}"))
        elif isinstance(op, SearchOp) and op.query:
            out.queries[i] = op.query
    return out


class _Skipped(dict[str, Any]):
    """Marks a put overridden by a later put to the same item in the same batch."""


_SKIPPED: Any = _Skipped()


def is_skipped(op: Op) -> bool:
    return isinstance(op, PutOp) and op.value is _SKIPPED


def embed(p: Plan, index: Index | None) -> tuple[Any, Any]:
    if index is None:
        return {}, {}
    docs = index.embedder.documents(p.texts) if p.texts else []
    queries = {i: index.embedder.query(q) for i, q in p.queries.items()}
    return p.vectors(docs, queries, index.dims)


async def aembed(p: Plan, index: Index | None) -> tuple[Any, Any]:
    if index is None:
        return {}, {}
    docs = await index.embedder.adocuments(p.texts) if p.texts else []
    queries = {i: await index.embedder.aquery(q) for i, q in p.queries.items()}
    return p.vectors(docs, queries, index.dims)
