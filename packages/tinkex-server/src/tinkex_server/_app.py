"""The FastAPI application: every endpoint of the JSON generation (protocol.md §2).

Request bodies are the ``tinkex_types`` models (absent and ``null`` alike, ``type`` optional,
unknown keys ignored). Refusals are JSON ``{"detail": "..."}`` naming the field: 400 for
malformed JSON and semantic mistakes, 422 for schema mismatches, 401 for a wrong API key,
404 for unknown ids, 413 for oversized bodies. An unexpected fault is a 500 with
``x-should-retry: false`` (so clients do not retry it for minutes).

One ASGI middleware wraps every request: it starts the runtime lazily, checks
``X-API-Key`` (when keys are configured), enforces the body size limit and opens the
``server.<endpoint>`` span through the ``operation_span`` hook with the incoming
``traceparent``/``tracestate`` headers as carrier. Jobs queued by an endpoint carry that
span (``inject_headers`` inside it), so their queue-wait and engine-step spans nest under it.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from tinkex_server._checkpoints import checkpoint_name_problem
from tinkex_server._config import ServerConfig
from tinkex_server._problems import ApiProblem, bad_request
from tinkex_server._runtime import Runtime
from tinkex_types import (
    CreateModelRequest,
    CreateSamplingSessionRequest,
    CreateSessionRequest,
    ForwardBackwardRequest,
    ForwardRequest,
    FutureRetrieveRequest,
    GetInfoRequest,
    LoadWeightsRequest,
    OptimStepRequest,
    SampleRequest,
    SaveWeightsForSamplerRequest,
    SaveWeightsRequest,
    SessionHeartbeatRequest,
    UnloadModelRequest,
    WeightsInfoRequest,
    get_hooks,
)

__all__ = ["WireJSONResponse", "create_app", "runtime_of"]

_log = logging.getLogger("tinkex_server.app")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths reachable without an API key.
_OPEN_PATHS = ("/api/v1/healthz", "/openapi.json", "/docs", "/redoc")
_OPEN_PREFIXES = ("/api/v1/checkpoint_archives/", "/docs/")
_PROPAGATION = ("traceparent", "tracestate", "baggage")
#: The host of requests from the in-process ``local://`` transport (see ``_local``).
_LOCAL_HOST = "tinkex.local"


class WireJSONResponse(JSONResponse):
    """JSON that keeps ``NaN``/``Infinity`` (as Python's ``json`` writes them) instead of
    failing: a diverged loss is a result, not a server error."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=False, allow_nan=True, separators=(",", ":")
        ).encode("utf-8")


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> WireJSONResponse:
    return WireJSONResponse(body, status_code=status, headers=headers)


def runtime_of(app: FastAPI) -> Runtime:
    """The :class:`Runtime` behind an app made by :func:`create_app`."""
    runtime = app.state.tinkex
    assert isinstance(runtime, Runtime)
    return runtime


def _idem(request: Request) -> str | None:
    return request.headers.get("x-idempotency-key") or None


def _carrier(request: Request) -> dict[str, str] | None:
    """The trace context a queued job carries to its ``server.queue_wait`` and
    ``server.engine_step`` spans.

    Endpoints run inside the ``server.<endpoint>`` span (opened by the middleware), so the
    span plugins inject *that* span here: the job's spans become its children. When no
    plugin injects anything, the request's own ``traceparent``/``tracestate``/``baggage``
    are passed on unchanged (the job's spans then hang under the caller's span).
    """
    incoming = {h: request.headers[h] for h in _PROPAGATION if h in request.headers}
    injected: dict[str, str] = {}
    get_hooks().inject_headers(injected)
    if not injected:
        return incoming or None
    carrier = {key.lower(): value for key, value in injected.items()}
    if "baggage" in incoming and "baggage" not in carrier:
        carrier["baggage"] = incoming["baggage"]
    return carrier


def _describe_validation(exc: RequestValidationError) -> tuple[int, str]:
    parts: list[str] = []
    status = 422
    for err in exc.errors():
        kind = str(err.get("type", ""))
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if kind == "json_invalid":
            status = 400
            ctx = err.get("ctx") or {}
            return status, f"body: malformed JSON ({ctx.get('error', 'cannot be parsed')})"
        where = ".".join(loc) or "body"
        if not loc and isinstance(err.get("input"), bytes | str):
            return 400, "body: must be a JSON object (send Content-Type: application/json)"
        msg = str(err.get("msg", "is invalid"))
        if kind == "missing":
            msg = "is required"
        parts.append(f"{where}: {msg}")
    return status, "; ".join(parts) or "the request body is invalid"


class _ServerMiddleware:
    """Lazy start, API key check, body size limit and the per-request span."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, runtime: Runtime) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.runtime = runtime
        self.config = runtime.config

    async def _reply(self, send: Send, status: int, detail: str, *, retry: bool = True) -> None:
        body = json.dumps({"detail": detail}).encode()
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
            if key in _PROPAGATION:
                carrier[key] = value.decode("latin-1")
        op = self._route_name(scope)
        attrs = {"http.method": scope["method"], "http.path": scope.get("path", "")}
        with get_hooks().operation_span(f"server.{op}", attrs, carrier=carrier or None):
            await self.app(scope, replay, send)


def create_app(
    config: ServerConfig | None = None,
    *,
    engine_factory: Callable[[], Any] | None = None,
) -> FastAPI:
    """Build the ASGI app of one server. The runtime (store, engine worker, scheduler)
    starts at the first request or at ASGI lifespan startup, on the running loop, and stops
    at lifespan shutdown (or :meth:`Runtime.aclose`). ``engine_factory`` replaces the
    default ``Engine()``."""
    cfg = config if config is not None else ServerConfig()
    runtime = Runtime(cfg, engine_factory=engine_factory)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.ensure_started()
        try:
            yield
        finally:
            await runtime.aclose()

    app = FastAPI(
        title="tinkex-server",
        summary="A local Tinker-compatible server (JSON generation, SDK 0.16.1)",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=WireJSONResponse,
    )
    app.state.tinkex = runtime
    app.add_middleware(_ServerMiddleware, fastapi_app=app, runtime=runtime)

    # -- error shapes ---------------------------------------------------------------------
    @app.exception_handler(ApiProblem)
    async def _problem(_: Request, exc: ApiProblem) -> Response:
        return _json(exc.status, exc.body(), exc.headers or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        status, detail = _describe_validation(exc)
        return _json(status, {"detail": detail})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return _json(exc.status_code, {"detail": str(exc.detail)}, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> Response:
        _log.exception("unhandled error")
        return _json(
            500,
            {"detail": f"internal server error: {type(exc).__name__}"},
            {"x-should-retry": "false"},
        )

    async def _raw_json(request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiProblem(400, f"body: malformed JSON ({exc})") from None

    v1 = "/api/v1"

    # -- session ----------------------------------------------------------------------------
    @app.post(f"{v1}/create_session", tags=["session"])
    async def create_session(body: CreateSessionRequest, request: Request) -> Response:
        return _json(200, runtime.create_session(body, _idem(request)))

    @app.post(f"{v1}/session_heartbeat", tags=["session"])
    async def session_heartbeat(body: SessionHeartbeatRequest) -> Response:
        return _json(200, runtime.heartbeat(body))

    @app.post(f"{v1}/telemetry", tags=["session"])
    async def telemetry(request: Request) -> Response:
        return _json(200, runtime.telemetry(await _raw_json(request)))

    # -- models and training -----------------------------------------------------------------
    @app.post(f"{v1}/create_model", tags=["training"])
    async def create_model(body: CreateModelRequest, request: Request) -> Response:
        return _json(200, runtime.create_model(body, _idem(request), _carrier(request)))

    @app.post(f"{v1}/get_info", tags=["training"])
    async def get_info(body: GetInfoRequest) -> Response:
        return _json(200, runtime.get_info(body))

    @app.post(f"{v1}/unload_model", tags=["training"])
    async def unload_model(body: UnloadModelRequest, request: Request) -> Response:
        return _json(200, runtime.unload_model(body, _idem(request), _carrier(request)))

    def ordered_submit(
        model_id: str, seq_id: int | None, submit: Callable[[], dict[str, Any]]
    ) -> Response:
        """Submit one of a model's ``seq_id``-ordered requests. When it is refused with a
        4xx the client will not send that number again (only 408, 409 and 429 are retried),
        so the scheduler stops waiting for it instead of stalling the model's next request
        for the whole gap grace."""
        try:
            return _json(200, submit())
        except ApiProblem as exc:
            if 400 <= exc.status < 500 and exc.status not in (408, 409, 429):
                runtime.scheduler.void(model_id, seq_id)
            raise

    def check_checkpoint_name(name: str | None) -> None:
        problem = checkpoint_name_problem(name) if name is not None else None
        if problem is not None:
            raise bad_request(
                "path",
                problem,
                "use a short name of letters, digits, '-', '_' and '.', e.g. 'step-0010'",
            )

    @app.post(f"{v1}/forward", tags=["training"])
    async def forward(body: ForwardRequest, request: Request) -> Response:
        return ordered_submit(
            body.model_id,
            body.seq_id,
            lambda: runtime.forward(
                body, backward=False, idempotency_key=_idem(request), carrier=_carrier(request)
            ),
        )

    @app.post(f"{v1}/forward_backward", tags=["training"])
    async def forward_backward(body: ForwardBackwardRequest, request: Request) -> Response:
        return ordered_submit(
            body.model_id,
            body.seq_id,
            lambda: runtime.forward(
                body, backward=True, idempotency_key=_idem(request), carrier=_carrier(request)
            ),
        )

    @app.post(f"{v1}/optim_step", tags=["training"])
    async def optim_step(body: OptimStepRequest, request: Request) -> Response:
        return ordered_submit(
            body.model_id,
            body.seq_id,
            lambda: runtime.optim_step(body, _idem(request), _carrier(request)),
        )

    # -- weights ----------------------------------------------------------------------------
    @app.post(f"{v1}/save_weights", tags=["weights"])
    async def save_weights(body: SaveWeightsRequest, request: Request) -> Response:
        def submit() -> dict[str, Any]:
            check_checkpoint_name(body.path)
            return runtime.save_weights(body, _idem(request), _carrier(request))

        return ordered_submit(body.model_id, body.seq_id, submit)

    @app.post(f"{v1}/save_weights_for_sampler", tags=["weights"])
    async def save_weights_for_sampler(
        body: SaveWeightsForSamplerRequest, request: Request
    ) -> Response:
        def submit() -> dict[str, Any]:
            check_checkpoint_name(body.path)
            return runtime.save_weights_for_sampler(body, _idem(request), _carrier(request))

        return ordered_submit(body.model_id, body.seq_id, submit)

    @app.post(f"{v1}/load_weights", tags=["weights"])
    async def load_weights(body: LoadWeightsRequest, request: Request) -> Response:
        return ordered_submit(
            body.model_id,
            body.seq_id,
            lambda: runtime.load_weights(body, _idem(request), _carrier(request)),
        )

    @app.post(f"{v1}/weights_info", tags=["weights"])
    async def weights_info(body: WeightsInfoRequest) -> Response:
        return _json(200, runtime.weights_info(body))

    # -- sampling ---------------------------------------------------------------------------
    @app.post(f"{v1}/create_sampling_session", tags=["sampling"])
    async def create_sampling_session(body: CreateSamplingSessionRequest) -> Response:
        return _json(200, runtime.create_sampling_session(body))

    @app.post(f"{v1}/asample", tags=["sampling"])
    async def asample(body: SampleRequest, request: Request) -> Response:
        return _json(200, runtime.asample(body, _idem(request), _carrier(request)))

    @app.get(f"{v1}/samplers/{{sampler_id}}", tags=["sampling"])
    async def get_sampler(sampler_id: str) -> Response:
        return _json(200, runtime.get_sampler(sampler_id))

    # -- futures ----------------------------------------------------------------------------
    @app.post(f"{v1}/retrieve_future", tags=["futures"])
    async def retrieve_future(body: FutureRetrieveRequest) -> Response:
        status, payload = await runtime.retrieve_future(body)
        return _json(status, payload)

    # -- REST -------------------------------------------------------------------------------
    @app.get(f"{v1}/get_server_capabilities", tags=["rest"])
    async def get_server_capabilities() -> Response:
        return _json(200, runtime.capabilities())

    @app.get(f"{v1}/healthz", tags=["rest"])
    async def healthz() -> Response:
        return _json(200, {"status": "ok"})

    @app.get(f"{v1}/training_runs", tags=["rest"])
    async def list_training_runs(
        limit: int = Query(20, ge=0, le=10_000),
        offset: int = Query(0, ge=0, le=2**62),
        access_scope: str = "owned",
    ) -> Response:
        return _json(200, runtime.list_training_runs(limit, offset, access_scope))

    @app.get(f"{v1}/training_runs/{{run_id}}", tags=["rest"])
    async def get_training_run(run_id: str, access_scope: str = "owned") -> Response:
        return _json(200, runtime.get_training_run(run_id, access_scope))

    @app.get(f"{v1}/training_runs/{{run_id}}/checkpoints", tags=["rest"])
    async def list_run_checkpoints(run_id: str) -> Response:
        return _json(200, runtime.list_run_checkpoints(run_id))

    @app.get(f"{v1}/models/{{run_id}}/checkpoints", tags=["rest"])
    async def list_model_checkpoints(run_id: str) -> Response:
        return _json(200, runtime.list_run_checkpoints(run_id))

    @app.get(f"{v1}/checkpoints", tags=["rest"])
    async def list_user_checkpoints(
        limit: int = Query(100, ge=0, le=10_000), offset: int = Query(0, ge=0, le=2**62)
    ) -> Response:
        return _json(200, runtime.list_user_checkpoints(limit, offset))

    ckpt = f"{v1}/training_runs/{{run_id}}/checkpoints/{{kind}}/{{name}}"

    @app.delete(ckpt, tags=["rest"])
    async def delete_checkpoint(run_id: str, kind: str, name: str) -> Response:
        return _json(200, runtime.delete_checkpoint(run_id, kind, name))

    @app.post(f"{ckpt}/publish", tags=["rest"])
    async def publish_checkpoint(run_id: str, kind: str, name: str) -> Response:
        return _json(200, runtime.publish(run_id, kind, name, True))

    @app.delete(f"{ckpt}/publish", tags=["rest"])
    async def unpublish_checkpoint(run_id: str, kind: str, name: str) -> Response:
        return _json(200, runtime.publish(run_id, kind, name, False))

    @app.put(f"{ckpt}/ttl", tags=["rest"])
    async def set_checkpoint_ttl(run_id: str, kind: str, name: str, request: Request) -> Response:
        return _json(200, runtime.set_ttl(run_id, kind, name, await _raw_json(request)))

    @app.get(f"{ckpt}/archive", tags=["rest"])
    async def checkpoint_archive_url(
        run_id: str, kind: str, name: str, request: Request
    ) -> Response:
        base = str(request.base_url)
        if request.headers.get("host") == _LOCAL_HOST:
            base = "local:///"
        location, expires = runtime.archive_redirect(run_id, kind, name, base)
        return Response(
            status_code=302,
            headers={"location": location, "expires": expires, "cache-control": "no-store"},
        )

    @app.get(f"{v1}/checkpoint_archives/{{run_id}}/{{kind}}/{{name}}", tags=["rest"])
    async def download_checkpoint_archive(
        run_id: str, kind: str, name: str, expires: int = 0, signature: str = ""
    ) -> Response:
        path = await runtime.archive_file(run_id, kind, name, expires, signature)
        return FileResponse(path, media_type="application/x-tar", filename=f"{name}.tar")

    @app.get(f"{v1}/sessions", tags=["rest"])
    async def list_sessions(
        limit: int = Query(20, ge=0, le=10_000),
        offset: int = Query(0, ge=0, le=2**62),
        access_scope: str = "owned",
    ) -> Response:
        return _json(200, runtime.list_sessions(limit, offset, access_scope))

    @app.get(f"{v1}/sessions/{{session_id}}", tags=["rest"])
    async def get_session(session_id: str, access_scope: str = "owned") -> Response:
        return _json(200, runtime.get_session(session_id, access_scope))

    # -- test hooks (opt-in) -----------------------------------------------------------------
    if cfg.enable_test_routes:

        @app.post(f"{v1}/_test/training_runs/{{run_id}}/corrupted", tags=["test"])
        async def test_set_corrupted(run_id: str, request: Request) -> Response:
            raw = await _raw_json(request)
            value = raw.get("corrupted", True) if isinstance(raw, dict) else True
            return _json(200, runtime.set_corrupted(run_id, bool(value)))

        @app.get(f"{v1}/_test/applied", tags=["test"])
        async def test_applied(target: str | None = None) -> Response:
            steps = runtime.store.applied_steps(target)
            return _json(
                200,
                {
                    "steps": [
                        {
                            "target": s.target,
                            "seq_id": s.seq_id,
                            "request_type": s.request_type,
                            "request_id": s.request_id,
                            "outcome": s.outcome,
                        }
                        for s in steps
                    ]
                },
            )

        @app.get(f"{v1}/_test/telemetry", tags=["test"])
        async def test_telemetry() -> Response:
            rows = runtime.store.telemetry()
            return _json(200, {"batches": [r.body for r in rows]})

    return app
