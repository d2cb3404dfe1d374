"""With no tracer and no meter provider (the API's no-op ones), the plugin does no per-request
work: attempts go straight to the inner transport, operation spans are the invalid span,
metrics build no attributes, and observer events become records only when a sink or the
session reporter will take them. Anything that could be recorded or propagated still is."""

from __future__ import annotations

from typing import Any

import httpx
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

import tinkex_types
from tinkex_telemetry import TelemetryPlugin
from tinkex_telemetry._forwarding import event_notable, is_notable
from tinkex_telemetry._metrics import TinkexMetrics
from tinkex_telemetry._records import TelemetryRecord, record_from_event
from tinkex_telemetry._transport import TracingTransport, _TracedAsyncStream, tracing_off
from tinkex_types import (
    FutureEvent,
    QueueStateEvent,
    RegularizerEvent,
    RequestEvent,
)
from tinkex_types._events import CircuitBreakerEvent, RecoveryEvent


def _idle_plugin(**options: Any) -> TelemetryPlugin:
    return TelemetryPlugin(
        tracer_provider=trace.NoOpTracerProvider(),
        meter_provider=metrics.NoOpMeterProvider(),
        register_sinks=False,
        session_reporters=False,
        **options,
    )


class _Sink:
    def __init__(self) -> None:
        self.records: list[TelemetryRecord] = []

    def emit(self, record: TelemetryRecord) -> None:
        self.records.append(record)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        return None


def test_tracing_off_follows_the_provider() -> None:
    assert tracing_off(trace.NoOpTracer())
    assert not tracing_off(TracerProvider(shutdown_on_exit=False).get_tracer("t"))
    proxy = trace.ProxyTracer("t")
    assert tracing_off(proxy), "a proxy with no global provider installed records nothing"
    proxy._real_tracer = TracerProvider(shutdown_on_exit=False).get_tracer("t")
    assert not tracing_off(proxy), "once a provider backs the proxy, attempts are traced"


async def test_idle_attempts_pass_straight_through(fake_config: Any) -> None:
    seen: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, json={"ok": True})

    plugin = _idle_plugin()
    transport = plugin.tinkex_wrap_transport(httpx.MockTransport(handler), fake_config)
    assert isinstance(transport, TracingTransport)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.post("http://tinker.test/api/v1/get_info", json={})
    assert response.json() == {"ok": True}
    assert not isinstance(response.stream, _TracedAsyncStream)
    assert "traceparent" not in seen[0]


async def test_idle_attempt_keeps_a_callers_traceparent(fake_config: Any) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["traceparent"])
        return httpx.Response(200)

    transport = _idle_plugin().tinkex_wrap_transport(httpx.MockTransport(handler), fake_config)
    caller = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("http://tinker.test/api/v1/get_info", headers={"TraceParent": caller})
    assert seen == [caller]


def test_idle_operation_span_is_the_invalid_span_and_runs_the_block() -> None:
    plugin = _idle_plugin()
    ran = []
    with plugin.operation_span("forward_backward", {"model_id": "m"}) as span:
        ran.append(trace.get_current_span())
    assert span is trace.INVALID_SPAN
    assert ran == [trace.get_current_span()]
    assert not ran[0].get_span_context().is_valid


def test_operation_span_with_a_tracer_is_still_recorded() -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    plugin = TelemetryPlugin(
        tracer_provider=provider,
        meter_provider=metrics.NoOpMeterProvider(),
        register_sinks=False,
        session_reporters=False,
    )
    with plugin.operation_span("forward_backward", {}) as span:
        assert span.is_recording()
        assert trace.get_current_span() is span


def test_metrics_off_only_for_the_no_op_meter() -> None:
    idle = TinkexMetrics(metrics.NoOpMeter("t"))
    assert idle.off
    assert idle.operation_started("sample") is False
    idle.record_request(RequestEvent("POST", "/api/v1/asample", 0, 0.01, status_code=200))
    real = TinkexMetrics(MeterProvider(shutdown_on_exit=False).get_meter("t"))
    assert not real.off
    assert real.operation_started("sample") is True


_EVENTS: list[Any] = [
    RequestEvent("POST", "/api/v1/asample", 0, 0.01, status_code=200),
    RequestEvent("POST", "/api/v1/asample", 0, 0.01, status_code=429, will_retry=True),
    RequestEvent("POST", "/api/v1/asample", 0, 0.01, status_code=503),
    RequestEvent("POST", "/api/v1/asample", 1, 0.01, error="ConnectError: refused"),
    RequestEvent("GET", "/api/v1/healthz", 0, 0.01),
    FutureEvent("r1", "resolved", 0.1, 1),
    FutureEvent("r1", "failed", 0.1, 1, category="user"),
    FutureEvent("r1", "timed_out", 0.1, 3),
    FutureEvent("r1", "cancelled", 0.1, 1),
    QueueStateEvent("r1", "paused_capacity", None, "short on capacity"),
    RegularizerEvent("l1", "stop", 0.01),
    CircuitBreakerEvent("sampling", "http://tinker.test", "open", "closed", 5, "5 failures"),
    RecoveryEvent("run-1", "detected"),
]


def test_event_notable_matches_the_record_rule() -> None:
    for event in _EVENTS:
        assert event_notable(event) == is_notable(record_from_event(event)), event


def test_sinks_still_get_every_record_when_idle() -> None:
    sink = _Sink()
    plugin = _idle_plugin(sinks=[sink])
    pm = tinkex_types.make_plugin_manager(load_entrypoints=False, plugins=[plugin])
    hooks = tinkex_types.Hooks(pm)
    hooks.on_request(_EVENTS[0])
    hooks.on_future(_EVENTS[5])
    assert [r.kind for r in sink.records] == ["request", "future"]
    assert sink.records[0].data["result"] == "ok"
