"""How a replica connects to its database: the URL, the LISTEN URL, pool size, prepared statements.

Behind PgBouncer in transaction pooling mode a server connection serves one transaction, then
another client. Two things then break, and both are settings here rather than guesses:

- ``LISTEN`` registers on the server connection that ran it, which goes straight back to the
  pool: ``listen_url`` names PostgreSQL directly (or a session-mode pool) for that one
  connection, while everything else uses ``url``.
- a server-side prepared statement lives on one server connection (PgBouncer before 1.21, or
  without ``max_prepared_statements``): ``prepare=False`` turns preparing off for the server's
  pool, its checkpointer and its store alike.

The defaults are the settings of a direct connection, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_POOL_SIZE", "Connections"]

#: Connections at most in each of a replica's pools (server tables, checkpointer, store).
DEFAULT_POOL_SIZE = 10
_MIN_TABLE_CONNECTIONS = 2  # kept open for the server's tables, as before the setting existed
# The settings as `threadline serve` names them, so that its errors point at the flag to fix.
_POOL_SIZE = "the pool size (--pool-size, THREADLINE_POOL_SIZE)"
_LISTEN = "the LISTEN URL (--listen-url, THREADLINE_LISTEN_URL)"
_NO_PREPARE = "turning prepared statements off (--no-prepare, THREADLINE_PREPARE=0)"


def _is_postgres(url: str) -> bool:
    return url.startswith(("postgresql:", "postgres:"))


@dataclass(frozen=True)
class Connections:
    """Where a replica connects and how; checked when made (``ValueError`` says what to fix).

    Args:
        url: the database: ``sqlite:///file.db`` or ``postgresql://...`` (maybe a pooler).
        listen_url: PostgreSQL only: a direct URL for the one ``LISTEN`` connection; None
            listens on ``url``.
        pool_size: the most connections each pool opens: the server's tables, the checkpointer
            and the store each have one (PostgreSQL; SQLite uses one connection each).
        prepare: PostgreSQL only: server-side prepared statements; ``False`` behind a
            transaction-mode pooler that cannot keep them.
    """

    url: str
    listen_url: str | None = None
    pool_size: int = DEFAULT_POOL_SIZE
    prepare: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.pool_size, bool) or not isinstance(self.pool_size, int):
            raise ValueError(f"{_POOL_SIZE} must be a whole number, got {self.pool_size!r}")
        if self.pool_size < 1:
            raise ValueError(f"{_POOL_SIZE} must be 1 or more, got {self.pool_size}")
        if self.listen_url is not None and not _is_postgres(self.listen_url):
            # Not echoed: a URL may hold a password.
            raise ValueError(f"{_LISTEN} must be a postgresql://... URL")
        sqlite = self.url.startswith("sqlite:")
        if sqlite and self.listen_url is not None:
            raise ValueError(
                f"{_LISTEN} is for a PostgreSQL database; this one is SQLite, whose wake-ups"
                " stay in its one replica: drop it"
            )
        if sqlite and not self.prepare:
            raise ValueError(
                f"{_NO_PREPARE} is for PostgreSQL behind a pooler; this database is SQLite: drop it"
            )
        if not self.prepare and self.listen_url is None:
            raise ValueError(
                f"{_NO_PREPARE} says the database URL goes through a transaction-mode pooler,"
                f" where LISTEN cannot work: give {_LISTEN} a URL that reaches PostgreSQL"
                " directly (the database URL itself if that one is direct)"
            )

    @property
    def is_postgres(self) -> bool:
        """Whether the database is PostgreSQL."""
        return _is_postgres(self.url)

    @property
    def listen(self) -> str:
        """The URL the ``LISTEN`` connection opens."""
        return self.listen_url or self.url

    @property
    def min_table_connections(self) -> int:
        """Connections the server's own pool keeps open."""
        return min(_MIN_TABLE_CONNECTIONS, self.pool_size)

    def table_connection_kwargs(self) -> dict[str, Any]:
        """psycopg connection options of the server's own pool (its tables)."""
        kwargs: dict[str, Any] = {"autocommit": True}
        if not self.prepare:
            kwargs["prepare_threshold"] = None  # psycopg's default (5 uses) otherwise
        return kwargs

    def backend_options(self) -> dict[str, Any]:
        """Keywords for the checkpointer's and the store's ``from_url``."""
        if not self.is_postgres:
            return {}
        return {"pool_max_size": self.pool_size, "prepare": self.prepare}
