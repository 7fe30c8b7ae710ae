"""The SQL stores' schema and operations, written once for SQLite and PostgreSQL.

Each operation is a *procedure*: a generator that yields :class:`Step` (a statement with ``?``
placeholders and its parameters) and receives the rows; it does no I/O. The backends' drivers
(sync and async, one each per database) run procedures, so the SQL and the logic exist once.
A :class:`Flavor` gives what differs: table names, placeholders, JSON accessors, upserts.

Rows (one per item): ``prefix`` (the namespace's labels joined by "."), ``key``, ``value``
(the serializer's bytes: exact types, compression, encryption), ``doc`` (the value's JSON
form, for filters; NULL when values are encrypted, so nothing is stored in the clear),
``created_at``/``updated_at``/``expires_at`` (epoch seconds), ``ttl_minutes`` (for refresh).
Vectors for semantic search live beside them, one row per embedded field.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import struct
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..checkpoint.jsonable import to_jsonable
from ..checkpoint.serde import Serializer
from ..errors import CorruptCheckpointError, SchemaVersionError
from . import _query
from ._prepare import is_skipped
from .base import (
    GetOp,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    trusted_item,
)

__all__ = ["PostgresFlavor", "Proc", "SqliteFlavor", "Step", "get", "put", "run_ops"]


class Step(NamedTuple):
    """One statement. ``many``: ``params`` is a list of parameter rows (executemany)."""

    sql: str
    params: Sequence[Any] = ()
    many: bool = False


Rows = list[tuple[Any, ...]]
Proc = Generator[Step, Rows, Any]

#: Rows deleted per statement by a TTL sweep, so a sweep never holds locks for long.
SWEEP_BATCH = 1000


# ---------------------------------------------------------------------- flavors


class Flavor(_query.Dialect):
    """What differs between the databases; statements use ``{items}``, ``{vectors}``,
    ``{migrations}`` for table names and ``?`` for parameters."""

    name = ""
    migrations: tuple[tuple[str, ...], ...] = ()

    def sql(self, text: str) -> str:
        raise NotImplementedError

    def setup(self) -> Proc:
        raise NotImplementedError

    def path_params(self, path: tuple[str, ...]) -> Any:
        raise NotImplementedError


_SQLITE_V1 = (
    """CREATE TABLE IF NOT EXISTS {items} (
        prefix TEXT NOT NULL,
        key TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        expires_at REAL,
        ttl_minutes REAL,
        doc TEXT,
        value BLOB NOT NULL,
        PRIMARY KEY (prefix, key)
    )""",
    "CREATE INDEX IF NOT EXISTS {items}_by_expiry ON {items} (expires_at)"
    " WHERE expires_at IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS {vectors} (
        prefix TEXT NOT NULL,
        key TEXT NOT NULL,
        field TEXT NOT NULL,
        embedding BLOB NOT NULL,
        PRIMARY KEY (prefix, key, field)
    )""",
)

_SAFE_KEY = re.compile(r"[A-Za-z0-9_\-]+")


class SqliteFlavor(Flavor):
    name = "sqlite"
    migrations = (_SQLITE_V1,)

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    def sql(self, text: str) -> str:
        done = self._cache.get(text)
        if done is None:
            done = self._cache[text] = text.format(
                items="threadline_store",
                vectors="threadline_store_vectors",
                migrations="threadline_store_migrations",
            )
        return done

    def setup(self) -> Proc:
        yield Step(
            self.sql(
                "CREATE TABLE IF NOT EXISTS {migrations} (version INTEGER PRIMARY KEY,"
                " applied_at REAL NOT NULL)"
            )
        )
        yield from _migrate(self, time.time())

    def _path(self, path: tuple[str, ...]) -> str | None:
        if not all(_SAFE_KEY.fullmatch(p) for p in path):
            return None  # a key JSON paths cannot spell safely: filtered in Python
        return "$." + ".".join(f'"{p}"' for p in path)

    def condition(self, path: tuple[str, ...], op: str, value: Any) -> tuple[str, list[Any]] | None:
        p = self._path(path)
        kind = _query.scalar_kind(value)
        if p is None or kind is None:
            return None
        types = {
            "number": "('integer', 'real')",
            "string": "('text')",
            "bool": "('true', 'false')",
            "null": "('null')",
        }[kind]
        typed = f"json_type(doc, ?) IN {types}"
        if op in ("$eq", "$ne"):
            if kind == "null":
                sql, params = typed, [p]
            elif kind == "bool":
                sql, params = "json_type(doc, ?) = ?", [p, "true" if value else "false"]
            else:
                sql, params = f"{typed} AND json_extract(doc, ?) = ?", [p, p, value]
            if op == "$ne":
                return f"NOT coalesce(({sql}), 0)", params
            return f"({sql})", params
        if kind not in ("number", "string"):
            return "0", []  # ordering a bool or null never holds
        sym = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[op]
        return f"({typed} AND json_extract(doc, ?) {sym} ?)", [p, p, value]


_PG_V1 = (
    """CREATE TABLE IF NOT EXISTS {items} (
        created_at float8 NOT NULL,
        updated_at float8 NOT NULL,
        expires_at float8,
        ttl_minutes float8,
        prefix text NOT NULL COLLATE "C",
        key text NOT NULL COLLATE "C",
        doc jsonb,
        value bytea NOT NULL,
        PRIMARY KEY (prefix, key)
    )""",
    "CREATE INDEX IF NOT EXISTS threadline_store_by_expiry ON {items} (expires_at)"
    " WHERE expires_at IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS {vectors} (
        prefix text NOT NULL COLLATE "C",
        key text NOT NULL COLLATE "C",
        field text NOT NULL,
        embedding bytea NOT NULL,
        PRIMARY KEY (prefix, key, field)
    )""",
)

_SCHEMA = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


@dataclass
class PostgresFlavor(Flavor):
    schema: str = "public"
    name = "postgres"
    migrations = (_PG_V1,)
    _cache: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.schema, str) or not _SCHEMA.fullmatch(self.schema):
            raise ValueError(
                f"schema must be a plain identifier (letters, digits, _), got {self.schema!r}"
            )

    def sql(self, text: str) -> str:
        done = self._cache.get(text)
        if done is None:
            s = f'"{self.schema}"'
            done = text.format(
                items=f"{s}.threadline_store",
                vectors=f"{s}.threadline_store_vectors",
                migrations=f"{s}.threadline_store_migrations",
            ).replace("?", "%s")
            self._cache[text] = done
        return done

    def setup(self) -> Proc:
        # Serialize setups of this schema across processes (replicas starting at once).
        yield Step(
            self.sql("SELECT pg_advisory_xact_lock(hashtext(?))"),
            (f"threadline_store:{self.schema}",),
        )
        yield Step(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        yield Step(
            self.sql(
                "CREATE TABLE IF NOT EXISTS {migrations} (version int4 PRIMARY KEY,"
                " applied_at float8 NOT NULL)"
            )
        )
        yield from _migrate(self, time.time())

    def condition(self, path: tuple[str, ...], op: str, value: Any) -> tuple[str, list[Any]] | None:
        kind = _query.scalar_kind(value)
        if kind is None:
            return None
        p: Any = list(path)
        typeof = {"number": "number", "string": "string", "bool": "boolean", "null": "null"}[kind]
        typed = "jsonb_typeof(doc #> ?) = ?"
        if op in ("$eq", "$ne"):
            if kind in ("null", "bool"):
                sql, params = "doc #> ? = ?::jsonb", [p, json.dumps(value)]
            elif kind == "number":
                sql, params = f"{typed} AND (doc #>> ?)::float8 = ?", [p, typeof, p, float(value)]
            else:
                sql, params = f'{typed} AND (doc #>> ?) COLLATE "C" = ?', [p, typeof, p, value]
            if op == "$ne":
                return f"NOT coalesce(({sql}), false)", params
            return f"({sql})", params
        if kind not in ("number", "string"):
            return "false", []
        sym = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[op]
        if kind == "number":
            return f"({typed} AND (doc #>> ?)::float8 {sym} ?)", [p, typeof, p, float(value)]
        return f'({typed} AND (doc #>> ?) COLLATE "C" {sym} ?)', [p, typeof, p, value]


def _migrate(flavor: Flavor, now: float) -> Proc:
    rows = yield Step(flavor.sql("SELECT coalesce(max(version), 0) FROM {migrations}"))
    current = int(rows[0][0])
    latest = len(flavor.migrations)
    if current > latest:
        raise SchemaVersionError(
            f"the store's tables are at schema version {current}, newer than the version"
            f" {latest} this threadline knows; upgrade threadline to use them"
        )
    for version in range(current + 1, latest + 1):
        for statement in flavor.migrations[version - 1]:
            yield Step(flavor.sql(statement))
        yield Step(
            flavor.sql("INSERT INTO {migrations} (version, applied_at) VALUES (?, ?)"),
            (version, now),
        )
    return latest


def schema_version(flavor: Flavor, exists_sql: str, exists_params: Sequence[Any]) -> Proc:
    """The applied version, or None without the migrations table."""
    if not (yield Step(exists_sql, exists_params)):
        return None
    rows = yield Step(flavor.sql("SELECT coalesce(max(version), 0) FROM {migrations}"))
    return int(rows[0][0])


# ---------------------------------------------------------------------- operations


@dataclass
class Context:
    """Everything a batch needs besides the database: computed before it runs."""

    flavor: Flavor
    serde: Serializer
    store_docs: bool  # False when values are encrypted: no plaintext JSON copy
    now: float
    default_fields: list[str] | None  # None: no semantic index
    put_vectors: dict[tuple[tuple[str, ...], str], list[tuple[str, bytes]]]
    query_vectors: dict[int, list[float]]


def pack_vector(vector: Sequence[float]) -> bytes:
    return struct.pack(f"<{len(vector)}f", *vector)


def unpack_vector(data: bytes) -> tuple[float, ...]:
    return struct.unpack(f"<{len(data) // 4}f", data)


_UTC = dt.timezone.utc
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_ITEM_COLS = "prefix, key, value, created_at, updated_at, ttl_minutes"


_GET = f"SELECT {_ITEM_COLS} FROM {{items}} WHERE prefix = ? AND key = ? AND {_LIVE}"


def _item(
    ctx: Context, r: tuple[Any, ...], cls: type[Item] = Item, score: float | None = None
) -> Any:
    prefix, key, data, created, updated = r[0], r[1], r[2], r[3], r[4]
    try:
        value = ctx.serde.loads(bytes(data))
        created_at = dt.datetime.fromtimestamp(float(created), _UTC)
        updated_at = (
            created_at if updated == created else dt.datetime.fromtimestamp(float(updated), _UTC)
        )
    except CorruptCheckpointError as exc:
        raise CorruptCheckpointError(
            f"store item {key!r} in namespace {prefix!r} cannot be read: {exc}"
        ) from exc
    except (TypeError, ValueError, OverflowError) as exc:
        raise CorruptCheckpointError(
            f"store item {key!r} in namespace {prefix!r} has a malformed row: {exc}"
        ) from exc
    item = trusted_item(cls, value, key, _query.ns_of(prefix), created_at, updated_at)
    if cls is SearchItem:
        item.score = score  # type: ignore[attr-defined]
    return item


def _refresh(ctx: Context, rows: Sequence[tuple[Any, ...]]) -> Proc:
    """Restart the time to live of the items read that have one."""
    todo = [(ctx.now + r[5] * 60, r[0], r[1]) for r in rows if r[5] is not None]
    if todo:
        yield Step(
            ctx.flavor.sql("UPDATE {items} SET expires_at = ? WHERE prefix = ? AND key = ?"),
            todo,
            many=True,
        )


def get(ctx: Context, op: GetOp) -> Proc:
    """One item, or None."""
    rows = yield Step(ctx.flavor.sql(_GET), (_query.ns_key(op.namespace), op.key, ctx.now))
    if not rows:
        return None
    if op.refresh_ttl:
        yield from _refresh(ctx, rows)
    return _item(ctx, rows[0])


def put(ctx: Context, op: PutOp) -> Proc:
    """Store (``op.value`` None: delete) one item and its vectors."""
    f = ctx.flavor
    prefix = _query.ns_key(op.namespace)
    if op.value is None:
        yield Step(f.sql("DELETE FROM {vectors} WHERE prefix = ? AND key = ?"), (prefix, op.key))
        yield Step(f.sql("DELETE FROM {items} WHERE prefix = ? AND key = ?"), (prefix, op.key))
        return None
    data = ctx.serde.dumps(op.value, key=f"{prefix}/{op.key}")
    doc = json.dumps(to_jsonable(op.value), ensure_ascii=False) if ctx.store_docs else None
    expires = None if op.ttl is None else ctx.now + op.ttl * 60
    yield Step(
        f.sql(
            "INSERT INTO {items} (prefix, key, created_at, updated_at, expires_at, ttl_minutes,"
            " doc, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (prefix, key) DO UPDATE SET"
            " updated_at = excluded.updated_at, expires_at = excluded.expires_at,"
            " ttl_minutes = excluded.ttl_minutes, doc = excluded.doc, value = excluded.value"
        ),
        (prefix, op.key, ctx.now, ctx.now, expires, op.ttl, doc, data),
    )
    vectors = ctx.put_vectors.get((op.namespace, op.key))
    if ctx.default_fields is not None or vectors:
        yield Step(f.sql("DELETE FROM {vectors} WHERE prefix = ? AND key = ?"), (prefix, op.key))
    if vectors:
        yield Step(
            f.sql("INSERT INTO {vectors} (prefix, key, field, embedding) VALUES (?, ?, ?, ?)"),
            [(prefix, op.key, name, blob) for name, blob in vectors],
            many=True,
        )
    return None


def _where(ctx: Context, prefix: tuple[str, ...], filter: Any) -> tuple[str, list[Any], bool]:
    """The WHERE clause of a search: live items under ``prefix`` matching ``filter``."""
    parts = [_LIVE.replace("expires_at", "i.expires_at")]
    params: list[Any] = [ctx.now]
    bounds = _query.prefix_range(prefix)
    if bounds is not None:
        parts.append("(i.prefix = ? OR (i.prefix >= ? AND i.prefix < ?))")
        params.extend(bounds)
    exact = not filter
    if filter and ctx.store_docs:
        sql, fparams, exact = ctx.flavor.compile(filter)
        if sql:
            parts.append(sql.replace("doc", "i.doc"))
            params.extend(fparams)
    return " AND ".join(parts), params, exact


def _search(ctx: Context, index: int, op: SearchOp) -> Proc:
    f = ctx.flavor
    where, params, exact = _where(ctx, op.namespace_prefix, op.filter)
    query = ctx.query_vectors.get(index)
    if query is None:
        page = "" if not exact else " LIMIT ? OFFSET ?"
        rows = yield Step(
            f.sql(
                f"SELECT i.prefix, i.key, i.value, i.created_at, i.updated_at, i.ttl_minutes"
                f" FROM {{items}} i WHERE {where} ORDER BY i.updated_at DESC, i.prefix, i.key"
                + page
            ),
            [*params, op.limit, op.offset] if exact else params,
        )
        items = [_item(ctx, r, SearchItem) for r in rows]
        if not exact:
            items = [it for it in items if _query.matches(to_jsonable(it.value), op.filter)]
            keep = {(it.namespace, it.key) for it in items[op.offset : op.offset + op.limit]}
            rows = [r for r in rows if (_query.ns_of(r[0]), r[1]) in keep]
            items = items[op.offset : op.offset + op.limit]
        if op.refresh_ttl:
            yield from _refresh(ctx, rows)
        return items
    # Semantic: rank every matching item's vectors here, then read the page's values.
    rows = yield Step(
        f.sql(
            f"SELECT i.prefix, i.key, v.embedding, i.doc FROM {{items}} i LEFT JOIN {{vectors}} v"
            f" ON v.prefix = i.prefix AND v.key = i.key WHERE {where}"
            f" ORDER BY i.updated_at DESC, i.prefix, i.key"
        ),
        params,
    )
    if not exact:
        rows = yield from _python_filter(ctx, rows, op)
    scored = [((r[0], r[1]), unpack_vector(bytes(r[2]))) for r in rows if r[2] is not None]
    unscored = list(dict.fromkeys((r[0], r[1]) for r in rows if r[2] is None))
    ranked = _query.rank(query, scored, unscored, op.offset, op.limit)
    found = yield from _read_items(ctx, [ident for ident, _ in ranked])
    if op.refresh_ttl:
        yield from _refresh(ctx, list(found.values()))
    return [
        _item(ctx, found[ident], SearchItem, score) for ident, score in ranked if ident in found
    ]


def _python_filter(ctx: Context, rows: Rows, op: SearchOp) -> Proc:
    """Keep the rows whose item matches the filter, judged on the decoded value."""
    idents = list(dict.fromkeys((r[0], r[1]) for r in rows))
    found = yield from _read_items(ctx, idents)
    ok = {
        ident
        for ident, r in found.items()
        if _query.matches(to_jsonable(_item(ctx, r).value), op.filter)
    }
    return [r for r in rows if (r[0], r[1]) in ok]


def _read_items(ctx: Context, idents: Sequence[tuple[str, str]]) -> Proc:
    found: dict[tuple[str, str], tuple[Any, ...]] = {}
    f = ctx.flavor
    for start in range(0, len(idents), 200):
        chunk = idents[start : start + 200]
        cond = " OR ".join(["(prefix = ? AND key = ?)"] * len(chunk))
        params = [x for ident in chunk for x in ident]
        rows = yield Step(f.sql(f"SELECT {_ITEM_COLS} FROM {{items}} WHERE {cond}"), params)
        for r in rows:
            found[(r[0], r[1])] = r
    return found


def _list(ctx: Context, op: ListNamespacesOp) -> Proc:
    where = _LIVE
    params: list[Any] = [ctx.now]
    bounds = _query.prefix_range(_query.literal_prefix(op))
    if bounds is not None:
        where += " AND (prefix = ? OR (prefix >= ? AND prefix < ?))"
        params.extend(bounds)
    rows = yield Step(
        ctx.flavor.sql(f"SELECT DISTINCT prefix FROM {{items}} WHERE {where}"), params
    )
    return _query.list_namespaces((_query.ns_of(r[0]) for r in rows), op)


def run_ops(ctx: Context, ops: Sequence[Op]) -> Proc:
    """Every operation of a batch, in order, as one procedure."""
    results: list[Result] = []
    for i, op in enumerate(ops):
        if is_skipped(op):
            results.append(None)
        elif isinstance(op, GetOp):
            results.append((yield from get(ctx, op)))
        elif isinstance(op, PutOp):
            results.append((yield from put(ctx, op)))
        elif isinstance(op, SearchOp):
            results.append((yield from _search(ctx, i, op)))
        else:
            results.append((yield from _list(ctx, op)))
    return results


def sweep(flavor: Flavor, now: float) -> Proc:
    """Delete expired items (and their vectors), at most :data:`SWEEP_BATCH`; returns how many."""
    rows = yield Step(
        flavor.sql("SELECT prefix, key FROM {items} WHERE expires_at <= ? LIMIT ?"),
        (now, SWEEP_BATCH),
    )
    if rows:
        keys = [(r[0], r[1]) for r in rows]
        yield Step(
            flavor.sql("DELETE FROM {vectors} WHERE prefix = ? AND key = ?"), keys, many=True
        )
        yield Step(
            flavor.sql("DELETE FROM {items} WHERE prefix = ? AND key = ? AND expires_at <= ?"),
            [(p, k, now) for p, k in keys],
            many=True,
        )
    return len(rows)
