"""The ASGI middleware around every request of the app.

It starts the runtime lazily, checks ``X-API-Key`` (when keys are configured), enforces the
body size limit (413) and opens the ``server.<endpoint>`` operation (one server span per
request) through the ``operation_span`` hook of the server's hooks, with the incoming
``traceparent``/``tracestate`` headers as carrier. Its own refusals are the one error body
(:class:`~tinkex_types._problems.ErrorResponse`).

The operation carries the stable HTTP server semantic-convention attributes
(:func:`http_attributes`: ``http.request.method``, ``http.route`` — the route template,
never the raw path —, ``url.path``, ``url.scheme``, ``server.address``, ``server.port``,
``network.protocol.version``, ``client.address``, ``user_agent.original``), from which a
span plugin names the span ``{method} {route}``. What is known only once the answer starts
(``http.response.status_code``, and ``error.type`` for a 5xx) goes into the mapping under
:data:`LATE_ATTRIBUTES`, which the plugin reads when the operation ends.

The route of a request is found once per method and path of a route without path
parameters (a cache, not a scan of every route per request). The endpoint of a hot route
(``asample``, ``retrieve_future``: marked by :func:`tinkex_server._routes.direct`) is called
here directly, inside the same operation, with its exceptions handed to the app's
exception handlers: FastAPI's routing, dependency solving and exception middleware cost
about as much per request as the endpoint's own work.
"""

from __future__ import annotations

import hmac
import inspect
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Match

from tinkex_server._runtime import Runtime
from tinkex_server._wire import json_bytes
from tinkex_types._problems import ErrorResponse

__all__ = ["DIRECT", "LATE_ATTRIBUTES", "PROPAGATION", "ServerMiddleware", "http_attributes"]

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
#: Attribute key of a mutable mapping the caller fills while the operation runs; span
#: plugins set its items on the span when the operation ends (tinkex-telemetry does).
LATE_ATTRIBUTES = "tinkex.late_attributes"
#: Methods the HTTP semantic conventions name; any other is ``_OTHER``.
_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: The ``Host`` of in-process requests (``local://``, see :mod:`tinkex_server._local`).
_IN_PROCESS_HOST = "tinkex.local"
#: The attribute :func:`tinkex_server._routes.direct` sets on an endpoint it marks.
DIRECT = "__tinkex_direct__"
#: Routes remembered per (method, root path, path) at most (routes without path parameters).
_ROUTE_CACHE_SIZE = 1024

#: ``(endpoint name, route template, direct endpoint or None)`` of a request's route.
_RouteInfo = tuple[str, str | None, Callable[[Request], Awaitable[Any]] | None]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _host_and_port(scope: Scope) -> tuple[str | None, int | None]:
    """``server.address``/``server.port``: the ``Host`` header's, else the socket's."""
    scheme = str(scope.get("scheme", "http"))
    host = _header(scope, b"host")
    if host:
        name, sep, port = host.rpartition(":")
        if sep and port.isdigit() and not name.endswith(":"):
            return name.strip("[]"), int(port)
        if host == _IN_PROCESS_HOST:  # local://: no socket, no port
            return host, None
        return host.strip("[]"), _DEFAULT_PORTS.get(scheme)
    server = scope.get("server")
    if server:
        return str(server[0]), (int(server[1]) if server[1] is not None else None)
    return None, None


def http_attributes(scope: Scope, route: str | None) -> dict[str, Any]:
    """The stable HTTP server semantic-convention attributes of a request (``route``: the
    matched route template, ``None`` when no route matches)."""
    method = str(scope.get("method", "GET"))
    attrs: dict[str, Any] = {
        "http.request.method": method if method in _KNOWN_METHODS else "_OTHER",
        "url.path": scope.get("path", ""),
        "url.scheme": scope.get("scheme", "http"),
    }
    if method not in _KNOWN_METHODS:
        attrs["http.request.method_original"] = method
    if route is not None:
        attrs["http.route"] = route
    address, port = _host_and_port(scope)
    if address:
        attrs["server.address"] = address
    if port is not None:
        attrs["server.port"] = port
    if scope.get("http_version"):
        attrs["network.protocol.version"] = str(scope["http_version"])
    client = scope.get("client")
    if client:
        attrs["client.address"] = str(client[0])
    agent = _header(scope, b"user-agent")
    if agent:
        attrs["user_agent.original"] = agent
    return attrs


class ServerMiddleware:
    """Lazy start, API key check, body size limit and the per-request span."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, runtime: Runtime) -> None:
        self.app = app
        self.hooks = runtime.hooks
        self.fastapi_app = fastapi_app
        self.runtime = runtime
        self.config = runtime.config
        self._routes: dict[tuple[Any, Any, Any], _RouteInfo] = {}

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

    def _route(self, scope: Scope) -> _RouteInfo:
        """``(endpoint name, route template, direct endpoint)`` of the route serving
        ``scope`` (the first that matches it fully, as the router picks it)."""
        key = (scope.get("method"), scope.get("root_path", ""), scope.get("path"))
        known = self._routes.get(key)
        if known is not None:
            return known
        for route in self.fastapi_app.router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                endpoint = getattr(route, "endpoint", None)
                info: _RouteInfo = (
                    str(getattr(route, "name", "unknown")),
                    getattr(route, "path", None),
                    endpoint if getattr(endpoint, DIRECT, False) else None,
                )
                # Only a route without path parameters answers the same for every request
                # of this method and path (a bounded set of keys).
                if not getattr(route, "param_convertors", True) and len(self._routes) < (
                    _ROUTE_CACHE_SIZE
                ):
                    self._routes[key] = info
                return info
        return "unknown_route", None, None

    def _exception_handler(self, exc: Exception) -> Callable[..., Any] | None:
        """The app's handler of ``exc`` as FastAPI's exception middleware picks it (by
        status for an HTTPException, else by class); ``None`` for the ones the outermost
        server-error middleware handles (``Exception``: the 500 answer)."""
        handlers = self.fastapi_app.exception_handlers
        if isinstance(exc, HTTPException) and exc.status_code in handlers:
            return handlers[exc.status_code]
        for cls in type(exc).__mro__:
            if cls is Exception:
                break
            if cls in handlers:
                return handlers[cls]
        return None

    async def _direct(
        self,
        endpoint: Callable[[Request], Awaitable[Any]],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Serve a :func:`~tinkex_server._routes.direct` endpoint (see the module docstring)."""
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = self._exception_handler(exc)
            if handler is None:
                raise
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, receive, send)

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
        op, route, endpoint = self._route(scope)
        late: dict[str, Any] = {}
        attrs = {**http_attributes(scope, route), LATE_ATTRIBUTES: late}

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                late["http.response.status_code"] = status
                if status >= 500:
                    late["error.type"] = str(status)
            await send(message)

        with self.hooks.operation_span(f"server.{op}", attrs, carrier=carrier or None):
            if endpoint is not None:
                await self._direct(endpoint, scope, replay, observed_send)
            else:
                await self.app(scope, replay, observed_send)
