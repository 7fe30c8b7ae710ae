"""``from_url``: one entry point to configure any checkpointer."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .base import BaseCheckpointSaver
from .serde import EncryptionKeys, MsgpackSerializer

__all__ = ["from_url"]

_SCHEMES = "memory://, sqlite:///path/to/file.db (or sqlite:///:memory:), postgresql://user@host/db"


def from_url(
    url: str,
    *,
    aio: bool = False,
    ttl: float | None = None,
    compression: str | None = "zlib",
    encryption_key: EncryptionKeys | None = None,
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
    ``encryption_key`` (32 bytes, or its base64/hex text; or a list of keys, oldest first, for
    rotation: see :mod:`threadline.checkpoint.rekey`), ``pool_min_size``/``pool_max_size``
    (Postgres), and any keyword the backend's saver takes (e.g. ``schema=`` for Postgres).
    """
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"checkpointer URL {url!r} is not a URL; use one of: {_SCHEMES}")
    scheme = urlsplit(url).scheme.lower()
    if compression != "zlib" or encryption_key is not None:
        options["serde"] = MsgpackSerializer(
            compression=compression,  # type: ignore[arg-type]
            encryption_key=encryption_key,
            allow_plaintext=bool(options.pop("allow_plaintext", False)),
        )
    if ttl is not None:
        options["ttl"] = ttl
    if scheme == "memory":
        from .memory import InMemorySaver

        return InMemorySaver(**options)
    if scheme == "sqlite":
        path = url[len("sqlite://") :]
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise ValueError(f"{url!r} names no database file; e.g. sqlite:///checkpoints.db")
        if aio:
            from .sqlite.aio import AsyncSqliteSaver

            return AsyncSqliteSaver.from_conn_string(path, **options)
        from .sqlite import SqliteSaver

        return SqliteSaver.from_conn_string(path, **options)
    if scheme in ("postgres", "postgresql"):
        if pool_min_size is not None:
            options["pool_min_size"] = pool_min_size
        if pool_max_size is not None:
            options["pool_max_size"] = pool_max_size
        if aio:
            from .postgres.aio import AsyncPostgresSaver

            return AsyncPostgresSaver.from_conn_string(url, **options)
        from .postgres import PostgresSaver

        return PostgresSaver.from_conn_string(url, **options)
    raise ValueError(
        f"unknown checkpointer URL scheme {scheme!r} in {url!r}; use one of: {_SCHEMES}"
    )
