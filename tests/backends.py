"""The checkpointer backends every storage test runs against.

Adding a backend is one entry in :data:`BACKENDS`: a name, whether the saver is async, and a
factory that opens a fresh, isolated saver as a (sync or async) context manager, taking the
saver's keyword options (``serde=``, ``ttl=``, ``snapshot_ratio=``, ...)::

    @contextlib.contextmanager
    def _sqlite(**options):
        with tempfile.TemporaryDirectory() as tmp:
            with SqliteSaver.from_conn_string(f"{tmp}/t.db", **options) as saver:
                yield saver

    BACKENDS.append(Backend("sqlite", is_async=False, factory=_sqlite, corrupt=_corrupt_sqlite))

``needs="postgres"`` makes the fixtures call :func:`postgres_url_or_skip` first and marks the
tests ``postgres``. ``conftest.py`` turns the list into the ``saver`` / ``asaver`` /
``make_saver`` / ``amake_saver`` fixtures; :class:`Driver` lets one test body drive a sync or
an async saver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.checkpoint.memory import InMemorySaver
from threadline.checkpoint.sqlite import SqliteSaver
from threadline.checkpoint.sqlite.aio import AsyncSqliteSaver

__all__ = [
    "BACKENDS",
    "CORRUPT_BYTES",
    "DEFAULT_POSTGRES_URL",
    "POSTGRES_URL_ENV",
    "Backend",
    "Driver",
    "postgres_url",
    "postgres_url_or_skip",
]

POSTGRES_URL_ENV = "THREADLINE_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"

#: Bytes no serializer format accepts: what ``corrupt`` hooks store in place of a value.
CORRUPT_BYTES = b"\xc1\xc1 these bytes are not a threadline value \xc1"

#: ``factory(**saver_options)`` -> ``AbstractContextManager`` (sync) or
#: ``AbstractAsyncContextManager`` (async) yielding a saver.
SaverFactory = Callable[..., Any]
#: ``corrupt(saver, thread_id, channel, writer)``: overwrite the stored bytes of one channel
#: version with :data:`CORRUPT_BYTES`. May return an awaitable (async backends).
CorruptHook = Callable[[Any, str, str, str], Awaitable[None] | None]


@dataclass(frozen=True)
class Backend:
    """One checkpointer flavour the test suite runs against."""

    name: str
    """Test id: ``"memory"``, ``"sqlite"``, ``"postgres"`` (sync and async share a name)."""
    is_async: bool
    """True when the saver is driven through its ``a*`` methods."""
    factory: SaverFactory
    """``factory(**saver_options)`` -> context manager (async iff ``is_async``) yielding a
    fresh, isolated saver and closing it on exit."""
    needs: str | None = None
    """An external service the backend needs (a key of :data:`NEEDS`), checked before use."""
    corrupt: CorruptHook | None = None
    """Backend-specific hook for the corruption test; ``None`` skips it."""

    def require(self) -> None:
        """Skip (or, with ``CI=true``, fail) the current test if what the backend needs is
        missing."""
        if self.needs is not None:
            NEEDS[self.needs]()

    def param(self) -> Any:
        """This backend as a ``pytest.param`` with id ``name`` and a mark per need."""
        marks = [getattr(pytest.mark, self.needs)] if self.needs else []
        return pytest.param(self, id=self.name, marks=marks)


# ---------------------------------------------------------------------- PostgreSQL


def postgres_url() -> str:
    """The test server's URL: ``$THREADLINE_TEST_POSTGRES_URL`` or the local default."""
    return os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _redact(url: str) -> str:
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


@functools.cache
def _postgres_problem(url: str) -> str | None:
    """Why no server answers at ``url`` (probed once per process), or None when one does."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a dev dependency
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return None


def postgres_url_or_skip() -> str:
    """The URL of a PostgreSQL server that answers.

    When none does, skip the calling test with the reason; with ``CI=true`` fail it instead,
    so a CI run never passes by silently skipping the Postgres backends.
    """
    url = postgres_url()
    problem = _postgres_problem(url)
    if problem is None:
        return url
    reason = f"no PostgreSQL server at {_redact(url)} (set {POSTGRES_URL_ENV}): {problem}"
    if _in_ci():
        pytest.fail(f"{reason}; CI=true, so this fails instead of skipping", pytrace=False)
    pytest.skip(reason)


#: What ``Backend.needs`` may name, and how to check it is there.
NEEDS: dict[str, Callable[[], object]] = {"postgres": postgres_url_or_skip}


# ---------------------------------------------------------------------- in-memory


@contextlib.contextmanager
def _memory(**options: Any) -> Iterator[InMemorySaver]:
    saver = InMemorySaver(**options)
    try:
        yield saver
    finally:
        saver.close()


@contextlib.asynccontextmanager
async def _amemory(**options: Any) -> AsyncIterator[InMemorySaver]:
    saver = InMemorySaver(**options)
    try:
        yield saver
    finally:
        await saver.aclose()


def _corrupt_memory(saver: InMemorySaver, thread_id: str, channel: str, writer: str) -> None:
    with saver._lock:
        versions = saver._threads[thread_id].versions
        versions[(channel, writer)] = dataclasses.replace(
            versions[(channel, writer)], data=CORRUPT_BYTES
        )


BACKENDS: list[Backend] = [
    Backend("memory", is_async=False, factory=_memory, corrupt=_corrupt_memory),
    Backend("memory", is_async=True, factory=_amemory, corrupt=_corrupt_memory),
]
"""Every backend, sync and async. Append new ones here (see the module docstring)."""


# ---------------------------------------------------------------------- SQLite


@contextlib.contextmanager
def _sqlite(**options: Any) -> Iterator[SqliteSaver]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        SqliteSaver.from_conn_string(os.path.join(tmp, "t.db"), **options) as saver,
    ):
        yield saver


@contextlib.asynccontextmanager
async def _aiosqlite(**options: Any) -> AsyncIterator[AsyncSqliteSaver]:
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncSqliteSaver.from_conn_string(os.path.join(tmp, "t.db"), **options) as saver:
            yield saver


# The SQLite savers store checkpoint ids as a UUID's 16 bytes.
_CORRUPT_VERSION = "UPDATE versions SET data = ? WHERE thread_id = ? AND channel = ? AND writer = ?"


def _corrupt_sqlite(saver: SqliteSaver, thread_id: str, channel: str, writer: str) -> None:
    with saver._lock:
        saver.conn.execute(
            _CORRUPT_VERSION, (CORRUPT_BYTES, thread_id, channel, uuid.UUID(writer).bytes)
        )


async def _acorrupt_sqlite(
    saver: AsyncSqliteSaver, thread_id: str, channel: str, writer: str
) -> None:
    await saver.conn.execute(
        _CORRUPT_VERSION, (CORRUPT_BYTES, thread_id, channel, uuid.UUID(writer).bytes)
    )


BACKENDS += [
    Backend("sqlite", is_async=False, factory=_sqlite, corrupt=_corrupt_sqlite),
    Backend("aiosqlite", is_async=True, factory=_aiosqlite, corrupt=_acorrupt_sqlite),
]


# ---------------------------------------------------------------------- PostgreSQL savers
# Each saver gets its own schema (a fresh, unique name), dropped when the saver closes.


def _postgres_schema() -> str:
    return f"tl_test_{uuid.uuid4().hex[:16]}"


def _drop_postgres_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextlib.contextmanager
def _postgres(**options: Any) -> Iterator[Any]:
    from threadline.checkpoint.postgres import PostgresSaver

    url = postgres_url_or_skip()
    schema = _postgres_schema()
    try:
        with PostgresSaver.from_conn_string(url, schema=schema, pool_max_size=4, **options) as s:
            yield s
    finally:
        _drop_postgres_schema(url, schema)


@contextlib.asynccontextmanager
async def _apostgres(**options: Any) -> AsyncIterator[Any]:
    from threadline.checkpoint.postgres.aio import AsyncPostgresSaver

    url = postgres_url_or_skip()
    schema = _postgres_schema()
    try:
        async with AsyncPostgresSaver.from_conn_string(
            url, schema=schema, pool_max_size=4, **options
        ) as s:
            yield s
    finally:
        _drop_postgres_schema(url, schema)


def with_app_name(url: str, name: str) -> str:
    """``url`` with an ``application_name``, so :func:`terminate` can find its connections."""
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


def terminate(url: str, app_name: str) -> int:
    """Kill every server backend of ``app_name`` (as a DBA or a network failure would)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (app_name,),
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


def _corrupt_postgres(saver: Any, thread_id: str, channel: str, writer: str) -> None:
    import psycopg
    from psycopg import sql

    query = sql.SQL(
        "UPDATE {} SET data = %s WHERE thread_id = %s AND channel = %s AND writer = %s"
    ).format(sql.Identifier(saver.schema, "threadline_versions"))
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        cur = conn.execute(query, (CORRUPT_BYTES, thread_id, channel, writer))
        assert cur.rowcount == 1, (thread_id, channel, writer)


BACKENDS += [
    Backend(
        "postgres", is_async=False, factory=_postgres, needs="postgres", corrupt=_corrupt_postgres
    ),
    Backend(
        "postgres-async",
        is_async=True,
        factory=_apostgres,
        needs="postgres",
        corrupt=_corrupt_postgres,
    ),
]


def backend_params(*, is_async: bool) -> list[Any]:
    """``pytest.param`` per backend of one flavour, for ``@pytest.fixture(params=...)``."""
    return [b.param() for b in BACKENDS if b.is_async == is_async]


# ---------------------------------------------------------------------- one API for both


_CALLS = frozenset(
    {
        "get_tuple",
        "get",
        "load",
        "put",
        "put_writes",
        "child_id",
        "fork",
        "delete_thread",
        "copy_thread",
        "list_threads",
        "prune",
        "rewind",
        "sweep_expired",
        "setup",
        "acquire_lease",
        "renew_lease",
        "release_lease",
    }
)


class Driver:
    """Awaitable facade over a saver, so a test body is written once for both flavours.

    ``await driver.put(...)`` calls ``saver.put(...)`` on a sync backend and awaits
    ``saver.aput(...)`` on an async one; ``await driver.list(...)`` returns a list.
    """

    def __init__(self, saver: BaseCheckpointSaver, backend: Backend) -> None:
        self.saver = saver
        self.backend = backend

    @property
    def is_async(self) -> bool:
        return self.backend.is_async

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name not in _CALLS:
            raise AttributeError(name)
        if self.is_async:
            return getattr(self.saver, "a" + name)  # type: ignore[no-any-return]
        method = getattr(self.saver, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return call

    async def list(self, config: dict[str, Any], **kwargs: Any) -> list[Any]:
        if self.is_async:
            return [t async for t in self.saver.alist(config, **kwargs)]
        return list(self.saver.list(config, **kwargs))

    async def corrupt(self, thread_id: str, channel: str, writer: str) -> None:
        """Overwrite one stored channel version with :data:`CORRUPT_BYTES`."""
        if self.backend.corrupt is None:
            pytest.skip(f"backend {self.backend.name!r} has no corrupt hook")
        result = self.backend.corrupt(self.saver, thread_id, channel, writer)
        if inspect.isawaitable(result):
            await result
