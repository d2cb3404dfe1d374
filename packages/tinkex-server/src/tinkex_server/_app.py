"""The FastAPI application: every endpoint of the JSON generation (protocol.md §2).

:func:`create_app` wires a :class:`~tinkex_server._runtime.Runtime` to the routers of
each area (:mod:`~tinkex_server._routes_training`, :mod:`~tinkex_server._routes_sampling`,
:mod:`~tinkex_server._routes_rest`, and, opt-in, :mod:`~tinkex_server._testing`), the
middleware (:mod:`~tinkex_server._middleware`) and the codec seam
(:mod:`~tinkex_server._wire`). Every route answers a ``tinkex_types`` response model and
documents it (``response_model=``) and every error status it can answer (``responses=``)
with the one error body ``{"detail": "..."}``
(:class:`~tinkex_types._problems.ErrorResponse`): 400 for malformed bodies and semantic
mistakes, 422 for schema mismatches, 401 for a wrong API key, 404 for unknown ids, 413 for
oversized bodies. An unexpected fault is a 500 with ``x-should-retry: false`` (so clients
do not retry it for minutes).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from tinkex_server._config import ServerConfig
from tinkex_server._middleware import ServerMiddleware
from tinkex_server._problems import ApiProblem
from tinkex_server._routes_custom_loss import add_custom_loss_routes
from tinkex_server._routes_generations import add_generation_routes
from tinkex_server._routes_peft import add_peft_routes
from tinkex_server._routes_rest import add_rest_routes
from tinkex_server._routes_sampling import add_sampling_routes
from tinkex_server._routes_sessions import add_session_routes
from tinkex_server._routes_training import add_training_routes
from tinkex_server._routes_usage import add_usage_routes
from tinkex_server._runtime import Runtime
from tinkex_server._wire import WireJSONResponse, describe_errors, install_openapi, reply
from tinkex_types import Hooks
from tinkex_types._problems import ErrorResponse

__all__ = ["WireJSONResponse", "create_app", "runtime_of"]

_log = logging.getLogger("tinkex_server.app")


def runtime_of(app: FastAPI) -> Runtime:
    """The :class:`Runtime` behind an app made by :func:`create_app`."""
    runtime = app.state.tinkex
    assert isinstance(runtime, Runtime)
    return runtime


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return reply(ErrorResponse(detail=detail), status, headers or None)


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves at the request's path (Starlette names one route's)."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def problem(_: Request, exc: ApiProblem) -> Response:
        return reply(ErrorResponse.model_validate(exc.body()), exc.status, exc.headers or None)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        status, detail = describe_errors(list(exc.errors()))
        return _problem(status, detail)

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        detail = str(exc.detail)
        if exc.status_code == 405:
            # Starlette's own "Allow" names one route's methods: replaced, not repeated.
            headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
            headers["allow"] = ", ".join(_allowed_methods(app, request))
        if exc.status_code == 404 and detail == "Not Found":
            detail = (
                f"{request.method} {request.url.path}: this server has no such route "
                "(tinkex serve implements the routes of docs/compatibility.md)"
            )
        return _problem(exc.status_code, detail, headers)

    @app.exception_handler(Exception)
    async def crash(_: Request, exc: Exception) -> Response:
        _log.exception("unhandled error")
        return _problem(
            500, f"internal server error: {type(exc).__name__}", {"x-should-retry": "false"}
        )


def _no_native_telemetry() -> dict[str, Any]:
    """``telemetry=`` that switches FastAPI's own OpenTelemetry off (FastAPI versions that
    have it trace every request once a global tracer provider exists): the server's one
    server span per request is the middleware's, through the hooks."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    off = {
        "tracing": False,
        "metrics": False,
        "logs": False,
        "operation_spans": False,
        "auto_configure": False,
    }
    return {"telemetry": off}


def create_app(
    config: ServerConfig | None = None,
    *,
    hooks: Hooks | None = None,
    engine_factory: Callable[[], Any] | None = None,
) -> FastAPI:
    """Build the ASGI app of one server.

    ``hooks`` receive the server's spans (``server.<endpoint>``, ``server.queue_wait``,
    ``server.engine_step``) and inject trace headers; default: no plugins (the server never
    reads the process-wide ``get_hooks()``). The runtime (store, engine worker, scheduler)
    starts at the first request or at ASGI lifespan startup, on the running loop, and stops
    at lifespan shutdown (or :meth:`Runtime.aclose`). ``engine_factory`` replaces the
    default ``Engine()``.
    """
    cfg = config if config is not None else ServerConfig()
    runtime = Runtime(cfg, hooks=hooks, engine_factory=engine_factory)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.ensure_started()
        try:
            yield
        finally:
            await runtime.aclose()

    app = FastAPI(
        **_no_native_telemetry(),
        title="tinkex-server",
        summary="A local Tinker-compatible server (JSON generation, SDK 0.16.1)",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=WireJSONResponse,
    )
    app.state.tinkex = runtime
    app.add_middleware(ServerMiddleware, fastapi_app=app, runtime=runtime)
    _install_error_handlers(app)
    for add_routes in (
        add_generation_routes,
        add_session_routes,
        add_training_routes,
        add_custom_loss_routes,
        add_sampling_routes,
        add_rest_routes,
        add_peft_routes,
        add_usage_routes,
    ):
        add_routes(app.router, runtime)
    if cfg.enable_test_routes:
        from tinkex_server._testing import add_test_routes

        add_test_routes(app.router, runtime)
    install_openapi(app)
    return app
