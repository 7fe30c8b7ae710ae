"""Re-encrypt every stored value with the newest key, while threads stay in use.

From Python: ``rekey(saver)`` or ``await arekey(saver)``, with a saver whose serializer holds
the keys, oldest first (``encryption_key=[old, new]``). From a shell::

    THREADLINE_ENCRYPTION_KEYS="old-key new-key" \\
        python -m threadline.checkpoint.rekey --url postgresql://user@host/db

Values are rewritten a page of rows at a time, each page in its own short transaction, and a
row is rewritten only if it still holds the bytes that were read (so a concurrent change is
never overwritten). Versions, checkpoints and pending writes are immutable, and the rewritten
ciphertext holds the same plaintext at the same place, so running threads are unaffected;
thread metadata, which commits may rewrite, is protected by that compare. Run it again until
it reports nothing left to rewrite, then drop the old key.

Values that are not encrypted (or were encrypted by a threadline that did not bind them to
their place) are left alone, and counted, unless ``migrate=True`` (``--migrate``); reading
them then needs ``allow_plaintext=True`` (the command line sets it with ``--migrate``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from ..errors import CorruptCheckpointError
from .base import BaseCheckpointSaver
from .binding import COLUMNS, StoredValue
from .serde import MsgpackSerializer

__all__ = ["RekeyReport", "arekey", "main", "rekey"]

DEFAULT_BATCH = 500
KEYS_ENV = "THREADLINE_ENCRYPTION_KEYS"


@dataclass
class RekeyReport:
    """What a re-encryption pass found and did."""

    threads: int = 0
    rewritten: int = 0
    """Values re-encrypted with the newest key (or encrypted, when migrating)."""
    current: int = 0
    """Values already encrypted with the newest key."""
    unencrypted: int = 0
    """Values left unencrypted or unbound (pass ``migrate=True`` to encrypt them)."""
    skipped: int = 0
    """Values that changed between the read and the rewrite (run again to cover them)."""

    @property
    def done(self) -> bool:
        """Whether every value is now encrypted with the newest key."""
        return self.unencrypted == 0 and self.skipped == 0


class _Threads(NamedTuple):
    after: str | None
    limit: int


class _Page(NamedTuple):
    column: str
    thread_id: str
    after: tuple[Any, ...] | None
    limit: int


class _Replace(NamedTuple):
    thread_id: str
    updates: list[tuple[StoredValue, bytes]]


_Request = _Threads | _Page | _Replace
_Plan = Generator[_Request, Any, RekeyReport]


def _plan(
    serde: MsgpackSerializer, thread_ids: Sequence[str] | None, batch: int, migrate: bool
) -> _Plan:
    """The whole pass as requests for a driver: pages of threads, pages of values, rewrites."""
    report = RekeyReport()
    if thread_ids is not None:
        for thread_id in dict.fromkeys(thread_ids):
            yield from _thread_plan(serde, thread_id, batch, migrate, report)
        return report
    after: str | None = None
    while True:
        ids: list[str] = yield _Threads(after, batch)
        for thread_id in ids:
            yield from _thread_plan(serde, thread_id, batch, migrate, report)
        if len(ids) < batch:
            return report
        after = ids[-1]


def _thread_plan(
    serde: MsgpackSerializer, thread_id: str, batch: int, migrate: bool, report: RekeyReport
) -> Generator[_Request, Any, None]:
    report.threads += 1
    for column in COLUMNS:
        after: tuple[Any, ...] | None = None
        while True:
            page: list[StoredValue] = yield _Page(column, thread_id, after, batch)
            updates = []
            for value in page:
                try:
                    new = serde.reseal(value.data, value.place(thread_id), migrate=migrate)
                except CorruptCheckpointError as exc:
                    raise type(exc)(
                        f"{exc} ({column} of thread {thread_id!r}, row {value.key!r}); nothing"
                        " of this row was rewritten"
                    ) from exc
                if new is not None:
                    updates.append((value, new))
                elif serde.key_id_of(value.data) is None:
                    report.unencrypted += 1
                else:
                    report.current += 1
            if updates:
                done: int = yield _Replace(thread_id, updates)
                report.rewritten += done
                report.skipped += len(updates) - done
            if len(page) < batch:
                break
            after = page[-1].key


def _serde(saver: BaseCheckpointSaver) -> MsgpackSerializer:
    serde = saver.serde
    if not isinstance(serde, MsgpackSerializer) or not serde.encrypted:
        raise ValueError(
            "rekey needs a saver whose serializer encrypts: pass"
            " serde=MsgpackSerializer(encryption_key=[old_key, new_key]) (oldest first)"
        )
    return serde


def _check_batch(batch_size: int) -> int:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def rekey(
    saver: BaseCheckpointSaver,
    *,
    thread_ids: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH,
    migrate: bool = False,
) -> RekeyReport:
    """Re-encrypt every value of every thread (or of ``thread_ids``) with the newest key."""
    plan = _plan(_serde(saver), thread_ids, _check_batch(batch_size), migrate)
    reply: Any = None
    while True:
        try:
            request = plan.send(reply)
        except StopIteration as stop:
            result: RekeyReport = stop.value
            return result
        if isinstance(request, _Threads):
            reply = saver._thread_page(request.after, request.limit)
        elif isinstance(request, _Page):
            reply = saver._stored_page(*request)
        else:
            reply = saver._replace_stored(request.thread_id, request.updates)


async def arekey(
    saver: BaseCheckpointSaver,
    *,
    thread_ids: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH,
    migrate: bool = False,
) -> RekeyReport:
    """Async :func:`rekey`, for the async savers."""
    plan = _plan(_serde(saver), thread_ids, _check_batch(batch_size), migrate)
    reply: Any = None
    while True:
        try:
            request = plan.send(reply)
        except StopIteration as stop:
            result: RekeyReport = stop.value
            return result
        if isinstance(request, _Threads):
            reply = await saver._athread_page(request.after, request.limit)
        elif isinstance(request, _Page):
            reply = await saver._astored_page(*request)
        else:
            reply = await saver._areplace_stored(request.thread_id, request.updates)


# ---------------------------------------------------------------------- command line


def _read_keys(args: argparse.Namespace) -> list[str]:
    if args.key_file:
        with open(args.key_file, encoding="utf-8") as f:
            text = f.read()
    else:
        text = os.environ.get(KEYS_ENV, "")
    keys = [k for k in text.replace(",", " ").split() if k and not k.startswith("#")]
    if not keys:
        where = args.key_file or f"the environment variable {KEYS_ENV}"
        raise SystemExit(
            f"rekey: no keys found in {where}; give the keys (base64 or hex), oldest first,"
            " separated by spaces, commas or newlines. Keys are never taken as arguments, which"
            " other users of the machine could see."
        )
    return keys


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m threadline.checkpoint.rekey``: see the module's documentation."""
    parser = argparse.ArgumentParser(
        prog="python -m threadline.checkpoint.rekey",
        description="Re-encrypt every stored value with the newest key. Keys (oldest first)"
        f" come from ${KEYS_ENV} or --key-file.",
    )
    parser.add_argument("--url", required=True, help="the checkpointer URL, as for from_url")
    parser.add_argument("--key-file", help="file holding the keys, oldest first")
    parser.add_argument("--schema", help="PostgreSQL schema (default: public)")
    parser.add_argument("--thread", action="append", help="only this thread (repeatable)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument(
        "--migrate", action="store_true", help="also encrypt values stored unencrypted"
    )
    args = parser.parse_args(argv)
    from .url import from_url

    options: dict[str, Any] = {"allow_plaintext": args.migrate}
    if args.schema:
        options["schema"] = args.schema
    with from_url(args.url, encryption_key=_read_keys(args), **options) as saver:
        report = rekey(
            saver, thread_ids=args.thread, batch_size=args.batch_size, migrate=args.migrate
        )
    print(json.dumps({**asdict(report), "done": report.done}))
    return 0 if report.done else 1


if __name__ == "__main__":
    sys.exit(main())
