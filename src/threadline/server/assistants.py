"""Assistants as rows: a graph with a config, a context and metadata, versioned.

Each graph of the config is a *system* assistant whose id is the graph name's uuid5, created
at startup (idempotently: replicas start at once). Users create more; every update is a new
version, and ``set_latest`` moves the assistant back (or forth) to one of them. A graph name is
accepted wherever an assistant id is.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .db import Database, Tx
from .graphs import assistant_id_of
from .wire import now_iso

__all__ = [
    "ASSISTANT_FIELDS",
    "Assistant",
    "assistant_for_run",
    "assistant_id_or_name",
    "ensure_system_assistants",
    "load_assistant",
]

ASSISTANT_FIELDS = (
    "assistant_id", "graph_id", "name", "description", "config", "context", "metadata",
    "version", "created_at", "updated_at",
)  # fmt: skip
COLUMNS = ", ".join(ASSISTANT_FIELDS)
VERSION_COLUMNS = (
    "assistant_id, graph_id, name, description, config, context, metadata, version,"
    " created_at, created_at"
)
SYSTEM = {"created_by": "system"}


@dataclass(frozen=True)
class Assistant:
    """One assistant at its current version: what a run on it needs, and its wire form."""

    assistant_id: str
    graph_id: str
    name: str
    description: str | None
    config: dict[str, Any]
    context: dict[str, Any]
    metadata: dict[str, Any]
    version: int
    created_at: str
    updated_at: str

    @classmethod
    def of_row(cls, row: Sequence[Any]) -> Assistant:
        return cls(
            str(row[0]), str(row[1]), str(row[2]), row[3], json.loads(row[4]),
            json.loads(row[5]), json.loads(row[6]), int(row[7]), str(row[8]), str(row[9]),
        )  # fmt: skip

    @property
    def system(self) -> bool:
        """Made from the config at startup (read-only)."""
        return self.assistant_id == assistant_id_of(self.graph_id)

    def json(self, fields: Sequence[str] | None = None) -> dict[str, Any]:
        """The API's ``Assistant`` (only ``fields`` when given)."""
        whole = {name: getattr(self, name) for name in ASSISTANT_FIELDS}
        return whole if fields is None else {k: whole[k] for k in fields}

    def run_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """A run's kwargs with this assistant's config and context merged under its own.

        The run wins key by key: ``configurable`` and ``metadata`` are merged, ``tags`` are
        joined (the assistant's first), any other config key is the run's if it has one.
        """
        mine, theirs = self.config, kwargs.get("config") or {}
        config = {**mine, **theirs}
        for key in ("configurable", "metadata"):
            if key in mine or key in theirs:
                config[key] = {**(mine.get(key) or {}), **(theirs.get(key) or {})}
        if "tags" in mine or "tags" in theirs:
            config["tags"] = list(dict.fromkeys([*mine.get("tags", []), *theirs.get("tags", [])]))
        merged = dict(kwargs)
        if config:
            merged["config"] = config
        run_context = kwargs.get("context")
        if self.context and (run_context is None or isinstance(run_context, dict)):
            merged["context"] = {**self.context, **(run_context or {})}
        return merged


_SYSTEM_CREATED = "1970-01-01T00:00:00+00:00"


def assistant_id_or_name(value: str) -> str:
    """The assistant id ``value`` names: itself if a UUID, else a graph name's system id."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        return assistant_id_of(value)


async def load_assistant(
    db: Database | Tx, value: str, graph_ids: Sequence[str] | None = None
) -> Assistant | None:
    """The assistant with id (or graph name) ``value``; None if missing or (when
    ``graph_ids`` is given) its graph is not one of them."""
    rows = await db.execute(
        f"SELECT {COLUMNS} FROM tl_assistants WHERE assistant_id = ?",
        (assistant_id_or_name(value),),
    )
    if not rows:
        return None
    found = Assistant.of_row(rows[0])
    if graph_ids is not None and found.graph_id not in graph_ids:
        return None
    return found


async def assistant_for_run(
    db: Database, assistant_id_or_graph_name: str, graph_ids: Sequence[str] | None = None
) -> Assistant | None:
    """What a run on ``assistant_id_or_graph_name`` uses: its graph id, assistant id, config
    and context (merge them with :meth:`Assistant.run_kwargs`). None when there is no such
    assistant, or its graph is not among ``graph_ids`` (pass the served graphs' names)."""
    if not isinstance(assistant_id_or_graph_name, str) or not assistant_id_or_graph_name:
        return None
    if graph_ids is not None:
        # A served graph's system assistant is read-only and has no config of its own: no read.
        for graph_id in graph_ids:
            if assistant_id_or_graph_name in (graph_id, assistant_id_of(graph_id)):
                return system_assistant(graph_id)
    return await load_assistant(db, assistant_id_or_graph_name, graph_ids)


def system_assistant(graph_id: str) -> Assistant:
    """The assistant made for a configured graph (as stored by :func:`ensure_system_assistants`)."""
    return Assistant(
        assistant_id_of(graph_id), graph_id, graph_id, None, {}, {}, dict(SYSTEM), 1,
        _SYSTEM_CREATED, _SYSTEM_CREATED,
    )  # fmt: skip


async def ensure_system_assistants(db: Database, graph_ids: Sequence[str]) -> None:
    """Create the assistant of each configured graph if missing (any replica may race)."""
    created = _SYSTEM_CREATED  # the same on every replica: rows are identical
    async with db.transaction() as tx:
        for graph_id in graph_ids:
            row = (assistant_id_of(graph_id), graph_id, graph_id, None, "{}", "{}",
                   json.dumps(SYSTEM), 1, created)  # fmt: skip
            await tx.execute(
                "INSERT INTO tl_assistants (assistant_id, graph_id, name, description, config,"
                " context, metadata, version, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (assistant_id) DO NOTHING",
                (*row, created),
            )
            await tx.execute(
                "INSERT INTO tl_assistant_versions (assistant_id, graph_id, name, description,"
                " config, context, metadata, version, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (assistant_id, version) DO NOTHING",
                row,
            )


async def insert_assistant(tx: Tx, a: Assistant) -> bool:
    """Store a new assistant and its version 1; False if the id is taken."""
    values = (a.assistant_id, a.graph_id, a.name, a.description, json.dumps(a.config),
              json.dumps(a.context), json.dumps(a.metadata), a.version, a.created_at)  # fmt: skip
    rows = await tx.execute(
        "INSERT INTO tl_assistants (assistant_id, graph_id, name, description, config, context,"
        " metadata, version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (assistant_id) DO NOTHING RETURNING assistant_id",
        (*values, a.updated_at),
    )
    if rows:
        await insert_version(tx, a)
    return bool(rows)


async def insert_version(tx: Tx, a: Assistant) -> None:
    await tx.execute(
        "INSERT INTO tl_assistant_versions (assistant_id, graph_id, name, description, config,"
        " context, metadata, version, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (a.assistant_id, a.graph_id, a.name, a.description, json.dumps(a.config),
         json.dumps(a.context), json.dumps(a.metadata), a.version, a.updated_at),
    )  # fmt: skip


async def make_current(tx: Tx, a: Assistant) -> None:
    """Make ``a`` (one of its versions) the assistant's current state."""
    await tx.execute(
        "UPDATE tl_assistants SET graph_id = ?, name = ?, description = ?, config = ?,"
        " context = ?, metadata = ?, version = ?, updated_at = ? WHERE assistant_id = ?",
        (a.graph_id, a.name, a.description, json.dumps(a.config), json.dumps(a.context),
         json.dumps(a.metadata), a.version, a.updated_at, a.assistant_id),
    )  # fmt: skip


async def lock_assistant(tx: Tx, assistant_id: str) -> Assistant | None:
    """The assistant, its row locked for the transaction (PostgreSQL; SQLite has one writer)."""
    await tx.execute(
        "UPDATE tl_assistants SET version = version WHERE assistant_id = ?", (assistant_id,)
    )
    return await load_assistant(tx, assistant_id)


async def next_version(tx: Tx, assistant_id: str) -> int:
    rows = await tx.execute(
        "SELECT MAX(version) FROM tl_assistant_versions WHERE assistant_id = ?", (assistant_id,)
    )
    return int(rows[0][0] or 0) + 1


async def version_of(tx: Tx, assistant_id: str, version: int) -> Assistant | None:
    rows = await tx.execute(
        f"SELECT {VERSION_COLUMNS} FROM tl_assistant_versions"
        " WHERE assistant_id = ? AND version = ?",
        (assistant_id, version),
    )
    return Assistant.of_row(rows[0]) if rows else None


def new_assistant(
    *,
    assistant_id: str,
    graph_id: str,
    name: str,
    description: str | None,
    config: dict[str, Any],
    context: dict[str, Any],
    metadata: dict[str, Any],
    version: int = 1,
    created_at: str | None = None,
) -> Assistant:
    now = now_iso()
    return Assistant(assistant_id, graph_id, name, description, config, context, metadata,
                     version, created_at or now, now)  # fmt: skip
