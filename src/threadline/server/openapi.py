"""The server's OpenAPI 3.1 document: the paths and methods come from the mounted routes, the
summary and schemas of each operation from :data:`OPERATIONS`, written by hand here.

``tests/server/test_server_openapi.py`` checks that :data:`OPERATIONS` and the mounted routes
name the same operations, so a route added without its entry here (or removed without dropping
it) fails the tests instead of going undocumented.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.routing import BaseRoute, Mount, Route

__all__ = ["OPERATIONS", "SCHEMAS", "Operation", "docs_html", "document", "mounted"]

JSON = "application/json"
SSE = "text/event-stream"

# ---------------------------------------------------------------------- schema helpers

STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
BOOL: dict[str, Any] = {"type": "boolean"}
NUM: dict[str, Any] = {"type": "number"}
OBJ: dict[str, Any] = {"type": "object"}
ANY: dict[str, Any] = {}
TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
UUID: dict[str, Any] = {"type": "string", "format": "uuid"}
LABELS: dict[str, Any] = {"type": "array", "items": {"type": "string", "minLength": 1}}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def null(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(required: Sequence[str] = (), /, **props: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    return out


def page(limit: int, most: int = 1000) -> dict[str, dict[str, Any]]:
    return {
        "limit": {"type": "integer", "minimum": 1, "maximum": most, "default": limit},
        "offset": {"type": "integer", "minimum": 0, "default": 0},
    }


STREAM_MODES = [
    "values", "updates", "messages", "messages-tuple", "custom", "debug", "tasks", "checkpoints",
]  # fmt: skip

SCHEMAS: dict[str, Any] = {
    "Error": obj(
        ["detail"],
        detail={**STR, "description": "What went wrong and how to fix it"},
        code={**STR, "description": "A library error's stable code (docs/errors.md)"},
    ),
    "Assistant": obj(
        ["assistant_id", "graph_id"],
        assistant_id=UUID,
        graph_id=STR,
        name=STR,
        description=null(STR),
        config=OBJ,
        context=OBJ,
        metadata=OBJ,
        version=INT,
        created_at=TIME,
        updated_at=TIME,
    ),
    "Graph": obj(
        ["nodes", "edges"],
        nodes=arr(obj(["id"], id=STR, type=STR, data=ANY)),
        edges=arr(obj(["source", "target"], source=STR, target=STR, conditional=BOOL)),
    ),
    "GraphSchemas": obj(
        ["graph_id"],
        graph_id=STR,
        input_schema=null(OBJ),
        output_schema=null(OBJ),
        state_schema=null(OBJ),
        config_schema=null(OBJ),
        context_schema=null(OBJ),
    ),
    "Thread": obj(
        ["thread_id", "status"],
        thread_id=UUID,
        metadata=OBJ,
        status={"type": "string", "enum": ["idle", "busy", "interrupted", "error"]},
        values=null(OBJ),
        interrupts=OBJ,
        created_at=TIME,
        updated_at=TIME,
    ),
    "Checkpoint": obj(
        ["thread_id", "checkpoint_id"],
        thread_id=UUID,
        checkpoint_ns=STR,
        checkpoint_id=null(STR),
        checkpoint_map=null(OBJ),
    ),
    # response_schema: JSON Schema of the answer, present when the graph gave one.
    "Interrupt": obj(["value"], value=ANY, id=STR, response_schema=OBJ),
    "ThreadState": obj(
        ["values", "next", "checkpoint"],
        values=ANY,
        next=arr(STR),
        checkpoint=null(ref("Checkpoint")),
        metadata=OBJ,
        created_at=null(TIME),
        parent_checkpoint=null(ref("Checkpoint")),
        tasks=arr(
            obj(
                ["id", "name"],
                id=STR,
                name=STR,
                error=null(STR),
                interrupts=arr(ref("Interrupt")),
                checkpoint=null(ref("Checkpoint")),
                state=ANY,
                result=ANY,
            )
        ),
        interrupts=arr(ref("Interrupt")),
    ),
    "RunCreate": obj(
        ["assistant_id"],
        assistant_id={**STR, "description": "A graph name or its assistant id"},
        input=ANY,
        command=null(obj(resume=ANY, update=ANY, goto=ANY)),
        config=null(OBJ),
        context=null(OBJ),
        metadata=null(OBJ),
        stream_mode={"anyOf": [{"enum": STREAM_MODES}, arr({"enum": STREAM_MODES})]},
        stream_subgraphs=BOOL,
        stream_resumable=BOOL,
        interrupt_before={"anyOf": [{"const": "*"}, arr(STR)]},
        interrupt_after={"anyOf": [{"const": "*"}, arr(STR)]},
        checkpoint_id=STR,
        checkpoint=OBJ,
        multitask_strategy={"enum": ["reject", "enqueue", "interrupt", "rollback"]},
        if_not_exists={"enum": ["create", "reject"]},
        durability={"enum": ["sync", "async", "exit"]},
        on_completion={"enum": ["delete", "keep"]},
        on_disconnect={"enum": ["cancel", "continue"]},
        after_seconds=NUM,
        webhook=STR,
    ),
    "Run": obj(
        ["run_id", "thread_id", "status"],
        run_id=UUID,
        thread_id=UUID,
        assistant_id=UUID,
        status={"enum": ["pending", "running", "success", "error", "timeout", "interrupted"]},
        kwargs=OBJ,
        metadata=OBJ,
        multitask_strategy=STR,
        created_at=TIME,
        updated_at=TIME,
    ),
    "Cron": obj(
        ["cron_id", "assistant_id", "schedule", "enabled"],
        cron_id=UUID,
        assistant_id=UUID,
        thread_id={**null(UUID), "description": "null: each firing runs on a new thread"},
        on_run_completed=null({"enum": ["delete", "keep"]}),
        end_time=null(TIME),
        schedule={**STR, "description": "5-field cron expression"},
        timezone={**null(STR), "description": "IANA name; null is UTC"},
        created_at=TIME,
        updated_at=TIME,
        payload={**OBJ, "description": "The options each firing's run gets"},
        user_id=null(STR),
        next_run_date=null(TIME),
        metadata=OBJ,
        enabled=BOOL,
    ),
    "CronCreate": obj(
        ["assistant_id", "schedule"],
        assistant_id={**STR, "description": "A graph name or its assistant id"},
        schedule={**STR, "description": "5-field cron expression, e.g. '*/5 * * * *'"},
        timezone={**STR, "description": "IANA name (default UTC)"},
        end_time=TIME,
        enabled=BOOL,
        input=ANY,
        config=null(OBJ),
        context=null(OBJ),
        metadata=null(OBJ),
        interrupt_before={"anyOf": [{"const": "*"}, arr(STR)]},
        interrupt_after={"anyOf": [{"const": "*"}, arr(STR)]},
        webhook=STR,
        multitask_strategy={"enum": ["reject", "enqueue", "interrupt", "rollback"]},
        on_run_completed={"enum": ["delete", "keep"]},
        stream_mode={"anyOf": [{"enum": STREAM_MODES}, arr({"enum": STREAM_MODES})]},
        stream_subgraphs=BOOL,
        stream_resumable=BOOL,
        durability={"enum": ["sync", "async", "exit"]},
    ),
    "Item": obj(
        ["namespace", "key", "value", "created_at", "updated_at"],
        namespace=LABELS,
        key=STR,
        value=OBJ,
        created_at=TIME,
        updated_at=TIME,
    ),
    "SearchItem": {
        "allOf": [
            ref("Item"),
            obj(score={**null(NUM), "description": "Similarity to the query, if ranked"}),
        ]
    },
}


# ---------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Operation:
    """One method on one path: what it does, what it takes and what it answers."""

    summary: str
    tag: str
    body: dict[str, Any] | None = None
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: status -> JSON schema of the answer (None: no body); SSE answers use ``media``.
    responses: dict[int, dict[str, Any] | None] = field(default_factory=lambda: {200: OBJ})
    media: str = JSON
    errors: tuple[int, ...] = (422,)
    description: str = ""


STATE_BODY = obj(checkpoint=OBJ, subgraphs=BOOL)
SORT_ASSISTANTS: dict[str, Any] = {
    "enum": ["assistant_id", "graph_id", "name", "created_at", "updated_at"]
}
HISTORY: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer", "minimum": 1, "default": 10},
    "before": {"anyOf": [STR, OBJ], "description": "A checkpoint id (or config) to list before"},
    "checkpoint": OBJ,
    "metadata": OBJ,
}
CRON_SORT = (
    "cron_id", "assistant_id", "thread_id", "created_at", "updated_at", "next_run_date",
    "end_time",
)  # fmt: skip
RUN_STREAM = {**STR, "description": "Server-sent events: metadata first, then the stream modes"}

OPERATIONS: dict[tuple[str, str], Operation] = {
    # meta
    ("GET", "/ok"): Operation("Health check", "meta", responses={200: obj(["ok"], ok=BOOL)}),
    ("GET", "/info"): Operation(
        "Server version and feature flags",
        "meta",
        responses={200: obj(["version"], version=STR, flags=obj(assistants=BOOL, crons=BOOL))},
    ),
    ("GET", "/openapi.json"): Operation(
        "This OpenAPI 3.1 document", "meta", responses={200: OBJ}, errors=()
    ),
    ("GET", "/docs"): Operation(
        "The operations as an HTML page", "meta", responses={200: STR}, media="text/html", errors=()
    ),
    # assistants
    ("POST", "/assistants"): Operation(
        "Create an assistant: a graph with its own config, context and metadata",
        "assistants",
        body=obj(
            ["graph_id"],
            graph_id=STR,
            assistant_id=UUID,
            config=OBJ,
            context=OBJ,
            metadata=OBJ,
            name=STR,
            description=null(STR),
            if_exists={"enum": ["raise", "do_nothing"]},
        ),
        responses={200: ref("Assistant")},
        errors=(409, 422),
    ),
    ("POST", "/assistants/search"): Operation(
        "Search assistants by graph, name and metadata",
        "assistants",
        body=obj(
            graph_id=STR,
            name=STR,
            metadata=OBJ,
            sort_by=SORT_ASSISTANTS,
            sort_order={"enum": ["asc", "desc"]},
            select=arr(STR),
            **page(10),
        ),
        responses={200: arr(OBJ)},
    ),
    ("PATCH", "/assistants/{assistant_id}"): Operation(
        "Update an assistant: a new version becomes its latest",
        "assistants",
        body=obj(
            graph_id=STR, config=OBJ, context=OBJ, metadata=OBJ, name=STR, description=null(STR)
        ),
        responses={200: ref("Assistant")},
        errors=(404, 409, 422),
    ),
    ("DELETE", "/assistants/{assistant_id}"): Operation(
        "Delete an assistant (and, with delete_threads, its threads)",
        "assistants",
        query={"delete_threads": BOOL},
        responses={204: None},
        errors=(404, 409, 422),
    ),
    ("POST", "/assistants/{assistant_id}/versions"): Operation(
        "List an assistant's versions, newest first",
        "assistants",
        body=obj(metadata=OBJ, **page(10)),
        responses={200: arr(OBJ)},
        errors=(404, 422),
    ),
    ("POST", "/assistants/{assistant_id}/latest"): Operation(
        "Make one of an assistant's versions its latest",
        "assistants",
        body=obj(["version"], version=INT),
        responses={200: ref("Assistant")},
        errors=(404, 409, 422),
    ),
    ("GET", "/assistants/{assistant_id}/subgraphs"): Operation(
        "Get the graphs of an assistant's subgraphs, by namespace",
        "assistants",
        query={"recurse": BOOL},
        responses={200: OBJ},
        errors=(404, 422),
    ),
    ("GET", "/assistants/{assistant_id}/subgraphs/{namespace}"): Operation(
        "Get the subgraphs under one namespace",
        "assistants",
        query={"recurse": BOOL},
        responses={200: OBJ},
        errors=(404, 422),
    ),
    ("POST", "/assistants/count"): Operation(
        "Count assistants", "assistants", body=obj(graph_id=STR), responses={200: INT}
    ),
    ("GET", "/assistants/{assistant_id}"): Operation(
        "Get an assistant by id or graph name",
        "assistants",
        responses={200: ref("Assistant")},
        errors=(404, 422),
    ),
    ("GET", "/assistants/{assistant_id}/graph"): Operation(
        "Get an assistant's graph: nodes and edges",
        "assistants",
        responses={200: ref("Graph")},
        errors=(404, 422),
    ),
    ("GET", "/assistants/{assistant_id}/schemas"): Operation(
        "Get an assistant's JSON schemas",
        "assistants",
        responses={200: ref("GraphSchemas")},
        errors=(404, 422),
    ),
    # threads
    ("POST", "/threads"): Operation(
        "Create a thread",
        "threads",
        body=obj(thread_id=UUID, metadata=OBJ, if_exists={"enum": ["raise", "do_nothing"]}),
        responses={200: ref("Thread")},
        errors=(409, 422),
    ),
    ("POST", "/threads/search"): Operation(
        "Search threads by status, ids, metadata and values, newest first",
        "threads",
        body=obj(
            status={"enum": ["idle", "busy", "interrupted", "error"]},
            ids=arr(UUID),
            metadata=OBJ,
            values=OBJ,
            select=arr(STR),
            extract=OBJ,
            sort_by={"enum": ["thread_id", "status", "created_at", "updated_at"]},
            sort_order={"enum": ["asc", "desc"]},
            **page(10),
        ),
        responses={200: arr(OBJ)},
    ),
    ("POST", "/threads/prune"): Operation(
        "Prune threads: delete them, or keep only their latest checkpoint",
        "threads",
        body=obj(
            ["thread_ids"], thread_ids=arr(UUID), strategy={"enum": ["delete", "keep_latest"]}
        ),
        responses={200: obj(pruned_count=INT)},
    ),
    ("POST", "/threads/{thread_id}/copy"): Operation(
        "Copy a thread with its checkpoints to a new thread",
        "threads",
        responses={200: ref("Thread")},
        errors=(404, 422),
    ),
    ("POST", "/threads/count"): Operation(
        "Count threads by status and ids",
        "threads",
        body=obj(status=STR, ids=arr(UUID)),
        responses={200: INT},
    ),
    ("GET", "/threads/{thread_id}"): Operation(
        "Get a thread", "threads", responses={200: ref("Thread")}, errors=(404, 422)
    ),
    ("PATCH", "/threads/{thread_id}"): Operation(
        "Merge metadata into a thread",
        "threads",
        body=obj(metadata=OBJ),
        responses={200: ref("Thread")},
        errors=(404, 422),
    ),
    ("DELETE", "/threads/{thread_id}"): Operation(
        "Delete a thread with its runs and checkpoints",
        "threads",
        responses={204: None},
        errors=(404, 422),
    ),
    ("GET", "/threads/{thread_id}/state"): Operation(
        "Get a thread's current state",
        "threads",
        responses={200: ref("ThreadState")},
        errors=(404, 422),
    ),
    ("POST", "/threads/{thread_id}/state"): Operation(
        "Update a thread's state as if a node wrote it",
        "threads",
        body=obj(values=ANY, as_node=STR, checkpoint_id=STR, checkpoint=OBJ),
        responses={200: obj(["checkpoint"], checkpoint=OBJ)},
        errors=(404, 409, 422),
    ),
    ("POST", "/threads/{thread_id}/state/checkpoint"): Operation(
        "Get a thread's state at a checkpoint given in the body",
        "threads",
        body=STATE_BODY,
        responses={200: ref("ThreadState")},
        errors=(404, 422),
    ),
    ("GET", "/threads/{thread_id}/state/{checkpoint_id}"): Operation(
        "Get a thread's state at a checkpoint",
        "threads",
        responses={200: ref("ThreadState")},
        errors=(404, 422),
    ),
    ("GET", "/threads/{thread_id}/history"): Operation(
        "List a thread's past states, newest first",
        "threads",
        query={"limit": HISTORY["limit"], "before": STR},
        responses={200: arr(ref("ThreadState"))},
        errors=(404, 422),
    ),
    ("POST", "/threads/{thread_id}/history"): Operation(
        "List a thread's past states, newest first, filtered by metadata",
        "threads",
        body=obj(**HISTORY),
        responses={200: arr(ref("ThreadState"))},
        errors=(404, 422),
    ),
    # runs
    ("POST", "/threads/{thread_id}/runs"): Operation(
        "Start a run in the background",
        "runs",
        body=ref("RunCreate"),
        responses={200: ref("Run")},
        errors=(404, 409, 422),
    ),
    ("GET", "/threads/{thread_id}/runs"): Operation(
        "List a thread's runs, newest first",
        "runs",
        query={**page(10, 2**31), "status": STR},
        responses={200: arr(ref("Run"))},
    ),
    ("POST", "/threads/{thread_id}/runs/wait"): Operation(
        "Run and wait for the final values",
        "runs",
        body=ref("RunCreate"),
        responses={200: ANY},
        errors=(404, 409, 422),
    ),
    ("POST", "/threads/{thread_id}/runs/stream"): Operation(
        "Run and stream its events",
        "runs",
        body=ref("RunCreate"),
        responses={200: RUN_STREAM},
        media=SSE,
        errors=(404, 409, 422),
    ),
    ("GET", "/threads/{thread_id}/runs/{run_id}"): Operation(
        "Get a run", "runs", responses={200: ref("Run")}, errors=(404, 422)
    ),
    ("DELETE", "/threads/{thread_id}/runs/{run_id}"): Operation(
        "Delete a finished run",
        "runs",
        responses={204: None},
        errors=(404, 409, 422),
    ),
    ("GET", "/threads/{thread_id}/runs/{run_id}/join"): Operation(
        "Wait for a run to finish; its final values",
        "runs",
        responses={200: ANY},
        errors=(404, 422),
    ),
    ("GET", "/threads/{thread_id}/runs/{run_id}/stream"): Operation(
        "Join a run's event stream (from Last-Event-ID onwards), on any replica",
        "runs",
        headers={"Last-Event-ID": STR},
        responses={200: RUN_STREAM},
        media=SSE,
        errors=(404, 422),
    ),
    ("POST", "/threads/{thread_id}/runs/{run_id}/cancel"): Operation(
        "Cancel a run (interrupt keeps its progress, rollback discards it)",
        "runs",
        query={"action": {"enum": ["interrupt", "rollback"]}, "wait": BOOL},
        responses={202: None, 204: None},
        errors=(404, 422),
    ),
    ("GET", "/threads/{thread_id}/stream"): Operation(
        "Stream the thread's runs as they run, and its state updates",
        "threads",
        query={
            "stream_mode": {"enum": ["run_modes", "lifecycle", "state_update"]},
            "stream_modes": {**STR, "description": "Modes separated by commas"},
        },
        description="run_modes (the default): every event of the thread's runs, each run"
        " ended by metadata {status: run_done, run_id}; lifecycle: only their metadata events;"
        " state_update: {state, thread_id} whenever a client changes the thread's state"
        " (threads.update_state, supersteps). Event ids resume any of them (Last-Event-ID).",
        headers={"Last-Event-ID": {**STR, "description": "Resume after this event"}},
        responses={200: STR},
        media=SSE,
        errors=(404, 422),
    ),
    ("POST", "/runs/batch"): Operation(
        "Start several runs in the background (each checked before any is queued)",
        "runs",
        body=arr({"allOf": [ref("RunCreate"), obj(thread_id=UUID)]}),
        responses={200: arr(ref("Run"))},
        errors=(404, 409, 413, 422),
    ),
    ("POST", "/runs/cancel"): Operation(
        "Cancel the runs named by ids, by thread, or by status",
        "runs",
        query={"action": {"enum": ["interrupt", "rollback"]}},
        body=obj(thread_id=UUID, run_ids=arr(UUID), status={"enum": ["pending", "running", "all"]}),
        responses={204: None},
    ),
    ("POST", "/runs"): Operation(
        "Start a stateless run (on a new thread) in the background",
        "runs",
        body=ref("RunCreate"),
        responses={200: ref("Run")},
        errors=(404, 422),
    ),
    ("POST", "/runs/wait"): Operation(
        "Run statelessly and wait for the final values",
        "runs",
        body=ref("RunCreate"),
        responses={200: ANY},
        errors=(404, 422),
    ),
    ("POST", "/runs/stream"): Operation(
        "Run statelessly and stream its events",
        "runs",
        body=ref("RunCreate"),
        responses={200: RUN_STREAM},
        media=SSE,
        errors=(404, 422),
    ),
    # crons
    ("POST", "/runs/crons"): Operation(
        "Create a stateless cron: each firing runs on a new thread",
        "crons",
        body=ref("CronCreate"),
        responses={200: ref("Cron")},
        errors=(404, 422),
    ),
    ("POST", "/threads/{thread_id}/runs/crons"): Operation(
        "Create a cron whose runs go on the thread",
        "crons",
        body=ref("CronCreate"),
        responses={200: ref("Cron")},
        errors=(404, 422),
    ),
    ("PATCH", "/runs/crons/{cron_id}"): Operation(
        "Update a cron (a new schedule, end or switch counts from now)",
        "crons",
        body=ref("CronCreate"),
        responses={200: ref("Cron")},
        errors=(404, 422),
    ),
    ("DELETE", "/runs/crons/{cron_id}"): Operation(
        "Delete a cron", "crons", responses={204: None}, errors=(404, 422)
    ),
    ("POST", "/runs/crons/search"): Operation(
        "Search crons",
        "crons",
        body=obj(
            assistant_id=STR,
            thread_id=UUID,
            enabled=BOOL,
            metadata=OBJ,
            sort_by={"enum": list(CRON_SORT)},
            sort_order={"enum": ["asc", "desc"]},
            select=arr(STR),
            **page(10),
        ),
        responses={200: arr(ref("Cron"))},
    ),
    ("POST", "/runs/crons/count"): Operation(
        "Count crons",
        "crons",
        body=obj(assistant_id=STR, thread_id=UUID, enabled=BOOL, metadata=OBJ),
        responses={200: INT},
    ),
    # store
    ("PUT", "/store/items"): Operation(
        "Store an item (replacing what is there)",
        "store",
        body=obj(
            ["namespace", "key", "value"],
            namespace={**LABELS, "minItems": 1, "description": "Labels without '.'"},
            key={**STR, "minLength": 1},
            value=OBJ,
            index={"anyOf": [{"const": False}, arr(STR), {"type": "null"}]},
            ttl={**null({"type": "number", "exclusiveMinimum": 0}), "description": "Minutes"},
        ),
        responses={204: None},
    ),
    ("GET", "/store/items"): Operation(
        "Get an item",
        "store",
        query={
            "namespace": {**STR, "description": "Labels joined with '.', e.g. users.42"},
            "key": STR,
            "refresh_ttl": BOOL,
        },
        responses={200: ref("Item")},
        errors=(404, 422),
    ),
    ("DELETE", "/store/items"): Operation(
        "Delete an item (nothing happens if there is none)",
        "store",
        body=obj(["namespace", "key"], namespace=LABELS, key=STR),
        responses={204: None},
    ),
    ("POST", "/store/items/search"): Operation(
        "Search items under a namespace prefix by filter (and query), newest first",
        "store",
        body=obj(
            namespace_prefix=LABELS,
            filter={**null(OBJ), "description": 'e.g. {"score": {"$gt": 3}}'},
            query=null(STR),
            refresh_ttl=null(BOOL),
            **page(10),
        ),
        responses={200: obj(["items"], items=arr(ref("SearchItem")))},
    ),
    ("POST", "/store/namespaces"): Operation(
        "List the namespaces that hold items",
        "store",
        body=obj(
            prefix={**LABELS, "description": "'*' matches any one label"},
            suffix=LABELS,
            max_depth=null({"type": "integer", "minimum": 1}),
            **page(100),
        ),
        responses={200: obj(["namespaces"], namespaces=arr(LABELS))},
    ),
}


# ---------------------------------------------------------------------- the document


def mounted(routes: Iterable[BaseRoute], prefix: str = "") -> list[tuple[str, str]]:
    """Every ``(METHOD, path)`` the routes answer (HEAD, which Starlette adds to GET, left out)."""
    found: list[tuple[str, str]] = []
    for route in routes:
        if isinstance(route, Mount):
            found += mounted(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            methods = route.methods or {"GET"}
            found += [(m, prefix + route.path) for m in sorted(methods) if m != "HEAD"]
    return found


def _operation_id(method: str, path: str) -> str:
    return method.lower() + "_" + re.sub(r"[^a-z0-9]+", "_", path.lower()).strip("_")


def _operation(method: str, path: str, op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.description:
        out["description"] = op.description
    params = [
        {"name": name, "in": "path", "required": True, "schema": STR}
        for name in re.findall(r"{(\w+)", path)
    ]
    params += [{"name": n, "in": "query", "schema": s} for n, s in op.query.items()]
    params += [{"name": n, "in": "header", "schema": s} for n, s in op.headers.items()]
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {JSON: {"schema": op.body}}}
    responses: dict[str, Any] = {}
    for status, schema in op.responses.items():
        answer: dict[str, Any] = {"description": "OK" if status < 300 else "Done"}
        if schema is not None:
            answer["content"] = {op.media: {"schema": schema}}
        responses[str(status)] = answer
    for status in op.errors:
        responses[str(status)] = {
            "description": {
                404: "Not found",
                409: "Conflict",
                413: "Body too large",
                422: "Invalid input",
            }[status],
            "content": {JSON: {"schema": ref("Error")}},
        }
    out["responses"] = responses
    return out


def document(routes: Iterable[BaseRoute], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``; an operation missing from :data:`OPERATIONS`
    still appears, summarised as undocumented, so the document never hides a route."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path in mounted(routes):
        op = OPERATIONS.get((method, path)) or Operation("(undocumented)", "other", errors=())
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "threadline server",
            "version": version,
            "description": "The LangGraph Agent Server API as `threadline serve` speaks it.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }


def docs_html(doc: dict[str, Any]) -> str:
    """A self-contained HTML page listing the document's operations by tag (no scripts)."""
    by_tag: dict[str, list[tuple[str, str, str]]] = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault(op["tags"][0], []).append((method.upper(), path, op["summary"]))
    e = html.escape
    sections = []
    for tag, ops in by_tag.items():
        rows = "\n".join(
            f"<tr><td><code>{e(m)}</code></td><td><code>{e(p)}</code></td><td>{e(s)}</td></tr>"
            for m, p, s in ops
        )
        sections.append(f"<h2>{e(tag)}</h2>\n<table>\n{rows}\n</table>")
    title = e(f"{doc['info']['title']} {doc['info']['version']}")
    body = "\n".join(sections)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
td{{padding:.2em .8em;vertical-align:top}}code{{white-space:nowrap}}</style></head>
<body><h1>{title}</h1>
<p>The full schemas are in <a href="openapi.json">openapi.json</a> (OpenAPI 3.1).</p>
{body}
</body></html>
"""
