"""``from_url``: one entry point to configure any checkpointer."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .base import BaseCheckpointSaver
from .serde import MsgpackSerializer

__all__ = ["from_url", "split_url"]

_SCHEMES = "memory://, sqlite:///path/to/file.db (or sqlite:///:memory:), postgresql://user@host/db"


def from_url(
    url: str,
    *,
    aio: bool = False,
    ttl: float | None = None,
    compression: str | None = "zlib",
    encryption_key: bytes | str | None = None,
    pool_min_size: int | None = None,
    pool_max_size: int | None = None,
    **options: Any,
) -> BaseCheckpointSaver:
    """Create a checkpointer from a URL.

    ``memory://``, ``sqlite:///checkpoints.db`` (relative path; ``sqlite:////abs/path.db`` for an
    absolute one) or ``postgresql://user@host:5432/db``. ``aio=True`` returns the async twin.
    The result works directly (close it with ``close()``/``aclose()``) or as a context manager.

    Options: ``ttl`` (seconds until an idle thread expires), ``compression`` (``"zlib"``, the
    default, ``"zstd"`` or None),
    ``encryption_key`` (32 bytes, or its base64/hex text), ``pool_min_size``/``pool_max_size``
    (Postgres), and any keyword the backend's saver takes (e.g. ``schema=`` for Postgres).
    """
    kind, target = split_url(url, "checkpointer")
    if compression != "zlib" or encryption_key is not None:
        options["serde"] = MsgpackSerializer(
            compression=compression,  # type: ignore[arg-type]
            encryption_key=encryption_key,
            allow_plaintext=bool(options.pop("allow_plaintext", False)),
        )
    if ttl is not None:
        options["ttl"] = ttl
    if kind == "memory":
        from .memory import InMemorySaver

        return InMemorySaver(**options)
    if kind == "sqlite":
        if aio:
            from .sqlite.aio import AsyncSqliteSaver

            return AsyncSqliteSaver.from_conn_string(target, **options)
        from .sqlite import SqliteSaver

        return SqliteSaver.from_conn_string(target, **options)
    if pool_min_size is not None:
        options["pool_min_size"] = pool_min_size
    if pool_max_size is not None:
        options["pool_max_size"] = pool_max_size
    if aio:
        from .postgres.aio import AsyncPostgresSaver

        return AsyncPostgresSaver.from_conn_string(target, **options)
    from .postgres import PostgresSaver

    return PostgresSaver.from_conn_string(target, **options)


def split_url(url: str, what: str) -> tuple[str, str]:
    """``("memory" | "sqlite" | "postgres", target)``: the backend a URL names and what to open
    (the SQLite file's path, or the PostgreSQL URL). ``what`` names the caller in errors."""
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"{what} URL {url!r} is not a URL; use one of: {_SCHEMES}")
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return "memory", ""
    if scheme == "sqlite":
        path = url[len("sqlite://") :]
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise ValueError(f"{url!r} names no database file; e.g. sqlite:///threadline.db")
        return "sqlite", path
    if scheme in ("postgres", "postgresql"):
        return "postgres", url
    raise ValueError(f"unknown {what} URL scheme {scheme!r} in {url!r}; use one of: {_SCHEMES}")
