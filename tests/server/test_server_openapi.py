"""``/openapi.json`` and ``/docs``: the document names exactly the mounted routes, its schemas
are valid JSON Schema, and real answers of ``threadline serve`` (through ``langgraph_sdk``)
match what it declares; library errors carry their ``code``."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client

from threadline.server.api import routes
from threadline.server.openapi import OPERATIONS, mounted

jsonschema_rs = pytest.importorskip("jsonschema_rs")


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, methods in doc["paths"].items() for m in methods}


def test_every_mounted_route_is_documented_and_every_entry_is_mounted() -> None:
    served = set(mounted(routes()))
    assert ("PUT", "/store/items") in served and ("GET", "/openapi.json") in served
    assert not served - set(OPERATIONS), "routes without an entry in openapi.OPERATIONS"
    assert not set(OPERATIONS) - served, "entries in openapi.OPERATIONS that are not mounted"


def test_the_served_document_names_the_served_routes(urls: list[str]) -> None:
    doc = httpx.get(urls[-1] + "/openapi.json").json()
    assert doc["openapi"] == "3.1.0" and doc["info"]["version"]
    assert operations(doc) == set(mounted(routes())) == set(OPERATIONS)
    ids = [op["operationId"] for methods in doc["paths"].values() for op in methods.values()]
    assert len(ids) == len(set(ids))
    for path, methods in doc["paths"].items():
        for op in methods.values():
            assert op["summary"] and op["summary"] != "(undocumented)", path
            assert op["responses"], path
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), path


def test_every_schema_is_valid_json_schema_and_every_ref_resolves(urls: list[str]) -> None:
    doc = httpx.get(urls[0] + "/openapi.json").json()
    components = doc["components"]["schemas"]
    text = json.dumps(doc)
    for name in re.findall(r'"#/components/schemas/(\w+)"', text):
        assert name in components, name
    for name, schema in components.items():
        assert jsonschema_rs.meta.is_valid(schema), name
    for methods in doc["paths"].values():
        for op in methods.values():
            bodies = [op.get("requestBody", {}).get("content", {})]
            bodies += [r.get("content", {}) for r in op["responses"].values()]
            for content in bodies:
                for media in content.values():
                    assert jsonschema_rs.meta.is_valid(media["schema"]), op["operationId"]


def answer_schema(doc: dict[str, Any], method: str, path: str, status: int = 200) -> Any:
    content = doc["paths"][path][method.lower()]["responses"][str(status)]["content"]
    schema = next(iter(content.values()))["schema"]
    return jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})


def test_real_answers_match_the_documented_schemas(urls: list[str]) -> None:
    doc = httpx.get(urls[0] + "/openapi.json").json()
    a, b = get_sync_client(url=urls[0]), get_sync_client(url=urls[-1])

    def check(method: str, path: str, value: Any, status: int = 200) -> None:
        validator = answer_schema(doc, method, path, status)
        errors = [e.message for e in validator.iter_errors(value)]
        assert not errors, (method, path, errors, value)

    check("GET", "/ok", httpx.get(urls[0] + "/ok").json())
    check("GET", "/info", a.http.get("/info"))
    check("POST", "/assistants/search", a.assistants.search())
    check("GET", "/assistants/{assistant_id}", a.assistants.get("echo"))
    check("GET", "/assistants/{assistant_id}/graph", a.assistants.get_graph("echo"))
    check("GET", "/assistants/{assistant_id}/schemas", a.assistants.get_schemas("echo"))
    check("POST", "/assistants/count", a.assistants.count())
    thread = a.threads.create(metadata={"who": "openapi"})
    tid = thread["thread_id"]
    check("POST", "/threads", thread)
    b.runs.wait(tid, "echo", input={"messages": ["hi"]})
    check("GET", "/threads/{thread_id}", b.threads.get(tid))
    check("POST", "/threads/search", b.threads.search(metadata={"who": "openapi"}))
    check("GET", "/threads/{thread_id}/state", b.threads.get_state(tid))
    check("POST", "/threads/{thread_id}/history", b.threads.get_history(tid))
    run = a.runs.create(tid, "echo", input={"messages": ["again"]})
    check("POST", "/threads/{thread_id}/runs", run)
    a.runs.join(tid, run["run_id"])
    check("GET", "/threads/{thread_id}/runs/{run_id}", b.runs.get(tid, run["run_id"]))
    check("GET", "/threads/{thread_id}/runs", b.runs.list(tid))
    check("POST", "/threads/count", b.threads.count())
    check("PATCH", "/threads/{thread_id}", a.threads.update(tid, metadata={"more": 1}))
    state = b.threads.get_state(tid)
    checkpoint_id = state["checkpoint"]["checkpoint_id"]
    at = b.threads.get_state(tid, checkpoint_id=checkpoint_id)
    check("GET", "/threads/{thread_id}/state/{checkpoint_id}", at)
    at = b.threads.get_state(tid, checkpoint={"checkpoint_id": checkpoint_id})
    check("POST", "/threads/{thread_id}/state/checkpoint", at)
    check("POST", "/threads/{thread_id}/state", a.threads.update_state(tid, {"messages": ["x"]}))
    history = httpx.get(f"{urls[0]}/threads/{tid}/history", params={"limit": 2}).json()
    assert len(history) == 2
    check("GET", "/threads/{thread_id}/history", history)
    check("POST", "/runs", a.runs.create(None, "echo", input={"messages": ["s"]}))
    missing = httpx.get(f"{urls[0]}/threads/{uuid.uuid4()}")
    assert missing.status_code == 404
    check("GET", "/threads/{thread_id}", missing.json(), 404)

    ns = [f"oa{uuid.uuid4().hex[:8]}", "x"]
    a.store.put_item(ns, "k", {"v": 1})
    check("GET", "/store/items", b.store.get_item(ns, "k"))
    check("POST", "/store/items/search", b.store.search_items(ns[:1]))
    check("POST", "/store/namespaces", b.store.list_namespaces(prefix=ns[:1]))
    bad = httpx.post(urls[0] + "/store/items/search", json={"limit": 0})
    assert bad.status_code == 422
    check("POST", "/store/items/search", bad.json(), 422)
    # The validators are not vacuous: a wrong shape is refused.
    assert not answer_schema(doc, "GET", "/store/items").is_valid({"key": "k"})


def test_docs_is_an_html_page_listing_every_operation(urls: list[str]) -> None:
    page = httpx.get(urls[0] + "/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.startswith("<!doctype html>") and "openapi.json" in page.text
    for method, path in OPERATIONS:
        row = f"<td><code>{method}</code></td><td><code>{path}</code></td>"
        assert row in page.text, (method, path)
    assert "<script" not in page.text


def test_a_library_error_answers_its_status_and_code(urls: list[str]) -> None:
    a = get_sync_client(url=urls[0])
    thread_id = a.threads.create()["thread_id"]
    a.runs.wait(thread_id, "echo", input={"messages": ["hi"]})
    answer = httpx.post(
        f"{urls[-1]}/threads/{thread_id}/state", json={"values": {}, "as_node": "no-such-node"}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "invalid_update"
    assert "no-such-node" in answer.json()["detail"]
