"""Metric points produced by the observer hooks and operation spans."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tinkex_telemetry import METRIC_NAMES
from tinkex_types import FutureEvent, QueueStateEvent, RegularizerEvent, RequestEvent

BASE = "https://tinker.example:8443/services/tinker-prod"


def _points(otel: Any, name: str) -> list[Any]:
    return otel.metric_points().get(name, [])


def _sum(otel: Any, name: str, **attrs: Any) -> float:
    return sum(
        p.value
        for p in _points(otel, name)
        if all(p.attributes.get(k) == v for k, v in attrs.items())
    )


def test_request_metrics(otel: Any) -> None:
    hooks = otel.hooks
    hooks.on_request(
        RequestEvent("POST", "/api/v1/forward_backward", 0, 0.25, status_code=503, will_retry=True,
                     bytes_sent=1000, bytes_received=20, base_url=BASE)
    )  # fmt: skip
    hooks.on_request(
        RequestEvent("POST", "/api/v1/forward_backward", 1, 0.05, status_code=200,
                     bytes_sent=1000, bytes_received=40, base_url=BASE)
    )  # fmt: skip
    hooks.on_request(
        RequestEvent("POST", "/api/v1/retrieve_future", 0, 2.0, error="ReadTimeout: timed out",
                     request_type="ForwardBackward", base_url=BASE)
    )  # fmt: skip

    durations = _points(otel, "http.client.request.duration")
    assert sum(p.count for p in durations) == 3
    by_status = {p.attributes.get("http.response.status_code"): p for p in durations}
    assert by_status[503].sum == 0.25
    assert by_status[503].attributes["error.type"] == "503"
    assert by_status[503].attributes["url.template"] == "/api/v1/forward_backward"
    assert by_status[503].attributes["server.address"] == "tinker.example"
    assert by_status[503].attributes["server.port"] == 8443
    assert by_status[200].sum == 0.05
    assert "error.type" not in by_status[200].attributes
    timeout = by_status[None]
    assert timeout.attributes["error.type"] == "ReadTimeout"
    assert timeout.attributes["tinkex.request_type"] == "ForwardBackward"
    # Seconds buckets (advisory boundaries), not the SDK's millisecond defaults.
    assert 0.005 in timeout.explicit_bounds
    assert 600.0 in timeout.explicit_bounds
    assert timeout.sum >= 2.0

    assert _sum(otel, "tinkex.request.retries") == 1
    assert sum(p.sum for p in _points(otel, "http.client.request.body.size")) == 2000
    assert sum(p.sum for p in _points(otel, "http.client.response.body.size")) == 60
    assert by_status[200].attributes["url.scheme"] == "https"

    metrics = otel.metrics()
    assert metrics["http.client.request.duration"].unit == "s"
    assert metrics["http.client.request.body.size"].unit == "By"
    for metric in metrics.values():
        assert metric.description, metric.name


def test_future_queue_and_regularizer_metrics(otel: Any) -> None:
    hooks = otel.hooks
    hooks.on_future(FutureEvent("r1", "resolved", 1.5, 3, request_type="Sample"))
    hooks.on_future(FutureEvent("r2", "resolved", 0.5, 1, request_type="Sample"))
    hooks.on_future(
        FutureEvent(
            "r3", "failed", 0.1, 1, request_type="ForwardBackward", category="user", error="bad"
        )
    )
    hooks.on_future(FutureEvent("r4", "timed_out", 30.0, 50))
    hooks.on_queue_state_change(
        QueueStateEvent("r1", "paused_rate_limit", "active", "rate limited")
    )
    hooks.on_queue_state_change(QueueStateEvent("r1", "active", "paused_rate_limit", ""))
    hooks.on_queue_state_change(QueueStateEvent("r5", "paused_rate_limit", None, "rate limited"))
    hooks.on_regularizer(RegularizerEvent("l2", "start"))
    hooks.on_regularizer(RegularizerEvent("l2", "stop", duration_s=0.002, value=0.5, weight=0.1))
    hooks.on_regularizer(RegularizerEvent("entropy", "stop", duration_s=0.004, value=1.0))

    assert _sum(otel, "tinkex.futures", **{"tinkex.future.outcome": "resolved"}) == 2
    assert (
        _sum(
            otel,
            "tinkex.futures",
            **{"tinkex.future.outcome": "failed", "tinkex.error.category": "user"},
        )
        == 1
    )
    assert _sum(otel, "tinkex.futures", **{"tinkex.future.outcome": "timed_out"}) == 1
    assert sum(p.count for p in _points(otel, "tinkex.future.duration")) == 4
    assert (
        _sum(otel, "tinkex.queue_state.changes", **{"tinkex.queue_state": "paused_rate_limit"}) == 2
    )
    assert _sum(otel, "tinkex.queue_state.changes", **{"tinkex.queue_state": "active"}) == 1
    regs = {
        p.attributes["tinkex.regularizer.name"]: p
        for p in _points(otel, "tinkex.regularizer.duration")
    }
    assert set(regs) == {"l2", "entropy"}, "start events are not durations"
    assert regs["l2"].count == 1
    assert regs["l2"].sum == 0.002


async def test_operation_and_sampling_in_flight(otel: Any) -> None:
    hooks = otel.hooks
    inside: list[float] = []
    release = asyncio.Event()

    async def sample() -> None:
        with hooks.operation_span("sample", {"model_id": "m"}):
            await release.wait()

    tasks = [asyncio.create_task(sample()) for _ in range(3)]
    await asyncio.sleep(0.01)
    inside.append(_sum(otel, "tinkex.sampling.dispatch.in_flight"))
    inside.append(_sum(otel, "tinkex.operation.active", **{"tinkex.operation": "sample"}))
    release.set()
    await asyncio.gather(*tasks)
    with hooks.operation_span("optim_step", {}):
        pass
    assert inside == [3, 3]
    assert _sum(otel, "tinkex.sampling.dispatch.in_flight") == 0
    assert _sum(otel, "tinkex.operation.active") == 0
    durations = {
        p.attributes["tinkex.operation"]: p.count
        for p in _points(otel, "tinkex.operation.duration")
    }
    assert durations == {"sample": 3, "optim_step": 1}

    # Clients that track dispatch themselves can move the gauge directly.
    with otel.plugin.sampling_dispatch():
        assert _sum(otel, "tinkex.sampling.dispatch.in_flight") == 1
    otel.plugin.adjust_sampling_in_flight(2)
    assert _sum(otel, "tinkex.sampling.dispatch.in_flight") == 2


def test_failed_operation_duration_has_error_type(otel: Any) -> None:
    try:
        with otel.hooks.operation_span("save_weights", {}):
            raise ValueError("nope")
    except ValueError:
        pass
    (point,) = _points(otel, "tinkex.operation.duration")
    assert point.attributes["error.type"] == "ValueError"


def test_metric_names_are_documented(otel: Any) -> None:
    # Touch every instrument, then check the exported names are exactly the documented ones.
    otel.hooks.on_request(
        RequestEvent(
            "GET", "/x", 0, 0.1, status_code=500, will_retry=True, bytes_sent=1, bytes_received=1
        )
    )
    otel.hooks.on_future(FutureEvent("r", "resolved", 0.1, 1))
    otel.hooks.on_queue_state_change(QueueStateEvent("r", "active", None, ""))
    otel.hooks.on_regularizer(RegularizerEvent("l1", "stop", duration_s=0.1))
    with otel.hooks.operation_span("sample", {}):
        pass
    with otel.hooks.operation_span(
        "server.sample", {"http.request.method": "POST", "http.route": "/api/v1/asample"}
    ):
        pass
    sink = otel.plugin.create_sink("otel")
    sink.log("custom", {"a": 1})
    from tinkex_types._events import CircuitBreakerEvent, RecoveryEvent

    otel.plugin.on_circuit_breaker(CircuitBreakerEvent("rest", BASE, "open", "closed", 5, "x"))
    otel.plugin.on_recovery(RecoveryEvent("run-1", "detected"))
    assert set(otel.metrics()) == set(METRIC_NAMES)


def test_transport_spans_do_not_double_count_requests(otel: Any, fake_config: Any) -> None:
    # The transport wrapper traces; only on_request feeds request metrics.
    transport = otel.hooks.wrap_transport(
        httpx.MockTransport(lambda r: httpx.Response(200)), fake_config
    )
    with httpx.Client(transport=transport) as client:
        client.get("http://tinker.test/api/v1/x")
    assert "http.client.request.duration" not in otel.metrics()


def test_circuit_breaker_and_recovery_events(otel: Any) -> None:
    """The observers the hooks call: metrics, records for the sinks."""
    from tinkex_telemetry import ConsoleSink, record_from_event
    from tinkex_types._events import CircuitBreakerEvent, RecoveryEvent

    plugin = otel.plugin
    seen: list[Any] = []

    class Capture(ConsoleSink):
        def emit(self, record: Any) -> None:
            seen.append(record)

    plugin.attach(Capture())
    opened = CircuitBreakerEvent("sampling", BASE, "open", "closed", 5, "5 consecutive failures")
    plugin.on_circuit_breaker(opened)
    plugin.on_recovery(RecoveryEvent("run-1", "failed", attempt=3, error="boom"))
    points = _points(otel, "tinkex.circuit_breaker.transitions")
    assert [(p.attributes["tinkex.circuit_breaker.state"], p.value) for p in points] == [
        ("open", 1)
    ]
    assert points[0].attributes["server.address"] == "tinker.example"
    assert _sum(otel, "tinkex.recovery.events", **{"tinkex.recovery.phase": "failed"}) == 1
    assert [(r.name, r.severity) for r in seen] == [
        ("tinkex.circuit_breaker.open", "WARNING"),
        ("tinkex.recovery.failed", "ERROR"),
    ]
    assert record_from_event(opened).data["family"] == "sampling"
