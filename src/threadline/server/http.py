"""What every route module shares: the error answered as ``{"detail": ...}`` and body parsing."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.requests import Request

__all__ = ["MAX_BODY", "ApiError", "body_of", "raw_body", "server_of", "uuid_of"]

MAX_BODY = 10 * 1024 * 1024


class ApiError(Exception):
    """An error answered as ``{"detail": ...}`` with an HTTP status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def server_of(request: Request) -> Any:
    """The :class:`~threadline.server.app.Server` the request's app holds."""
    return request.app.state.server


async def raw_body(request: Request) -> bytes:
    """The request's body, refused with 413 once it passes :data:`MAX_BODY`: at once when its
    ``Content-Length`` says so, else as soon as that much has arrived (never read whole)."""
    too_large = ApiError(413, "request body is larger than 10 MiB; send less")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise too_large
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise too_large
        parts.append(chunk)
    return b"".join(parts)


async def body_of(request: Request) -> dict[str, Any]:
    """The request's JSON object body (``{}`` when empty); 413 or 422 when it is not one."""
    raw = await raw_body(request)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(422, f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(422, "request body is nested too deeply to parse; flatten it") from None
    if not isinstance(data, dict):
        raise ApiError(422, "request body must be a JSON object")
    return data


def uuid_of(value: str, what: str) -> str:
    """``value`` as a canonical UUID string; 422 naming ``what`` when it is not one."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise ApiError(422, f"{what} must be a UUID, got {value!r}") from None
