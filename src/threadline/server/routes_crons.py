"""Crons: create (stateless or on a thread), update, delete, search and count.

Handlers only store crons; :mod:`~threadline.server.scheduler` fires them.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import runs as q
from .assistants import assistant_id_or_name
from .crons import COLUMNS, Cron, ScheduleError, check_schedule, next_due
from .http import ApiError, body_of, server_of, uuid_of
from .query import Where, choice, json_object, order_by, page, selected
from .routes_assistants import run_assistant
from .routes_runs import run_options
from .wire import now_iso

__all__ = ["cron_routes"]

_RUN_KEYS = (
    "input", "config", "context", "interrupt_before", "interrupt_after", "webhook",
    "stream_mode", "stream_subgraphs", "stream_resumable", "durability",
)  # fmt: skip
SORT_BY = (
    "cron_id", "assistant_id", "thread_id", "created_at", "updated_at", "next_run_date",
    "end_time",
)  # fmt: skip
FIELDS = (
    "cron_id", "assistant_id", "thread_id", "end_time", "schedule", "timezone", "created_at",
    "updated_at", "user_id", "payload", "next_run_date", "metadata", "now", "on_run_completed",
    "enabled",
)  # fmt: skip


def _payload(body: dict[str, Any], base: dict[str, Any], stateless: bool) -> dict[str, Any]:
    """The run options each firing gets: ``base`` with the body's run options over it."""
    given = {k: body[k] for k in _RUN_KEYS if body.get(k) is not None}
    strategy = choice(
        body.get("multitask_strategy", base.get("multitask_strategy")),
        q.MULTITASK_STRATEGIES, "multitask_strategy", "enqueue",
    )  # fmt: skip
    merged = {k: v for k, v in base.items() if k != "multitask_strategy"} | given
    if stateless:
        merged["on_completion"] = choice(
            body.get("on_run_completed", merged.get("on_completion")),
            ("delete", "keep"), "on_run_completed", "delete",
        )  # fmt: skip
    options, _delay = run_options(merged, stateless)
    return {**options, "multitask_strategy": strategy}


def _end_time(value: Any) -> float | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ApiError(422, f"end_time must be an ISO 8601 date and time, got {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def _enabled(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(422, f"enabled must be true or false, got {value!r}")
    return value


def _next(schedule: Any, timezone: Any, end: float | None) -> float | None:
    """When a new or changed schedule is first due; 422 saying what is wrong with it."""
    try:
        check_schedule(schedule, timezone)
    except ScheduleError as exc:
        raise ApiError(422, str(exc)) from None
    return next_due(schedule, timezone, time.time(), end)


async def _create(request: Request, thread_id: str | None) -> Response:
    body = await body_of(request)
    server = server_of(request)
    assistant = await run_assistant(request, body.get("assistant_id"))
    if thread_id is not None and not await server.db.execute(
        "SELECT 1 FROM tl_threads WHERE thread_id = ?", (thread_id,)
    ):
        raise ApiError(404, f"thread {thread_id} not found; create it first")
    end = _end_time(body.get("end_time"))
    first = _next(body.get("schedule"), body.get("timezone"), end)
    now = now_iso()
    payload = _payload(body, {}, stateless=thread_id is None)
    cron = Cron(
        cron_id=str(uuid.uuid4()),
        assistant_id=assistant.assistant_id,
        thread_id=thread_id,
        schedule=str(body["schedule"]),
        timezone=body.get("timezone"),
        payload=payload,
        metadata=json_object(body.get("metadata"), "metadata"),
        on_run_completed=payload.get("on_completion"),
        end_time=end,
        enabled=_enabled(body.get("enabled"), True),
        next_run_date=first,
        created_at=now,
        updated_at=now,
    )
    await server.db.execute(
        f"INSERT INTO tl_crons ({COLUMNS}) VALUES ({', '.join('?' * 13)})", cron.row()
    )
    return JSONResponse(cron.json())


async def create_stateless(request: Request) -> Response:
    return await _create(request, None)


async def create_for_thread(request: Request) -> Response:
    return await _create(request, uuid_of(request.path_params["thread_id"], "thread_id"))


async def _cron(request: Request) -> Cron:
    cron_id = uuid_of(request.path_params["cron_id"], "cron_id")
    rows = await server_of(request).db.execute(
        f"SELECT {COLUMNS} FROM tl_crons WHERE cron_id = ?", (cron_id,)
    )
    if not rows:
        raise ApiError(404, f"cron {cron_id} not found; crons.search() lists them")
    return Cron.of_row(rows[0])


async def update(request: Request) -> Response:
    body = await body_of(request)
    old = await _cron(request)
    schedule = body.get("schedule") or old.schedule
    timezone = body.get("timezone", old.timezone)
    end = _end_time(body["end_time"]) if "end_time" in body else old.end_time
    payload = _payload(body, old.payload, stateless=old.thread_id is None)
    enabled = _enabled(body.get("enabled"), old.enabled)
    # A changed schedule, end or switch counts from now; else the cron keeps its due time.
    timing = (schedule, timezone, end, enabled) != (
        old.schedule, old.timezone, old.end_time, old.enabled
    )  # fmt: skip
    cron = Cron(
        cron_id=old.cron_id,
        assistant_id=old.assistant_id,
        thread_id=old.thread_id,
        schedule=schedule,
        timezone=timezone,
        payload=payload,
        metadata={**old.metadata, **json_object(body.get("metadata"), "metadata")},
        on_run_completed=payload.get("on_completion"),
        end_time=end,
        enabled=enabled,
        next_run_date=_next(schedule, timezone, end) if timing else old.next_run_date,
        created_at=old.created_at,
        updated_at=now_iso(),
    )
    # Without a timing change next_run_date is not written: a replica may have claimed a due
    # time since it was read (moving it on), and writing the old one back would make that
    # time due again.
    values = dict(zip((c.strip() for c in COLUMNS.split(",")), cron.row(), strict=True))
    del values["cron_id"], values["created_at"]
    if not timing:
        del values["next_run_date"]
    rows = await server_of(request).db.execute(
        f"UPDATE tl_crons SET {', '.join(f'{c} = ?' for c in values)} WHERE cron_id = ?"
        f" RETURNING {COLUMNS}",
        (*values.values(), cron.cron_id),
    )
    if not rows:
        raise ApiError(404, f"cron {cron.cron_id} not found; crons.search() lists them")
    return JSONResponse(Cron.of_row(rows[0]).json())


async def delete(request: Request) -> Response:
    cron_id = uuid_of(request.path_params["cron_id"], "cron_id")
    gone = await server_of(request).db.execute(
        "DELETE FROM tl_crons WHERE cron_id = ? RETURNING cron_id", (cron_id,)
    )
    if not gone:
        raise ApiError(404, f"cron {cron_id} not found; crons.search() lists them")
    return Response(status_code=204)


def _where(request: Request, body: dict[str, Any]) -> Where:
    where = Where(server_of(request).db.kind)
    if body.get("assistant_id"):
        where.add("assistant_id = ?", assistant_id_or_name(str(body["assistant_id"])))
    if body.get("thread_id"):
        where.add("thread_id = ?", uuid_of(str(body["thread_id"]), "thread_id"))
    if body.get("enabled") is not None:
        where.add("enabled = ?", int(_enabled(body["enabled"], True)))
    where.contains("metadata", json_object(body.get("metadata"), "metadata"))
    return where


async def search(request: Request) -> Response:
    body = await body_of(request)
    where = _where(request, body)
    limit, offset = page(body)
    fields = selected(body, FIELDS)
    rows = await server_of(request).db.execute(
        f"SELECT {COLUMNS} FROM tl_crons{where.sql()}"
        f"{order_by(body, SORT_BY, 'created_at', 'cron_id')} LIMIT ? OFFSET ?",
        (*where.args, limit, offset),
    )
    return JSONResponse([Cron.of_row(r).json(fields) for r in rows])


async def count(request: Request) -> Response:
    body = await body_of(request)
    where = _where(request, body)
    rows = await server_of(request).db.execute(
        f"SELECT COUNT(*) FROM tl_crons{where.sql()}", where.args
    )
    return JSONResponse(int(rows[0][0]))


def cron_routes() -> list[Route]:
    """The cron routes."""
    one = "/runs/crons/{cron_id}"
    return [
        Route("/runs/crons", create_stateless, methods=["POST"]),
        Route("/threads/{thread_id}/runs/crons", create_for_thread, methods=["POST"]),
        Route("/runs/crons/search", search, methods=["POST"]),
        Route("/runs/crons/count", count, methods=["POST"]),
        Route(one, update, methods=["PATCH"]),
        Route(one, delete, methods=["DELETE"]),
    ]
