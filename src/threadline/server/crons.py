"""Crons as rows of ``tl_crons``: schedules, when each is next due, and claiming a due time.

A cron is a run's options plus a 5-field cron schedule (UTC unless it names a timezone).
``next_run_date`` (seconds since the epoch; NULL once past ``end_time``) is the only thing
replicas race for: a replica fires a due time only if its conditional ``UPDATE`` moved that
time forward (:func:`claim`, which passes by a cron another replica's claim has locked), in
the transaction that inserts the due time's run, so among any number of replicas each due
time fires once (:mod:`~threadline.server.scheduler`).
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from croniter import croniter  # type: ignore[import-untyped]

from .db import Database, Tx

__all__ = [
    "COLUMNS",
    "Cron",
    "ScheduleError",
    "check_schedule",
    "claim",
    "due_crons",
    "iso",
    "next_due",
]

COLUMNS = (
    "cron_id, assistant_id, thread_id, schedule, timezone, payload, metadata,"
    " on_run_completed, end_time, enabled, next_run_date, created_at, updated_at"
)


class ScheduleError(ValueError):
    """A schedule or timezone that cannot be used (HTTP 422)."""


def _zone(timezone: str | None) -> dt.tzinfo:
    if not timezone:
        return dt.timezone.utc
    try:
        return zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"timezone {timezone!r} is not an IANA timezone name, e.g. 'America/New_York'"
        ) from None


def check_schedule(schedule: Any, timezone: Any = None) -> None:
    """Raise :class:`ScheduleError` unless ``schedule`` is a 5-field cron expression and
    ``timezone`` (if any) an IANA name."""
    if timezone is not None and not isinstance(timezone, str):
        raise ScheduleError(f"timezone must be an IANA timezone name, got {timezone!r}")
    _zone(timezone)
    if (
        not isinstance(schedule, str)
        or len(schedule.split()) != 5
        or not croniter.is_valid(schedule)
    ):
        raise ScheduleError(
            f"schedule must be a 5-field cron expression (minute hour day month weekday),"
            f" e.g. '*/5 * * * *', got {schedule!r}"
        )


def next_due(schedule: str, timezone: str | None, after: float, end: float | None) -> float | None:
    """The first time ``schedule`` is due strictly after ``after``; None if past ``end``."""
    start = dt.datetime.fromtimestamp(after, _zone(timezone))
    due = float(croniter(schedule, start).get_next(float))
    return None if end is not None and due > end else due


def iso(seconds: float | None) -> str | None:
    """Seconds since the epoch as the API's ISO 8601 time (UTC)."""
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat()


@dataclass(frozen=True)
class Cron:
    """One ``tl_crons`` row. ``payload``: the run options each firing's run gets."""

    cron_id: str
    assistant_id: str
    thread_id: str | None
    schedule: str
    timezone: str | None
    payload: dict[str, Any]
    metadata: dict[str, Any]
    on_run_completed: str | None
    end_time: float | None
    enabled: bool
    next_run_date: float | None
    created_at: str
    updated_at: str

    @classmethod
    def of_row(cls, row: Sequence[Any]) -> Cron:
        return cls(
            row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), json.loads(row[6]),
            row[7], row[8], bool(row[9]), row[10], row[11], row[12],
        )  # fmt: skip

    def json(self, fields: Sequence[str] | None = None) -> dict[str, Any]:
        """The API's ``Cron`` (only ``fields`` when given)."""
        out = {
            "cron_id": self.cron_id,
            "assistant_id": self.assistant_id,
            "thread_id": self.thread_id,
            "on_run_completed": self.on_run_completed,
            "end_time": iso(self.end_time),
            "schedule": self.schedule,
            "timezone": self.timezone,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "payload": self.payload,
            "user_id": None,
            "next_run_date": iso(self.next_run_date),
            "metadata": self.metadata,
            "enabled": self.enabled,
        }
        if fields is not None:
            out["now"] = iso(dt.datetime.now(dt.timezone.utc).timestamp())
            return {k: out[k] for k in fields}
        return out

    def row(self) -> tuple[Any, ...]:
        """The values of :data:`COLUMNS`, in order."""
        return (
            self.cron_id, self.assistant_id, self.thread_id, self.schedule, self.timezone,
            json.dumps(self.payload), json.dumps(self.metadata), self.on_run_completed,
            self.end_time, int(self.enabled), self.next_run_date, self.created_at,
            self.updated_at,
        )  # fmt: skip


async def due_crons(db: Database, now: float, limit: int = 100) -> list[Cron]:
    """Enabled crons due at ``now`` or earlier, the longest overdue first."""
    rows = await db.execute(
        f"SELECT {COLUMNS} FROM tl_crons WHERE enabled = 1 AND next_run_date <= ?"
        " ORDER BY next_run_date LIMIT ?",
        (now, limit),
    )
    return [Cron.of_row(r) for r in rows]


async def claim(db: Database | Tx, cron: Cron, now: float) -> float | None:
    """Take ``cron``'s due time for this replica: the time it fires for, or None if another
    replica took it first, holds it now, or the cron changed meanwhile.

    In a transaction (a :class:`~threadline.server.db.Tx`) the claim holds only if it
    commits, and until then the cron's row is locked. On PostgreSQL the row is
    locked ``FOR UPDATE SKIP LOCKED``: a replica never waits for another's claim, it passes
    the cron by (None), and a later tick finds the time taken (a commit) or still due (a
    rollback). SQLite has one writer: its transactions never meet a row lock. The next due
    time is the first after ``now``: times missed while no replica ran fire once, not once
    each.
    """
    due = cron.next_run_date
    following = next_due(cron.schedule, cron.timezone, max(now, due or now), cron.end_time)
    where = "cron_id = ? AND next_run_date = ? AND enabled = 1"
    if db.kind == "postgres":
        won = await db.execute(
            f"UPDATE tl_crons SET next_run_date = ? WHERE {where} AND cron_id IN"
            f" (SELECT cron_id FROM tl_crons WHERE {where} FOR UPDATE SKIP LOCKED)"
            " RETURNING cron_id",
            (following, cron.cron_id, due, cron.cron_id, due),
        )
    else:
        won = await db.execute(
            f"UPDATE tl_crons SET next_run_date = ? WHERE {where} RETURNING cron_id",
            (following, cron.cron_id, due),
        )
    return due if won else None
