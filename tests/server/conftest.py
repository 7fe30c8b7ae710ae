"""Fixtures of the server tests: real ``threadline serve`` processes on SQLite and PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from backends import postgres_url_or_skip
from pgbouncer import pgbouncer  # noqa: F401  (the fixture, for the modules that ask)
from servers import Replica, fresh_postgres_database, replicas


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    """One replica on a fresh SQLite file."""
    path = tmp_path_factory.mktemp("serve") / "threadline.db"
    with replicas(f"sqlite:///{path}", 1) as (replica,):
        yield replica


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the module's replicas."""
    with fresh_postgres_database(postgres_url_or_skip()) as url:
        yield url


@pytest.fixture(scope="module")
def postgres_servers(postgres_database: str) -> Iterator[list[Replica]]:
    """Two replicas over one PostgreSQL database."""
    with replicas(postgres_database, 2) as started:
        yield started


@pytest.fixture(params=["sqlite", "postgres"])
def urls(request: pytest.FixtureRequest) -> list[str]:
    """The replicas' URLs: one on SQLite, or the module's two PostgreSQL replicas."""
    if request.param == "sqlite":
        return [request.getfixturevalue("sqlite_server").url]
    return [r.url for r in request.getfixturevalue("postgres_servers")]
