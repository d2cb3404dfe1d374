"""What every router shares: the documented error statuses (one error body,
:class:`~tinkex_types._problems.ErrorResponse`), the idempotency key and the trace carrier
of a request, and :func:`direct` (the hot endpoints the middleware calls itself)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from tinkex_server._middleware import DIRECT, PROPAGATION
from tinkex_types import Hooks
from tinkex_types._problems import ErrorResponse

__all__ = ["V1", "DirectEndpoint", "carrier", "direct", "errors", "idempotency_key"]

V1 = "/api/v1"

#: An endpoint :func:`direct` marks: its only parameter is the request, it answers a Response.
DirectEndpoint = Callable[[Request], Awaitable[Response]]


def direct(endpoint: DirectEndpoint) -> DirectEndpoint:
    """Mark a hot endpoint (``asample``, ``retrieve_future``) that the server middleware
    calls itself once the route matches, without FastAPI's routing and dependency solving
    (:class:`~tinkex_server._middleware.ServerMiddleware`); the route stays registered (the
    OpenAPI document, and FastAPI serves it if the middleware does not). Its only
    parameter is the :class:`~fastapi.Request` and it returns a finished
    :class:`~fastapi.responses.Response`; its exceptions go to the app's exception
    handlers as FastAPI's would."""
    setattr(endpoint, DIRECT, True)
    return endpoint


_DESCRIPTIONS = {
    400: "Bad request: malformed body, unsupported content type or a semantic mistake "
    "(`detail` names the field and the fix)",
    401: "Missing or invalid X-API-Key header (when the server has API keys)",
    403: "The signed download link is invalid or has expired",
    404: "Unknown id (session, model, sampler, checkpoint, future)",
    405: "Method not allowed on this path",
    409: "Conflict",
    410: "Gone: the future was lost in a restart or its result expired (submit again), or "
    "the session was finished (create a new session)",
    413: "The request body is larger than the server's limit (max_body_bytes)",
    415: "Unsupported media type: protobuf bodies sent to a JSON-only server (--json-only)",
    422: "The body or a parameter does not match the schema (`detail` names every field)",
    429: "The sampling queue is full: retry after `retry-after-ms`",
    500: "Unexpected server fault (not retried: x-should-retry: false)",
    503: "The server cannot start (e.g. its data directory is in use)",
}
#: Statuses every operation can answer (middleware and framework).
_ALWAYS = (401, 405, 410, 415, 422, 500, 503)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route that can answer ``statuses`` (plus the ones every route can
    answer), all with the one error body."""
    return {
        status: {"model": ErrorResponse, "description": _DESCRIPTIONS[status]}
        for status in sorted({*statuses, *_ALWAYS})
    }


def idempotency_key(request: Request) -> str | None:
    return request.headers.get("x-idempotency-key") or None


def carrier(request: Request, hooks: Hooks) -> dict[str, str] | None:
    """The trace context a queued job carries to its ``server.queue_wait`` and
    ``server.engine_step`` spans.

    Endpoints run inside the ``server.<endpoint>`` span (opened by the middleware), so the
    span plugins inject *that* span here: the job's spans become its children. When no
    plugin injects anything, the request's own ``traceparent``/``tracestate``/``baggage``
    are passed on unchanged (the job's spans then hang under the caller's span).
    """
    incoming = {h: request.headers[h] for h in PROPAGATION if h in request.headers}
    injected: dict[str, str] = {}
    hooks.inject_headers(injected)
    if not injected:
        return incoming or None
    out = {key.lower(): value for key, value in injected.items()}
    if "baggage" in incoming and "baggage" not in out:
        out["baggage"] = incoming["baggage"]
    return out
