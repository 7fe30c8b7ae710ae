"""Runs on a thread and stateless: create, wait, stream, join, cancel.

Handlers never run graphs: they insert runs and follow the events workers store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import lifecycle as life
from . import runs as q
from .http import ApiError, body_of, raw_body, server_of, uuid_of
from .routes_assistants import run_assistant
from .sse import HEARTBEAT, frame
from .streaming import API_STREAM_MODES
from .thread_events import STATE_UPDATE, thread_key
from .worker import Outcome

__all__ = ["run_options", "run_routes"]

HEARTBEAT_SECONDS = 5.0

_RUN_KEYS = (
    "input", "command", "config", "context", "stream_mode", "stream_subgraphs",
    "interrupt_before", "interrupt_after", "checkpoint_id", "durability", "on_completion",
    "stream_resumable", "on_disconnect", "after_seconds", "checkpoint", "webhook",
)  # fmt: skip


def run_options(body: dict[str, Any], stateless: bool) -> tuple[dict[str, Any], float]:
    """The run's stored options and its delay; 422 naming the option that is wrong."""
    kwargs = {k: body[k] for k in _RUN_KEYS if body.get(k) is not None}
    delay = kwargs.get("after_seconds", 0)
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay < 1e9:
        raise ApiError(422, f"after_seconds must be a number of seconds >= 0, got {delay!r}")
    if kwargs.get("on_disconnect", "continue") not in ("cancel", "continue"):
        raise ApiError(422, "on_disconnect must be 'cancel' or 'continue'")
    if kwargs.get("on_completion", "delete") not in ("delete", "keep"):
        raise ApiError(422, "on_completion must be 'delete' or 'keep'")
    modes = kwargs.get("stream_mode", [])
    for mode in [modes] if isinstance(modes, str) else modes:
        if mode not in API_STREAM_MODES:
            raise ApiError(
                422, f"stream_mode {mode!r} is not supported; use some of {API_STREAM_MODES}"
            )
    if "webhook" in kwargs and (why := life.check_webhook(kwargs["webhook"])):
        raise ApiError(422, why)
    if stateless:  # its temporary thread is deleted when it ends unless told to keep it
        kwargs.setdefault("on_completion", "delete")
    else:
        kwargs.pop("on_completion", None)  # only for stateless runs, as in LangGraph
    return kwargs, float(delay)


async def _create(
    request: Request, thread_id: str | None, run_id: str | None = None, *, live: bool = True
) -> tuple[dict[str, Any], bool]:
    return await _create_from(request, await body_of(request), thread_id, run_id, live=live)


async def _create_from(
    request: Request,
    body: dict[str, Any],
    thread_id: str | None,
    run_id: str | None = None,
    *,
    live: bool = True,
) -> tuple[dict[str, Any], bool]:
    server = server_of(request)
    assistant = await run_assistant(request, body.get("assistant_id"))
    strategy = body.get("multitask_strategy") or "enqueue"
    if strategy not in q.MULTITASK_STRATEGIES:
        raise ApiError(422, f"multitask_strategy must be one of {q.MULTITASK_STRATEGIES}")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ApiError(422, "metadata must be a JSON object")
    stateless = thread_id is None
    options, delay = run_options(body, stateless)
    kwargs = assistant.run_kwargs(options)
    worker = server.worker
    slot = worker.reserve()
    claimed = None
    try:
        run, _cancelled, claimed = await q.create_run(
            server.db,
            thread_id=thread_id or str(uuid.uuid4()),
            assistant_id=assistant.assistant_id,
            graph_id=assistant.graph_id,
            kwargs=kwargs,
            metadata=metadata,
            strategy=strategy,
            create_thread=stateless or body.get("if_not_exists") == "create",
            run_id=run_id,
            live_events=live,
            delay=delay,
            # A free worker here takes the run at creation (the thread idle): no queue trip.
            owner=worker.owner if slot else None,
            lease=worker.lease,
            thread_ttl=server.thread_ttl,
        )
    except q.RunConflict as exc:
        raise ApiError(409, str(exc)) from None
    except q.ThreadMissing as exc:
        raise ApiError(404, str(exc)) from None
    finally:
        if slot and claimed is None:
            worker.release()
    if claimed is not None:
        worker.adopt(claimed)
    return run, stateless


def _locations(run: dict[str, Any], stateless: bool, suffix: str) -> dict[str, str]:
    base = f"/threads/{run['thread_id']}/runs/{run['run_id']}"
    return {"Content-Location": base, "Location": base + suffix}


async def _run_row(request: Request, run_id: str) -> tuple[Any, ...] | None:
    rows = await server_of(request).db.execute(
        f"SELECT {q.RUN_COLUMNS} FROM tl_runs WHERE run_id = ?", (run_id,)
    )
    return rows[0] if rows else None


RECHECK_SECONDS = 1.0
"""How long a waiter sleeps without an announcement before re-reading the run anyway."""


async def _wait_done(request: Request, run_id: str) -> Any:
    server = server_of(request)
    with (
        server.db.notifier.subscribe(f"run:{run_id}") as changed,
        server.worker.handing_over(run_id) as box,
    ):
        return await _outcome(request, run_id, changed, box)


async def _outcome(
    request: Request, run_id: str, changed: asyncio.Event, box: Outcome, *, queued: bool = False
) -> Any:
    """The run's result once it ends; ``changed`` is set by the run's announcements, and
    ``box`` holds the result when this replica executed the run.

    ``queued``: the caller has just created the run (subscribed first), so the first read can
    wait for an announcement.
    """
    while True:
        if box.ready:
            return box.value
        if queued:
            queued = False
        else:
            changed.clear()
            row = await _run_row(request, run_id)
            if row is None:
                return None
            if row[4] in q.TERMINAL:
                return json.loads(row[11]) if row[11] else None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(changed.wait(), RECHECK_SECONDS)


async def create_background(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    run, stateless = await _create(request, thread_id)
    return JSONResponse(run, headers=_locations(run, stateless, ""))


async def create_stateless(request: Request) -> Response:
    run, stateless = await _create(request, None)
    return JSONResponse(run, headers=_locations(run, stateless, ""))


WAIT_STREAMS_AFTER = 1.0
"""A wait still going after this many seconds sends its headers (with ``Location``) and a
newline every :data:`HEARTBEAT_SECONDS` until its body, as LangGraph's server does: proxies see
traffic, and a client cut off mid-wait reconnects to ``Location`` (the run's ``/join``)."""


async def wait_run(request: Request) -> Response:
    thread_id = request.path_params.get("thread_id")
    run_id = str(uuid.uuid4())
    with contextlib.ExitStack() as stack:
        # Subscribed before the run exists, so its outcome cannot slip past between the two.
        waiting = _watch(request, run_id, stack, queued=True)
        try:
            run, stateless = await _create(
                request, None if thread_id is None else uuid_of(thread_id, "thread_id"), run_id,
                live=False,
            )  # fmt: skip
        except BaseException:
            waiting.cancel()
            raise
        cancel = run["kwargs"].get("on_disconnect") == "cancel"
        headers = _locations(run, stateless, "/join")
        return await _wait_response(request, run_id, waiting, stack.pop_all(), headers, cancel)
    raise AssertionError("unreachable")  # pragma: no cover (mypy: the with block returns)


def _watch(
    request: Request, run_id: str, stack: contextlib.ExitStack, *, queued: bool = False
) -> asyncio.Future[Any]:
    """The run's outcome, as a future; its subscriptions live as long as ``stack``."""
    server = server_of(request)
    changed = stack.enter_context(server.db.notifier.subscribe(f"run:{run_id}"))
    box = stack.enter_context(server.worker.handing_over(run_id))
    return asyncio.ensure_future(_outcome(request, run_id, changed, box, queued=queued))


async def _wait_response(
    request: Request,
    run_id: str,
    waiting: asyncio.Future[Any],
    stack: contextlib.ExitStack,
    headers: dict[str, str],
    cancel: bool,
) -> Response:
    """The outcome as JSON; after :data:`WAIT_STREAMS_AFTER`, streamed with heartbeats.

    ``cancel`` (``on_disconnect="cancel"``): a client that goes away first cancels the run.
    ``stack`` (the outcome's subscriptions) is closed once the response is done with it.
    """
    try:
        gone = asyncio.ensure_future(_disconnected(request)) if cancel else None
        try:
            watched = {waiting} if gone is None else {waiting, gone}
            await asyncio.wait(
                watched, timeout=WAIT_STREAMS_AFTER, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if gone is not None:
                gone.cancel()  # the streaming response listens for the disconnect itself
        if gone is not None and gone.done() and not gone.cancelled() and not waiting.done():
            waiting.cancel()
            stack.close()
            await _cancel(request, run_id, "interrupt")
            return Response(status_code=204)  # nobody is listening
        if waiting.done():
            stack.close()
            return JSONResponse(waiting.result(), headers=headers)
    except BaseException:
        waiting.cancel()
        stack.close()
        raise
    body = _heartbeats_then_outcome(request, run_id, waiting, stack, cancel)
    return StreamingResponse(body, media_type="application/json", headers=headers)


async def _heartbeats_then_outcome(
    request: Request,
    run_id: str,
    waiting: asyncio.Future[Any],
    stack: contextlib.ExitStack,
    cancel: bool,
) -> AsyncIterator[bytes]:
    ended = False
    try:
        while not (await asyncio.wait({waiting}, timeout=HEARTBEAT_SECONDS))[0]:
            yield b"\n"  # JSON allows whitespace before the value
        yield bytes(JSONResponse(waiting.result()).body)
        ended = True
    finally:
        waiting.cancel()
        stack.close()
        if cancel and not ended:  # torn down by a disconnect: cancel in a task of its own
            _in_background(_cancel(request, run_id, "interrupt"))


async def _disconnected(request: Request) -> None:
    """Return when the client goes away (the body is read: the next message says so)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def stream_run(request: Request) -> Response:
    thread_id = request.path_params.get("thread_id")
    run, stateless = await _create(
        request, None if thread_id is None else uuid_of(thread_id, "thread_id")
    )
    cancel = run["kwargs"].get("on_disconnect") == "cancel"
    return StreamingResponse(
        _follow_or_cancel(request, run["run_id"], -1, cancel=cancel),
        media_type="text/event-stream",
        headers=_locations(run, stateless, "/stream"),
    )


_BACKGROUND: set[asyncio.Task[Any]] = set()  # cancels started as a stream is torn down


async def _follow_or_cancel(
    request: Request, run_id: str, after: int, *, cancel: bool, modes: set[str] | None = None
) -> AsyncIterator[bytes]:
    """:func:`_follow`, only the events of ``modes`` (None: all); with ``cancel``, a client
    that disconnects before the run ends cancels it."""
    ended = False
    try:
        async for chunk in _follow(request, run_id, after):
            if modes is None or _event_of(chunk) in modes:
                yield chunk
        ended = True
    finally:
        if cancel and not ended:
            # The stream's task is being cancelled: the cancel must run in a task of its own.
            _in_background(_cancel(request, run_id, "interrupt"))


def _in_background(work: Coroutine[Any, Any, Any]) -> None:
    task = asyncio.get_running_loop().create_task(work)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


def _event_of(chunk: bytes) -> str:
    """The stream mode of an SSE frame (``updates|sub:1`` -> ``updates``); heartbeats pass."""
    if not chunk.startswith(b"event: "):
        return ""
    name = chunk[7 : chunk.index(b"\n")].decode()
    return name.split("|", 1)[0]


def _modes_wanted(request: Request) -> set[str] | None:
    """join_stream's ``stream_mode`` query: the event names to pass (None: everything)."""
    asked = [m for m in request.query_params.getlist("stream_mode") if m]
    if not asked:
        return None
    names = {"", "metadata", "error", "end"}
    for mode in asked:
        if mode == "messages":
            names |= {"messages/partial", "messages/complete", "messages/metadata"}
        names.add("messages" if mode == "messages-tuple" else mode)
    return names


async def _pause(changed: asyncio.Event, idle: float) -> float | None:
    """Sleep until ``changed`` is set, at most :data:`RECHECK_SECONDS`: the stream's quiet time
    since its last heartbeat, or None when the next heartbeat is due (the count restarts)."""
    try:
        await asyncio.wait_for(changed.wait(), RECHECK_SECONDS)
        return idle
    except asyncio.TimeoutError:
        idle += RECHECK_SECONDS
        return None if idle >= HEARTBEAT_SECONDS else idle


async def _follow(request: Request, run_id: str, after: int) -> AsyncIterator[bytes]:
    async for item in _run_events(request, run_id, after):
        yield HEARTBEAT if item is None else frame(item[1], item[2], item[0])


async def _run_events(
    request: Request, run_id: str, after: int
) -> AsyncIterator[tuple[int, str, str] | None]:
    """A run's stored events after ``after`` as ``(seq, event, data_json)``, live until it
    ends; None now and then while it is quiet (time for a heartbeat)."""
    server = server_of(request)
    idle = 0.0
    with server.db.notifier.subscribe(f"events:{run_id}", f"run:{run_id}") as changed:
        while True:
            changed.clear()
            events = await q.read_events(server.db, run_id, after)
            for event in events:
                after = event[0]
                yield event
            if events:
                idle = 0.0
                continue
            row = await _run_row(request, run_id)
            if row is None or row[4] in q.TERMINAL:
                # Events are stored before the outcome: one more read catches the last ones.
                if not await q.read_events(server.db, run_id, after):
                    return
                continue
            quiet = await _pause(changed, idle)
            if quiet is None:
                yield None
            idle = quiet or 0.0


THREAD_STREAM_MODES = ("run_modes", "lifecycle", "state_update")


async def thread_stream(request: Request) -> Response:
    """``GET /threads/{id}/stream`` (``threads.join_stream``): the events of the thread's runs
    as they run, one run after the other, each ended by ``metadata {"status": "run_done"}``
    (``run_modes``; ``lifecycle``: the ``metadata`` events only), and ``state_update`` events
    when a client changes the thread's state, all in time order.

    Event ids are ``<run's queue time in microseconds>-<event seq>`` and
    ``<update time in microseconds>-state``, so ``Last-Event-ID`` resumes after any event, on
    any replica.
    """
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    rows = await server_of(request).db.execute(
        "SELECT 1 FROM tl_threads WHERE thread_id = ?", (thread_id,)
    )
    if not rows:
        raise ApiError(404, f"thread {thread_id} not found")
    asked = [
        mode.strip()
        for value in request.query_params.getlist("stream_mode")
        + request.query_params.getlist("stream_modes")
        for mode in value.split(",")
        if mode.strip()
    ] or ["run_modes"]
    for mode in asked:
        if mode not in THREAD_STREAM_MODES:
            raise ApiError(
                422, f"thread stream_mode {mode!r} is not supported; use {THREAD_STREAM_MODES}"
            )
    after = _thread_event_id(request.headers.get("last-event-id"))
    return StreamingResponse(
        _follow_thread(request, thread_id, after, set(asked)), media_type="text/event-stream"
    )


_RUN, _UPDATE = 0, 1  # what an item of a thread's stream is; a run first at the same time


def _thread_event_id(value: str | None) -> tuple[int, int, int] | None:
    """``(time µs, kind, seq)`` of a thread stream's event id: a run's event or an update."""
    if not value:
        return None
    at, sep, seq = value.partition("-")
    if sep and at.isdigit() and seq == "state":
        return int(at), _UPDATE, 0
    if not sep or not at.isdigit() or not seq.lstrip("-").isdigit():
        raise ApiError(422, f"Last-Event-ID {value!r} is not an id of this thread's stream")
    return int(at), _RUN, int(seq)


async def _past_the_end(db: Any, run_id: str, seq: int) -> bool:
    """Whether ``seq`` is past a run's last event (a Last-Event-ID naming its ``run_done``)."""
    rows = await db.execute("SELECT MAX(seq) FROM tl_run_events WHERE run_id = ?", (run_id,))
    return rows[0][0] is not None and seq > int(rows[0][0])


async def _next_on_thread(
    db: Any,
    thread_id: str,
    cursor: tuple[int, int] | None,
    joined: float,
    *,
    runs: bool,
    updates: bool,
    inclusive: bool,
) -> tuple[int, str, float] | None:
    """The thread's next item, ``(kind, run id or update data, time µs)``, in one statement:
    after ``cursor`` (the ``(time µs, kind)`` of the last one passed; ``inclusive``: the run
    at that time too, being resumed), or when joining (None) the runs in flight and what
    came since ``joined``."""
    parts: list[str] = []
    args: list[Any] = []
    if runs:
        sql = "SELECT 0 AS kind, run_id AS ref, enqueued * 1000000 AS at FROM tl_runs WHERE"
        if cursor is None:
            parts.append(sql + " thread_id = ? AND (status IN ('pending', 'running')"
                         " OR enqueued >= ?)")  # fmt: skip
            args += [thread_id, joined]
        else:  # queue times are stored as seconds: compare within half a microsecond
            op, edge = (">=", cursor[0] - 0.5) if inclusive else (">", cursor[0] + 0.5)
            parts.append(sql + f" thread_id = ? AND enqueued * 1000000 {op} ?")
            args += [thread_id, edge]
    if updates:
        after = round(joined * 1_000_000) - 1 if cursor is None else cursor[0]
        op = ">=" if cursor is not None and cursor[1] == _RUN else ">"
        parts.append(
            f"SELECT 1 AS kind, data AS ref, at FROM tl_thread_events WHERE thread_id = ?"
            f" AND event = ? AND at {op} ?"
        )
        args += [thread_id, STATE_UPDATE, after]
    rows = await db.execute(
        f"SELECT kind, ref, at FROM ({' UNION ALL '.join(parts)}) AS items"
        " ORDER BY at, kind LIMIT 1",
        args,
    )
    return (int(rows[0][0]), str(rows[0][1]), float(rows[0][2])) if rows else None


async def _follow_thread(
    request: Request, thread_id: str, after: tuple[int, int, int] | None, modes: set[str]
) -> AsyncIterator[bytes]:
    db = server_of(request).db
    joined = time.time()
    lifecycle_only = "run_modes" not in modes
    cursor = None if after is None else (after[0], after[1])
    resuming = after is not None and after[1] == _RUN  # inside the run of Last-Event-ID
    idle = 0.0
    with db.notifier.subscribe("queue", thread_key(thread_id)) as changed:
        while True:
            changed.clear()
            item = await _next_on_thread(
                db, thread_id, cursor, joined, runs=bool(modes - {"state_update"}),
                updates="state_update" in modes, inclusive=resuming,
            )  # fmt: skip
            if item is None:
                quiet = await _pause(changed, idle)
                if quiet is None:
                    yield HEARTBEAT
                idle = quiet or 0.0
                continue
            kind, ref, at = item
            at_us = round(at)
            if kind == _UPDATE:
                yield frame(STATE_UPDATE, ref, f"{at_us}-state")
                cursor, resuming, idle = (at_us, _UPDATE), False, 0.0
                continue
            resumed = resuming and after is not None and at_us == after[0]
            last = after[2] if resumed and after is not None else -1
            async for event in _run_events(request, ref, last):
                if event is None:
                    yield HEARTBEAT
                    continue
                seq, name, data = event
                last = seq
                if not lifecycle_only or name == "metadata":
                    yield frame(name, data, f"{at_us}-{seq}")
            if not (resumed and await _past_the_end(db, ref, last)):
                done = json.dumps({"status": "run_done", "run_id": ref})
                yield frame("metadata", done, f"{at_us}-{last + 1}")
            cursor, resuming, idle = (at_us, _RUN), False, 0.0


async def join_stream(request: Request) -> Response:
    run_id = uuid_of(request.path_params["run_id"], "run_id")
    if await _run_row(request, run_id) is None:
        raise ApiError(404, f"run {run_id} not found")
    last = request.headers.get("last-event-id")
    after = int(last) if last and last.lstrip("-").isdigit() else -1
    cancel = request.query_params.get("cancel_on_disconnect") in ("1", "true", "True")
    return StreamingResponse(
        _follow_or_cancel(request, run_id, after, cancel=cancel, modes=_modes_wanted(request)),
        media_type="text/event-stream",
    )


async def join_run(request: Request) -> Response:
    run_id = uuid_of(request.path_params["run_id"], "run_id")
    with contextlib.ExitStack() as stack:
        waiting = _watch(request, run_id, stack)
        if await _run_row(request, run_id) is None:
            waiting.cancel()
            raise ApiError(404, f"run {run_id} not found")
        return await _wait_response(request, run_id, waiting, stack.pop_all(), {}, cancel=False)
    raise AssertionError("unreachable")  # pragma: no cover (mypy: the with block returns)


async def get_run(request: Request) -> Response:
    run_id = uuid_of(request.path_params["run_id"], "run_id")
    row = await _run_row(request, run_id)
    if row is None or row[1] != request.path_params["thread_id"]:
        raise ApiError(404, f"run {run_id} not found")
    return JSONResponse(q.run_json(row))


async def list_runs(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    limit = int(request.query_params.get("limit", 10))
    offset = int(request.query_params.get("offset", 0))
    status = request.query_params.get("status")
    sql = f"SELECT {q.RUN_COLUMNS} FROM tl_runs WHERE thread_id = ?"
    args: list[Any] = [thread_id]
    if status:
        sql += " AND status = ?"
        args.append(status)
    rows = await server_of(request).db.execute(
        sql + " ORDER BY enqueued DESC LIMIT ? OFFSET ?", (*args, limit, offset)
    )
    return JSONResponse([q.run_json(r) for r in rows])


async def delete_run(request: Request) -> Response:
    run_id = uuid_of(request.path_params["run_id"], "run_id")
    row = await _run_row(request, run_id)
    if row is None:
        raise ApiError(404, f"run {run_id} not found")
    if row[4] in ("pending", "running"):
        raise ApiError(409, f"run {run_id} is {row[4]}; cancel it first")
    async with server_of(request).db.transaction() as tx:
        await q.delete_run(tx, run_id)
    return Response(status_code=204)


async def _cancel(request: Request, run_id: str, action: str) -> bool | None:
    """Cancel one run: whether it was still pending, or None if there is no such run."""
    server = server_of(request)
    found = await q.cancel_run(server.db, run_id, action)  # announced: the worker stops it
    return None if found is None else found[1]


def _action_of(request: Request) -> str:
    action = request.query_params.get("action", "interrupt")
    if action not in ("interrupt", "rollback"):
        raise ApiError(422, "action must be 'interrupt' or 'rollback'")
    return action


async def cancel_run(request: Request) -> Response:
    run_id = uuid_of(request.path_params["run_id"], "run_id")
    action = _action_of(request)
    row = await _run_row(request, run_id)
    if row is None:
        raise ApiError(404, f"run {run_id} not found")
    pending = await _cancel(request, run_id, action)
    if request.query_params.get("wait") in ("1", "true", "True"):
        await _wait_done(request, run_id)
    return Response(status_code=204 if pending else 202)


_CANCEL_STATUSES = {"pending": ("pending",), "running": ("running",), "all": ("pending", "running")}


async def cancel_many(request: Request) -> Response:
    """``POST /runs/cancel``: the runs of ``run_ids`` and/or ``thread_id``, or by ``status``."""
    body = await body_of(request)
    action = _action_of(request)
    status = body.get("status")
    if status is not None and status not in _CANCEL_STATUSES:
        raise ApiError(422, "status must be 'pending', 'running' or 'all'")
    run_ids = body.get("run_ids")
    if run_ids is not None and (
        not isinstance(run_ids, list) or not all(isinstance(r, str) for r in run_ids)
    ):
        raise ApiError(422, "run_ids must be a list of run ids")
    if status is None and not run_ids and not body.get("thread_id"):
        raise ApiError(422, "pass run_ids, thread_id, or status ('pending', 'running', 'all')")
    statuses = _CANCEL_STATUSES[status or "all"]
    sql = "SELECT run_id FROM tl_runs WHERE status IN (" + ", ".join("?" * len(statuses)) + ")"
    args: list[Any] = list(statuses)
    if body.get("thread_id"):
        sql += " AND thread_id = ?"
        args.append(uuid_of(body["thread_id"], "thread_id"))
    if run_ids:
        sql += " AND run_id IN (" + ", ".join("?" * len(run_ids)) + ")"
        args += [uuid_of(r, "run_ids[]") for r in run_ids]
    rows = await server_of(request).db.execute(sql, args)
    for (run_id,) in rows:
        await _cancel(request, str(run_id), action)
    return Response(status_code=204)


async def create_batch(request: Request) -> Response:
    """``POST /runs/batch``: a list of run payloads (stateless unless one names a thread)."""
    raw = await raw_body(request)
    try:
        payloads = json.loads(raw or b"[]")
    except json.JSONDecodeError as exc:
        raise ApiError(422, f"request body is not valid JSON: {exc}") from None
    if not isinstance(payloads, list) or not all(isinstance(p, dict) for p in payloads):
        raise ApiError(422, "request body must be a JSON list of run objects")
    for i, payload in enumerate(payloads):  # check all before creating any
        try:
            await run_assistant(request, payload.get("assistant_id"))
            run_options(payload, payload.get("thread_id") is None)
            if payload.get("thread_id") is not None:
                uuid_of(payload["thread_id"], "thread_id")
        except ApiError as exc:
            raise ApiError(exc.status, f"run {i}: {exc.detail}") from None
    created = []
    for payload in payloads:
        thread_id = payload.get("thread_id")
        if thread_id is not None:
            thread_id = uuid_of(thread_id, "thread_id")
        run, _ = await _create_from(request, payload, thread_id)
        created.append(run)
    return JSONResponse(created)


def run_routes() -> list[Route]:
    """The runs routes, on a thread and stateless."""
    t, r = "/threads/{thread_id}/runs", "/threads/{thread_id}/runs/{run_id}"
    return [
        Route(t, create_background, methods=["POST"]),
        Route(t, list_runs),
        Route(t + "/wait", wait_run, methods=["POST"]),
        Route(t + "/stream", stream_run, methods=["POST"]),
        Route(r, get_run),
        Route(r, delete_run, methods=["DELETE"]),
        Route(r + "/join", join_run),
        Route(r + "/stream", join_stream),
        Route(r + "/cancel", cancel_run, methods=["POST"]),
        Route("/threads/{thread_id}/stream", thread_stream),
        Route("/runs", create_stateless, methods=["POST"]),
        Route("/runs/batch", create_batch, methods=["POST"]),
        Route("/runs/cancel", cancel_many, methods=["POST"]),
        Route("/runs/wait", wait_run, methods=["POST"]),
        Route("/runs/stream", stream_run, methods=["POST"]),
    ]
