"""A load balancer for tests: a TCP proxy in a thread that sends each new connection to the
first replica that accepts it, so a replica that dies is skipped from then on."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import urllib.parse
from collections.abc import Iterator

__all__ = ["failover_proxy"]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@contextlib.contextmanager
def failover_proxy(urls: list[str]) -> Iterator[str]:
    """The URL of a proxy in front of ``urls`` (``http://host:port``), tried in order."""
    upstreams = [urllib.parse.urlsplit(u) for u in urls]
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    address: list[str] = []

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for upstream in upstreams:
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    upstream.hostname, upstream.port
                )
            except OSError:
                continue  # down: the next one
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            return
        writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(connected, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()[:2]
        address.append(f"http://{host}:{port}")
        ready.set()
        async with server:
            await server.serve_forever()

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(serve())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield address[0]
    finally:
        for task in asyncio.all_tasks(loop):
            loop.call_soon_threadsafe(task.cancel)
        thread.join(10)
        loop.close()
