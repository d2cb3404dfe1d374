"""The ASGI middleware around every request of the app.

It starts the runtime lazily, checks ``X-API-Key`` (when keys are configured), enforces the
body size limit (413) and opens the ``server.<endpoint>`` span through the
``operation_span`` hook of the server's hooks, with the incoming
``traceparent``/``tracestate`` headers as carrier. Its own refusals are the one error body
(:class:`~tinkex_types._problems.ErrorResponse`).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from starlette.routing import Match

from tinkex_server._runtime import Runtime
from tinkex_server._wire import json_bytes
from tinkex_types._problems import ErrorResponse

__all__ = ["PROPAGATION", "ServerMiddleware"]

_log = logging.getLogger("tinkex_server.app")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths reachable without an API key.
_OPEN_PATHS = ("/api/v1/healthz", "/openapi.json", "/docs", "/redoc")
_OPEN_PREFIXES = ("/api/v1/checkpoint_archives/", "/api/v1/external_weights/", "/docs/")
#: Trace-context headers passed on to the spans.
PROPAGATION = ("traceparent", "tracestate", "baggage")


class ServerMiddleware:
    """Lazy start, API key check, body size limit and the per-request span."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, runtime: Runtime) -> None:
        self.app = app
        self.hooks = runtime.hooks
        self.fastapi_app = fastapi_app
        self.runtime = runtime
        self.config = runtime.config

    async def _reply(self, send: Send, status: int, detail: str, *, retry: bool = True) -> None:
        body = json_bytes(ErrorResponse(detail=detail).to_json_dict())
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if not retry:
            headers.append((b"x-should-retry", b"false"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _authorised(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        if path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES):
            return True
        presented = b""
        for name, value in scope.get("headers", []):
            if name.lower() == b"x-api-key":
                presented = value
                break
        ok = False
        for key in self.config.api_keys:
            ok |= hmac.compare_digest(presented, key.encode())
        return ok

    def _route_name(self, scope: Scope) -> str:
        for route in self.fastapi_app.router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return str(getattr(route, "name", "unknown"))
        return "unknown_route"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.runtime.ensure_started()
        except Exception as exc:  # e.g. the data directory is owned by another server
            _log.error("the server cannot start: %s", exc)
            await self._reply(send, 503, f"the server cannot start: {exc}", retry=False)
            return
        if self.config.auth_required and not self._authorised(scope):
            await self._reply(send, 401, "missing or invalid X-API-Key header")
            return
        limit = self.config.max_body_bytes
        declared = None
        for name, value in scope.get("headers", []):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        too_big = (
            f"the request body is larger than the server's limit of {limit} bytes "
            "(max_body_bytes); split the request"
        )
        if declared is not None and declared > limit:
            await self._reply(send, 413, too_big)
            return
        # Read the whole body (bounded), then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        more = scope["method"] not in ("GET", "HEAD")
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._reply(send, 413, too_big)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        carrier: dict[str, str] = {}
        for name, value in scope.get("headers", []):
            key = name.decode("latin-1").lower()
            if key in PROPAGATION:
                carrier[key] = value.decode("latin-1")
        op = self._route_name(scope)
        attrs = {"http.method": scope["method"], "http.path": scope.get("path", "")}
        with self.hooks.operation_span(f"server.{op}", attrs, carrier=carrier or None):
            await self.app(scope, replay, send)
