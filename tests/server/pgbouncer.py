"""A private PgBouncer in transaction pooling mode, in front of the test PostgreSQL.

The ``pgbouncer`` fixture starts one ``pgbouncer`` process per test module, with its own
ini in a temporary folder and a free port, pooling the module's fresh database in
``pool_mode = transaction`` with few server connections, so that consecutive transactions of
one client really land on different server connections. Tests that need it are skipped when
the binary is missing (``apt-get install pgbouncer``); with ``CI=true`` they fail instead,
since ``.ci/run`` installs it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

__all__ = ["PgBouncer", "pgbouncer", "pgbouncer_binary", "running_pgbouncer"]

#: Server connections PgBouncer opens to PostgreSQL: fewer than the replicas' clients.
SERVER_CONNECTIONS = 4


def pgbouncer_binary() -> str | None:
    """The ``pgbouncer`` executable (Debian installs it in /usr/sbin), or None."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


@dataclass
class PgBouncer:
    """A running PgBouncer: its process, port and log."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    database: str
    user: str

    @property
    def url(self) -> str:
        """The pooled database's URL through PgBouncer."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def admin(self, command: str) -> list[dict[str, Any]]:
        """Rows of an admin console command (``SHOW POOLS``, ``SHOW STATS``...)."""
        admin_url = f"postgresql://{self.user}@127.0.0.1:{self.port}/pgbouncer"
        # The console speaks the simple query protocol only: a client-side cursor, no params.
        with psycopg.connect(admin_url, autocommit=True, cursor_factory=psycopg.ClientCursor) as c:
            cur = c.execute(command)
            names = [col.name for col in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ini(directory: Path, upstream: str, port: int) -> tuple[Path, str, str]:
    target = conninfo_to_dict(upstream)
    database, user = str(target["dbname"]), str(target.get("user") or "postgres")
    server = f"host={target.get('host', '127.0.0.1')} port={target.get('port', 5432)}"
    server += f" dbname={database} user={user}"
    if target.get("password"):
        server += f" password={target['password']}"
    (directory / "users.txt").write_text(f'"{user}" ""\n')
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        f"""[databases]
{database} = {server}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "users.txt"}
admin_users = {user}
pool_mode = transaction
default_pool_size = {SERVER_CONNECTIONS}
max_client_conn = 500
query_wait_timeout = 30
"""
    )
    return ini, database, user


def _command(binary: str, ini: Path) -> list[str]:
    # PgBouncer refuses to run as root; it reads its files before switching user.
    if os.geteuid() != 0:
        return [binary, str(ini)]
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return [binary, "-u", pwd.getpwnam(name).pw_name, str(ini)]
    raise RuntimeError("running as root, and no postgres or nobody user for PgBouncer to be")


def _wait_until_it_answers(bouncer: PgBouncer, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if bouncer.proc.poll() is not None:
            raise RuntimeError(f"pgbouncer exited: {bouncer.log.read_text()[-2000:]}")
        try:
            with psycopg.connect(bouncer.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def running_pgbouncer(binary: str, directory: Path, upstream: str) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode for ``upstream``'s database, stopped afterwards."""
    port = _free_port()
    ini, database, user = _ini(directory, upstream, port)
    log = directory / "pgbouncer.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _command(binary, ini), stdout=out, stderr=subprocess.STDOUT, cwd=directory
        )
    bouncer = PgBouncer(proc, port, log, database, user)
    try:
        _wait_until_it_answers(bouncer)
        yield bouncer
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def pgbouncer(
    postgres_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgBouncer]:
    """A private PgBouncer (transaction pooling) in front of the module's PostgreSQL database."""
    binary = pgbouncer_binary()
    if binary is None:
        reason = "no pgbouncer binary (apt-get install pgbouncer)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}; CI=true, so this fails instead of skipping", pytrace=False)
        pytest.skip(reason)
    with running_pgbouncer(binary, tmp_path_factory.mktemp("pgbouncer"), postgres_database) as b:
        yield b
