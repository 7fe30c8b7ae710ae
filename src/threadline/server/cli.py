"""The ``threadline`` command line: ``threadline serve``."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from .connections import DEFAULT_POOL_SIZE

__all__ = ["listening_socket", "main", "run_loop"]

DEFAULT_DATABASE = "sqlite:///.threadline/threadline.db"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _pool_size(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SystemExit(
            f"--pool-size (THREADLINE_POOL_SIZE) must be a whole number of 1 or more, got {value!r}"
        ) from None


def _switch(value: bool | str) -> bool:
    """``--prepare``/``--no-prepare``, or ``THREADLINE_PREPARE`` as 1/0, true/false, on/off."""
    if isinstance(value, bool):
        return value
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise SystemExit(f"THREADLINE_PREPARE must be 1 or 0 (true/false, on/off), got {value!r}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="threadline")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the graphs of langgraph.json over HTTP")
    serve.add_argument("--config", default="langgraph.json", help="path to langgraph.json")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=2024, help="0 picks a free port")
    serve.add_argument(
        "--database-url",
        default=os.environ.get("THREADLINE_DATABASE_URL", DEFAULT_DATABASE),
        help="sqlite:///file.db (one replica) or postgresql://... (many replicas)",
    )
    serve.add_argument(
        "--listen-url",
        default=os.environ.get("THREADLINE_LISTEN_URL") or None,
        help="PostgreSQL: a direct URL for the LISTEN connection (default: --database-url);"
        " needed when --database-url goes through a transaction-mode pooler",
    )
    serve.add_argument(
        "--pool-size",
        default=os.environ.get("THREADLINE_POOL_SIZE", str(DEFAULT_POOL_SIZE)),
        help="PostgreSQL: the most connections each of the server's pools opens (tables,"
        f" checkpointer, store; default {DEFAULT_POOL_SIZE})",
    )
    serve.add_argument(
        "--prepare",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("THREADLINE_PREPARE", "1"),
        help="PostgreSQL: server-side prepared statements; --no-prepare behind"
        " PgBouncer in transaction mode (before 1.21, or without max_prepared_statements)",
    )
    serve.add_argument("--workers", type=int, default=10, help="concurrent runs; 0: API only")
    serve.add_argument("--lease", type=float, default=10.0, help="seconds a run's lease lasts")
    serve.add_argument(
        "--shutdown-grace",
        type=float,
        default=10.0,
        help="on SIGTERM, seconds runs may finish before they are handed to another replica",
    )
    serve.add_argument(
        "--sweep-interval",
        type=float,
        default=60.0,
        help="seconds between sweeps of expired data (one replica sweeps per interval)",
    )
    return parser


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: a free port), for uvicorn to listen on."""
    # proto=IPPROTO_TCP: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they
    # are TCP; with proto 0 every keep-alive response waited ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed (a faster loop), else on asyncio's own."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``threadline`` console script."""
    args = _parser().parse_args(argv)
    try:
        import uvicorn

        from .app import create_app
        from .graphs import load_config
    except ImportError as exc:
        raise SystemExit(
            f"threadline serve needs the server extra: pip install 'threadline[server]' ({exc})"
        ) from None
    config = load_config(args.config)
    os.environ.update(config.env)
    if args.workers < 0:
        raise SystemExit("--workers must be 0 or more")
    url = args.database_url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    if args.sweep_interval <= 0:
        raise SystemExit("--sweep-interval must be a positive number of seconds")
    try:
        app = create_app(
            config, url, workers=args.workers, lease=args.lease, grace=args.shutdown_grace,
            sweep_interval=args.sweep_interval, listen_url=args.listen_url,
            pool_size=_pool_size(args.pool_size), prepare=_switch(args.prepare),
        )  # fmt: skip
    except ValueError as exc:  # a setting, or a combination of them, that cannot work
        raise SystemExit(f"threadline serve: {exc}") from None
    sock = listening_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    original = server.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original(sockets=sockets)
        print(f"threadline serve: listening on http://{host}:{port}", flush=True)

    server.startup = startup  # type: ignore[method-assign]
    run_loop(server.serve(sockets=[sock]))
    sys.exit(0)
