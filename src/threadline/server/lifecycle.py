"""Around a run's execution: rollback to the state before it, webhooks, temporary threads.

Workers call these when a run ends; they use only the public checkpointer and graph API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
import urllib.request
from typing import Any

from ..checkpoint.lease import LeaseOp
from ..checkpoint.types import CheckpointTuple
from ..errors import CheckpointConflictError, CheckpointNotFoundError
from .threads import OWN_TABLES

__all__ = ["check_webhook", "delete_thread", "post_webhook", "restore_before"]

log = logging.getLogger("threadline.server")
WEBHOOK_TIMEOUT = 10.0


async def restore_before(
    graph: Any, thread_id: str, run_id: str, started_from: CheckpointTuple | None = None
) -> bool:
    """Put the thread back where it was before ``run_id`` wrote to it; whether it still exists.

    The checkpoints the run committed, its subgraphs' included, are deleted, and the head the
    thread had before it is the head again: its history is what it was before the run
    (``rewind``, under the thread's writer lease, so it waits for the cancelled run to let
    go). A run that started the thread leaves nothing: the thread's checkpoints are deleted.
    ``started_from`` (``RunHandle.started_from``): the checkpoint the run began from, with the
    pending writes it had then; writes the run added to it (a resume's answer, the tasks it
    finished) are deleted too, so a paused thread is paused again on the same question.
    """
    try:
        return await _rewind_before(graph.checkpointer, thread_id, run_id, started_from)
    except Exception:  # the run must still end; the thread then keeps what it wrote
        log.exception("run %s: rolling back thread %s failed", run_id, thread_id)
        return True


async def _rewind_before(
    saver: Any, thread_id: str, run_id: str, started_from: CheckpointTuple | None
) -> bool:
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    keep = None
    if started_from is not None and started_from.checkpoint.tasks:  # else none were written
        keep = [(w.task_id, w.idx) for w in started_from.pending_writes]
    lease = await saver.aacquire_lease(thread_id)
    try:
        first = None
        async for found in saver.alist(config, filter={"run_id": run_id}):
            first = found  # newest first: the last one listed is the run's first checkpoint
        if first is None:  # it committed no checkpoint, but may have written to its start
            if keep is not None and started_from is not None:
                with contextlib.suppress(CheckpointConflictError, CheckpointNotFoundError):
                    await saver.arewind(
                        started_from.config,
                        expected_head=started_from.checkpoint.id,
                        lease=LeaseOp("release", lease),
                        keep_writes=keep,
                    )
            return True
        # The head when the run began: the newest checkpoint committed before its first.
        async for before in saver.alist(config, before=first.config, limit=1):
            same = started_from is not None and before.checkpoint.id == started_from.checkpoint.id
            await saver.arewind(
                before.config, lease=LeaseOp("release", lease), keep_writes=keep if same else None
            )
            return True
        await saver.adelete_thread(thread_id)
        return False
    finally:
        if lease.held:
            await saver.arelease_lease(lease)


async def delete_thread(db: Any, saver: Any, thread_id: str) -> None:
    """Delete a stateless run's temporary thread and its checkpoints (``on_completion``)."""
    await saver.adelete_thread(thread_id)
    for table in OWN_TABLES:  # its runs stay, so runs.join still answers
        await db.execute(f"DELETE FROM {table} WHERE thread_id = ?", (thread_id,))


def check_webhook(url: Any) -> str | None:
    """Why ``url`` cannot be a webhook, or None when it can (an absolute http(s) URL)."""
    if not isinstance(url, str):
        return "webhook must be a URL string"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"webhook must be an http:// or https:// URL, got {url!r}"
    return None


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
        return int(response.status)


async def post_webhook(url: str, payload: dict[str, Any]) -> None:
    """POST ``payload`` as JSON to ``url``; failures are logged, never raised."""
    if check_webhook(url) is not None:  # checked when the run was created; stored rows too
        log.warning("run %s: not calling webhook %r", payload.get("run_id"), url)
        return
    try:
        await asyncio.to_thread(_post, url, json.dumps(payload).encode())
    except Exception as exc:
        log.warning("run %s: webhook %s failed: %s", payload.get("run_id"), url, exc)
