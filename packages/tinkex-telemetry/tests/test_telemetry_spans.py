"""Span tree: operation span → HTTP attempt spans → server spans, propagation, no secrets."""

from __future__ import annotations

import asyncio
import contextvars
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import tinkex_types
from tinkex_telemetry import TelemetryPlugin, TracingTransport
from tinkex_types import FutureEvent, QueueStateEvent, RequestEvent

BASE = "http://tinker.test"


def _traceparent_ids(header: str) -> tuple[int, int]:
    version, trace_id, span_id, flags = header.split("-")
    assert version == "00"
    assert int(flags, 16) & 1 == 1
    return int(trace_id, 16), int(span_id, 16)


class FakeServer:
    """A MockTransport handler playing the Tinker server, traced through the hooks in a
    fresh context (as a separate process would be): only the carrier links the traces."""

    def __init__(self, hooks: tinkex_types.Hooks) -> None:
        self.hooks = hooks
        self.seen: list[httpx.Headers] = []
        self.fb_calls = 0
        self.polls = 0
        self.fail_with: Exception | None = None

    def _serve(self, request: httpx.Request) -> httpx.Response:
        with self.hooks.operation_span(
            "server.request", {"http.route": request.url.path}, carrier=dict(request.headers)
        ):
            with self.hooks.operation_span("server.engine_step", {"batch_size": 1}):
                pass
            if request.url.path.endswith("/forward_backward"):
                self.fb_calls += 1
                if self.fb_calls == 1:
                    return httpx.Response(503, json={"detail": "busy"})
                return httpx.Response(200, json={"request_id": "req-1"})
            if request.url.path.endswith("/retrieve_future"):
                self.polls += 1
                if self.polls == 1:
                    return httpx.Response(
                        200, json={"type": "try_again", "queue_state": "paused_capacity"}
                    )
                return httpx.Response(200, json={"metrics": {"loss:sum": 1.5}})
            return httpx.Response(200, json={})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request.headers)
        if self.fail_with is not None:
            raise self.fail_with
        return contextvars.Context().run(self._serve, request)


async def call(
    hooks: tinkex_types.Hooks,
    client: httpx.AsyncClient,
    path: str,
    body: dict[str, Any],
    *,
    attempt: int = 0,
    request_type: str | None = None,
    iteration: int | None = None,
    api_key: str,
) -> httpx.Response:
    """What tinkex-http does around one attempt (headers, inject, on_request)."""
    headers = {
        "x-api-key": api_key,
        "x-stainless-retry-count": str(attempt),
        "user-agent": "AsyncTinker/Python 0.16.1",
    }
    if request_type:
        headers["x-tinker-request-type"] = request_type
    if iteration is not None:
        headers["x-tinker-request-iteration"] = str(iteration)
    hooks.inject_headers(headers)
    start = time.perf_counter()
    response = await client.post(path, json=body, headers=headers)
    hooks.on_request(
        RequestEvent(
            method="POST",
            path=path,
            attempt=attempt,
            duration_s=time.perf_counter() - start,
            status_code=response.status_code,
            request_type=request_type,
            will_retry=response.status_code >= 500,
            bytes_sent=len(response.request.content),
            bytes_received=len(response.content),
            base_url=BASE,
        )
    )
    return response


def make_client(
    hooks: tinkex_types.Hooks, server: Callable[..., Any], config: Any
) -> httpx.AsyncClient:
    transport = hooks.wrap_transport(httpx.MockTransport(server), config)
    assert isinstance(transport, TracingTransport)
    return httpx.AsyncClient(base_url=BASE, transport=transport)


async def forward_backward_flow(
    hooks: tinkex_types.Hooks, client: httpx.AsyncClient, key: str
) -> None:
    body = {"model_id": "m-1", "seq_id": 3, "forward_backward_input": {"data": [1, 2, 3]}}
    with hooks.operation_span("forward_backward", {"model_id": "m-1", "seq_id": 3, "api_key": key}):
        first = await call(hooks, client, "/api/v1/forward_backward", body, api_key=key)
        assert first.status_code == 503
        second = await call(hooks, client, "/api/v1/forward_backward", body, attempt=1, api_key=key)
        request_id = second.json()["request_id"]
        poll = {"request_id": request_id}
        r = await call(
            hooks, client, "/api/v1/retrieve_future", poll,
            request_type="ForwardBackward", iteration=0, api_key=key,
        )  # fmt: skip
        assert r.json()["type"] == "try_again"
        hooks.on_queue_state_change(
            QueueStateEvent(request_id, "paused_capacity", "active", "out of capacity", "m-1", BASE)
        )
        r = await call(
            hooks, client, "/api/v1/retrieve_future", poll,
            request_type="ForwardBackward", iteration=1, api_key=key,
        )  # fmt: skip
        assert "metrics" in r.json()
        hooks.on_future(
            FutureEvent(
                request_id, "resolved", 0.2, 2, request_type="ForwardBackward", model_id="m-1"
            )
        )


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def test_span_tree_client_http_server_engine(
    otel: Any, fake_config: Any, secrets: Any
) -> None:
    key = secrets[0]
    server = FakeServer(otel.hooks)
    async with make_client(otel.hooks, server, fake_config) as client:
        await forward_backward_flow(otel.hooks, client, key)

    spans = otel.spans()
    op = otel.span("forward_backward")
    assert op.kind is SpanKind.INTERNAL
    assert op.parent is None
    assert op.attributes["tinkex.model_id"] == "m-1"
    assert op.attributes["tinkex.seq_id"] == 3
    assert op.attributes["tinkex.operation"] == "forward_backward"
    assert op.attributes["tinkex.queue_state"] == "paused_capacity"
    assert "tinkex.api_key" not in op.attributes
    assert "api_key" not in op.attributes
    event_names = [e.name for e in op.events]
    assert event_names == ["tinkex.queue.state_change", "tinkex.future.resolved"]
    assert op.events[1].attributes["tinkex.future.polls"] == 2

    attempts = _children(spans, op)
    assert [s.name for s in attempts] == [
        "POST /api/v1/forward_backward",
        "POST /api/v1/forward_backward",
        "POST /api/v1/retrieve_future",
        "POST /api/v1/retrieve_future",
    ]
    assert all(s.kind is SpanKind.CLIENT for s in attempts)
    assert all(s.context.trace_id == op.context.trace_id for s in attempts)
    fb0, fb1, poll0, poll1 = attempts
    assert fb0.attributes["http.response.status_code"] == 503
    assert fb0.attributes["error.type"] == "503"
    assert fb0.status.status_code is StatusCode.ERROR
    assert fb0.attributes["tinkex.retry_count"] == 0
    assert "http.request.resend_count" not in fb0.attributes
    assert fb1.attributes["tinkex.retry_count"] == 1
    assert fb1.attributes["http.request.resend_count"] == 1
    assert fb1.attributes["http.response.status_code"] == 200
    assert "error.type" not in fb1.attributes
    assert fb1.attributes["tinkex.model_id"] == "m-1"
    assert fb1.attributes["tinkex.seq_id"] == 3
    assert fb1.attributes["http.request.method"] == "POST"
    assert fb1.attributes["url.full"] == f"{BASE}/api/v1/forward_backward"
    assert fb1.attributes["server.address"] == "tinker.test"
    assert fb1.attributes["server.port"] == 80
    assert fb1.attributes["http.request.body.size"] > 0
    assert fb1.attributes["user_agent.original"] == "AsyncTinker/Python 0.16.1"
    assert poll0.attributes["tinkex.poll_iteration"] == 0
    assert poll1.attributes["tinkex.poll_iteration"] == 1
    assert poll1.attributes["tinkex.request_id"] == "req-1"
    assert poll1.attributes["tinkex.request_type"] == "ForwardBackward"

    # Every attempt carried a traceparent naming the attempt span itself as parent...
    assert len(server.seen) == 4
    for headers, attempt in zip(server.seen, attempts, strict=True):
        trace_id, span_id = _traceparent_ids(headers["traceparent"])
        assert trace_id == attempt.context.trace_id
        assert span_id == attempt.context.span_id
    # ...and the server continued the trace: server.request (SERVER) under each attempt,
    # server.engine_step under server.request.
    for attempt in attempts:
        (srv,) = _children(spans, attempt)
        assert srv.name == "server.request"
        assert srv.kind is SpanKind.SERVER
        assert srv.parent is not None
        assert srv.parent.is_remote
        assert srv.context.trace_id == op.context.trace_id
        (engine,) = _children(spans, srv)
        assert engine.name == "server.engine_step"
        assert engine.kind is SpanKind.INTERNAL
    assert len(spans) == 1 + 4 * 3


def _all_text(span: ReadableSpan) -> str:
    parts: list[str] = [span.name, repr(dict(span.attributes or {}))]
    if span.status.description:
        parts.append(span.status.description)
    for event in span.events:
        parts.append(event.name)
        parts.append(repr(dict(event.attributes or {})))
    for link in span.links:
        parts.append(repr(dict(link.attributes or {})))
    parts.append(repr(dict(span.resource.attributes)))
    return "\n".join(parts)


async def test_no_span_holds_a_secret(otel: Any, fake_config: Any, secrets: Any) -> None:
    key, cf_secret = secrets
    server = FakeServer(otel.hooks)
    plugin_with_headers = TelemetryPlugin(
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        capture_request_headers=[
            "x-api-key",
            "authorization",
            "cf-access-client-secret",
            "x-tinker-request-type",
        ],
    )
    inner = httpx.MockTransport(server)
    transport = plugin_with_headers.tinkex_wrap_transport(
        transport=otel.hooks.wrap_transport(inner, fake_config), config=fake_config
    )
    async with httpx.AsyncClient(base_url=BASE, transport=transport) as client:
        await forward_backward_flow(otel.hooks, client, key)
        headers = {
            "x-api-key": key,
            "authorization": f"Bearer {key}",
            "cf-access-client-secret": cf_secret,
            "x-tinker-request-type": "Sample",
        }
        await client.post(
            f"/api/v1/asample?api_key={key}&token=abc&page=2",
            json={"session_id": key},
            headers=headers,
        )
        server.fail_with = httpx.ConnectError(f"connection to {BASE} with key {key} refused")
        with pytest.raises(httpx.ConnectError):
            await client.post("/api/v1/asample", json={}, headers=headers)
        with (
            pytest.raises(RuntimeError),
            otel.hooks.operation_span(
                "sample", {"note": f"uses {key}", "password": "hunter2hunter2"}
            ),
        ):
            raise RuntimeError(f"failed while using {key} and {cf_secret}")

    spans = otel.spans()
    assert len(spans) > 12
    for span in spans:
        text = _all_text(span)
        assert key not in text, span.name
        assert cf_secret not in text, span.name
        assert "hunter2hunter2" not in text
    sample_attempts = [s for s in spans if s.name == "POST /api/v1/asample"]
    # Both wrappers traced both calls: 2 calls x 2 wrappers.
    assert len(sample_attempts) == 4
    with_headers = [
        s for s in sample_attempts if "http.request.header.x-tinker-request-type" in s.attributes
    ]
    assert with_headers, "the allowed header was captured"
    for span in sample_attempts:
        assert not any(
            "api-key" in k or "authorization" in k or "secret" in k for k in span.attributes
        )
    url = sample_attempts[0].attributes["url.full"]
    assert "api_key=REDACTED" in url
    assert "token=REDACTED" in url
    assert "page=2" in url
    failed = [s for s in sample_attempts if s.attributes.get("error.type") == "ConnectError"]
    assert len(failed) == 2
    assert all(s.status.status_code is StatusCode.ERROR for s in failed)
    op = otel.span("sample")
    assert op.status.status_code is StatusCode.ERROR
    assert op.attributes["error.type"] == "RuntimeError"
    assert "tinkex.password" not in op.attributes
    (exc_event,) = [e for e in op.events if e.name == "exception"]
    assert "[REDACTED]" in exc_event.attributes["exception.message"]


async def test_concurrent_operations_keep_their_own_parents(
    otel: Any, fake_config: Any, secrets: Any
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)
        return httpx.Response(200, json={"ok": True})

    transport = otel.hooks.wrap_transport(httpx.MockTransport(handler), fake_config)
    async with httpx.AsyncClient(base_url=BASE, transport=transport) as client:

        async def op(name: str) -> None:
            with otel.hooks.operation_span(name, {}):
                for _ in range(3):
                    await client.post("/api/v1/x", json={})
                    await asyncio.sleep(0)

        await asyncio.gather(op("sample"), op("optim_step"), op("save_weights"))

    spans = otel.spans()
    for name in ("sample", "optim_step", "save_weights"):
        parent = otel.span(name)
        kids = _children(spans, parent)
        assert len(kids) == 3
        assert all(k.context.trace_id == parent.context.trace_id for k in kids)
    assert (
        len({otel.span(n).context.trace_id for n in ("sample", "optim_step", "save_weights")}) == 3
    )


def test_sync_transport_and_streamed_body(otel: Any, fake_config: Any) -> None:
    payload = b"x" * 5000

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, stream=httpx.ByteStream(payload), extensions={"http_version": b"HTTP/2"}
        )

    transport = otel.hooks.wrap_transport(httpx.MockTransport(handler), fake_config)
    assert isinstance(transport, TracingTransport)
    with (
        otel.hooks.operation_span("download_archive", {}),
        httpx.Client(transport=transport) as client,
    ):
        with client.stream(
            "GET",
            "https://tinker.test/api/v1/training_runs/run-42/checkpoints/weights/0001/archive",
        ) as r:
            assert not otel.spans(), "the attempt span stays open while the body streams"
            assert r.read() == payload
    attempt = otel.span("GET /api/v1/training_runs/{id}/checkpoints/weights/{id}/archive")
    assert attempt.attributes["http.response.body.size"] == len(payload)
    assert attempt.attributes["network.protocol.version"] == "2"
    assert attempt.attributes["server.port"] == 443
    assert attempt.parent is not None
    assert attempt.parent.span_id == otel.span("download_archive").context.span_id


async def test_async_streamed_body_ends_span_after_read(otel: Any, fake_config: Any) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"abcd"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks())

    transport = otel.hooks.wrap_transport(httpx.MockTransport(handler), fake_config)
    async with httpx.AsyncClient(transport=transport) as client:
        async with client.stream("GET", "http://tinker.test/api/v1/stream") as r:
            assert not otel.spans()
            body = await r.aread()
    assert body == b"abcd" * 4
    assert otel.span("GET /api/v1/stream").attributes["http.response.body.size"] == 16


def test_inject_headers_only_inside_a_span_and_never_overwrites(otel: Any) -> None:
    headers: dict[str, str] = {}
    otel.hooks.inject_headers(headers)
    assert headers == {}, "no active span: nothing to propagate"
    with otel.hooks.operation_span("get_info", {}):
        otel.hooks.inject_headers(headers)
        assert "traceparent" in headers
        trace_id, span_id = _traceparent_ids(headers["traceparent"])
        kept = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
        otel.hooks.inject_headers(kept)
        assert kept["traceparent"].startswith("00-111")
    op = otel.span("get_info")
    assert (trace_id, span_id) == (op.context.trace_id, op.context.span_id)


async def test_attempt_without_operation_continues_a_callers_traceparent(
    otel: Any, fake_config: Any
) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["traceparent"])
        return httpx.Response(200)

    transport = otel.hooks.wrap_transport(httpx.MockTransport(handler), fake_config)
    caller = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("http://tinker.test/api/v1/healthz", headers={"traceparent": caller})
    span = otel.span("GET /api/v1/healthz")
    assert span.context.trace_id == int("ab" * 16, 16)
    assert span.parent is not None
    assert span.parent.span_id == int("cd" * 8, 16)
    assert _traceparent_ids(seen[0]) == (span.context.trace_id, span.context.span_id)


def test_span_names_use_the_api_route(otel: Any, fake_config: Any) -> None:
    transport = otel.hooks.wrap_transport(
        httpx.MockTransport(lambda r: httpx.Response(200)), fake_config
    )
    with httpx.Client(transport=transport) as client:
        client.post("https://tinker.test/services/tinker-prod/api/v1/forward_backward")
        client.post("http://127.0.0.1:8000/tmp/data-dir-42/api/v1/asample")
        client.get("https://tinker.test/healthz")  # a health check starts no trace
        client.post("https://tinker.test/api/v1/telemetry", json={})  # nor does telemetry
    names = sorted(s.name for s in otel.spans())
    assert names == ["POST /api/v1/asample", "POST /api/v1/forward_backward"]
    prod = otel.span("POST /api/v1/forward_backward")
    assert prod.attributes["url.template"] == "/services/tinker-prod/api/v1/forward_backward"


def test_health_and_telemetry_inside_an_operation_are_traced(otel: Any, fake_config: Any) -> None:
    seen: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200)

    transport = otel.hooks.wrap_transport(httpx.MockTransport(handler), fake_config)
    with httpx.Client(transport=transport) as client:
        client.get("https://tinker.test/api/v1/session_heartbeat")
        with otel.hooks.operation_span("probe", {}):
            client.get("https://tinker.test/api/v1/healthz")
            client.post("https://tinker.test/api/v1/session_heartbeat")  # never traced
    assert "traceparent" not in seen[0]  # untraced: nothing injected either
    (probe,) = [s for s in otel.spans() if s.name == "GET /api/v1/healthz"]
    assert probe.parent is not None
    assert [s.name for s in otel.spans()] == ["GET /api/v1/healthz", "probe"]


async def test_propagate_false_injects_nothing(otel: Any, fake_config: Any) -> None:
    plugin = TelemetryPlugin(tracer_provider=otel.tracer_provider, propagate=False)
    seen: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200)

    transport = plugin.tinkex_wrap_transport(
        transport=httpx.MockTransport(handler), config=fake_config
    )
    headers: dict[str, str] = {}
    with plugin.operation_span("sample"):
        plugin.tinkex_inject_headers(headers)
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get("http://tinker.test/api/v1/x")
    assert headers == {}
    assert "traceparent" not in seen[0]
    assert otel.span("GET /api/v1/x").parent is not None


def test_server_span_with_carrier_is_child_of_client_attempt(otel: Any) -> None:
    with otel.hooks.operation_span("sample", {}):
        carrier: dict[str, str] = {}
        otel.hooks.inject_headers(carrier)

    def server_side() -> None:
        with otel.hooks.operation_span(
            "server.request", {"route": "/api/v1/asample"}, carrier=carrier
        ):
            with otel.hooks.operation_span("server.queue_wait", {}):
                pass
            # A worker handed the same carrier nests under the current server span.
            with otel.hooks.operation_span("server.engine_step", {}, carrier=carrier):
                pass

    contextvars.Context().run(server_side)
    client = otel.span("sample")
    srv = otel.span("server.request")
    assert srv.parent is not None
    assert srv.parent.span_id == client.context.span_id
    assert srv.attributes["tinkex.route"] == "/api/v1/asample"
    assert otel.span("server.queue_wait").parent.span_id == srv.context.span_id
    assert otel.span("server.engine_step").parent.span_id == srv.context.span_id


def test_garbage_carrier_starts_a_new_trace(otel: Any) -> None:
    with otel.hooks.operation_span("server.request", {}, carrier={"traceparent": "not-a-header"}):
        pass
    assert otel.span("server.request").parent is None


def test_hooks_without_plugin_still_work() -> None:
    pm = tinkex_types.make_plugin_manager(load_entrypoints=False)
    hooks = tinkex_types.Hooks(pm)
    with hooks.operation_span("sample", {"a": 1}):
        headers: dict[str, str] = {}
        hooks.inject_headers(headers)
    assert headers == {}
    inner = httpx.MockTransport(lambda r: httpx.Response(200))
    assert hooks.wrap_transport(inner, None) is inner


def test_cancellation_is_not_an_error(otel: Any) -> None:
    with pytest.raises(asyncio.CancelledError), otel.hooks.operation_span("sample", {}):
        raise asyncio.CancelledError
    span = otel.span("sample")
    assert span.attributes["tinkex.cancelled"] is True
    assert span.status.status_code is not StatusCode.ERROR


def test_large_body_ids_are_scanned_not_parsed(otel: Any, fake_config: Any) -> None:
    big = {
        "forward_backward_input": {"data": [{"tokens": list(range(60_000))}]},
        "model_id": "m-big",
        "seq_id": 9,
    }
    content = json.dumps(big).encode()
    assert len(content) > 256 * 1024
    transport = otel.hooks.wrap_transport(
        httpx.MockTransport(lambda r: httpx.Response(200)), fake_config
    )
    with httpx.Client(transport=transport) as client:
        client.post(
            "http://tinker.test/api/v1/forward_backward",
            content=content,
            headers={"content-type": "application/json"},
        )
    span = otel.span("POST /api/v1/forward_backward")
    assert span.attributes["tinkex.model_id"] == "m-big"
    assert span.attributes["tinkex.seq_id"] == 9
    assert span.attributes["http.request.body.size"] == len(content)


def test_server_span_is_named_by_method_and_route_with_late_status(otel: Any) -> None:
    """A server operation with the HTTP attributes is named ``{method} {route}``; the
    status the caller learns inside the block lands on the span; a 5xx marks it failed
    (error.type = the status), a 4xx does not; the late mapping itself is no attribute."""
    for status in (200, 404, 503):
        late: dict[str, Any] = {}
        attrs = {
            "http.request.method": "POST",
            "http.route": "/api/v1/runs/{run_id}",
            "url.path": f"/api/v1/runs/r-{status}",
            "tinkex.late_attributes": late,
        }
        with otel.hooks.operation_span("server.run", attrs):
            late["http.response.status_code"] = status
            if status >= 500:
                late["error.type"] = str(status)
    spans = [s for s in otel.spans() if s.name == "POST /api/v1/runs/{run_id}"]
    assert [s.kind for s in spans] == [SpanKind.SERVER] * 3
    by_status = {s.attributes["http.response.status_code"]: s for s in spans}
    assert set(by_status) == {200, 404, 503}
    for status, span in by_status.items():
        assert span.attributes["tinkex.operation"] == "server.run"
        assert "tinkex.late_attributes" not in span.attributes
        failed = span.status.status_code is StatusCode.ERROR
        assert failed is (status >= 500)
        assert span.attributes.get("error.type") == ("503" if status >= 500 else None)
    # Without a route (no route matched): just the method; internal spans keep their names.
    with otel.hooks.operation_span("server.unknown_route", {"http.request.method": "GET"}):
        with otel.hooks.operation_span("server.engine_step", {"http.request.method": "GET"}):
            pass
    assert otel.span("GET").kind is SpanKind.SERVER
    assert otel.span("server.engine_step").kind is SpanKind.INTERNAL
    # http.server.request.duration: one point per (route, status), never the raw path.
    points = otel.metric_points()["http.server.request.duration"]
    seen = {
        (p.attributes.get("http.route"), p.attributes.get("http.response.status_code")): p
        for p in points
    }
    assert set(seen) == {
        ("/api/v1/runs/{run_id}", 200),
        ("/api/v1/runs/{run_id}", 404),
        ("/api/v1/runs/{run_id}", 503),
        (None, None),
    }
    assert seen[("/api/v1/runs/{run_id}", 503)].attributes["error.type"] == "503"
    assert "error.type" not in seen[("/api/v1/runs/{run_id}", 404)].attributes
    assert all("url.path" not in p.attributes for p in points)
    assert all(p.count == 1 for p in points)


@pytest.mark.parametrize("encoding", [None, "zstd"])
def test_protobuf_body_ids_reach_the_attempt_span(
    otel: Any, fake_config: Any, encoding: str | None
) -> None:
    """A protobuf ``forward_backward`` (the 0.25+ generation), compressed or not, names its
    model and seq_id on the attempt span like a JSON one does."""
    from tinkex_types import (
        Datum,
        ForwardBackwardInput,
        ForwardBackwardRequest,
        ModelInput,
        TensorData,
        encode_content,
    )
    from tinkex_types.proto import ProtobufCodec

    datum = Datum(
        model_input=ModelInput.from_ints(list(range(300))),
        loss_fn_inputs={"target_tokens": TensorData(data=list(range(300)), dtype="int64")},
    )
    request = ForwardBackwardRequest(
        forward_backward_input=ForwardBackwardInput(data=[datum] * 4, loss_fn="cross_entropy"),
        model_id="m-proto",
        seq_id=1234567,
    )
    content = encode_content(ProtobufCodec().encode(request), encoding)
    headers = {"content-type": "application/x-protobuf"}
    if encoding:
        headers["content-encoding"] = encoding
    transport = otel.hooks.wrap_transport(
        httpx.MockTransport(lambda r: httpx.Response(200)), fake_config
    )
    with httpx.Client(transport=transport) as client:
        client.post("http://tinker.test/api/v1/forward_backward", content=content, headers=headers)
    span = otel.span("POST /api/v1/forward_backward")
    assert span.attributes["tinkex.model_id"] == "m-proto"
    assert span.attributes["tinkex.seq_id"] == 1234567


def test_protobuf_body_ids_of_garbage_are_empty() -> None:
    from tinkex_telemetry._attrs import protobuf_body_ids

    assert protobuf_body_ids(b"\xff\xff\xff", None) == {}
    assert protobuf_body_ids(b"not zstd", "zstd") == {}
    assert protobuf_body_ids(b"\x0a\x50abc", None) == {}  # length past the end
