"""The OpenTelemetry instruments of tinkex (meter ``tinkex``) and how hook events feed them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.metrics import Histogram, Meter, NoOpMeter

from tinkex_telemetry._attrs import route_of
from tinkex_types import FutureEvent, QueueStateEvent, RegularizerEvent, RequestEvent
from tinkex_types._events import CircuitBreakerEvent, RecoveryEvent

__all__ = ["METRIC_NAMES", "SAMPLING_OPERATIONS", "TinkexMetrics"]

#: Bucket boundaries (seconds) for the latency histograms: 5 ms .. 10 min.
SECONDS_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)

#: Operations (names given to ``operation_span``) that count as sampling dispatch.
SAMPLING_OPERATIONS: frozenset[str] = frozenset(
    {"sample", "sample_async", "compute_logprobs", "compute_logprobs_async", "stream_sample"}
)

METRIC_NAMES: tuple[str, ...] = (
    "http.client.request.duration",
    "http.client.request.body.size",
    "http.client.response.body.size",
    "http.server.request.duration",
    "tinkex.request.retries",
    "tinkex.futures",
    "tinkex.future.duration",
    "tinkex.queue_state.changes",
    "tinkex.sampling.dispatch.in_flight",
    "tinkex.operation.active",
    "tinkex.operation.duration",
    "tinkex.regularizer.duration",
    "tinkex.telemetry.events",
    "tinkex.circuit_breaker.transitions",
    "tinkex.recovery.events",
)


#: Attributes of ``http.server.request.duration`` (low cardinality: the route template,
#: never the path).
_SERVER_METRIC_KEYS = (
    "http.request.method",
    "http.route",
    "http.response.status_code",
    "url.scheme",
    "network.protocol.version",
    "error.type",
)


def _server_attrs(base_url: str | None) -> dict[str, Any]:
    if not base_url:
        return {}
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError:
        return {}
    out: dict[str, Any] = {"url.scheme": parts.scheme}
    # In-process transports (local://) have no host: the scheme names the server, and the
    # base URL's path (a data directory) is never used.
    out["server.address"] = parts.hostname or parts.scheme
    if port is None and parts.scheme in ("http", "https"):
        port = 443 if parts.scheme == "https" else 80
    if port is not None:
        out["server.port"] = port
    return out


def _server_request_histogram(meter: Meter) -> Histogram:
    """OpenTelemetry HTTP server semantic conventions (fed by the server's request spans)."""
    return meter.create_histogram(
        "http.server.request.duration",
        unit="s",
        description="Duration of HTTP server requests.",
        explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
    )


class TinkexMetrics:
    """Every instrument tinkex records, created once per meter."""

    def __init__(self, meter: Meter) -> None:
        self._meter = meter
        # OpenTelemetry HTTP client semantic conventions (one attempt each; a retry is a
        # separate attempt).
        self.request_duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.retries = meter.create_counter(
            "tinkex.request.retries",
            unit="{retry}",
            description="HTTP attempts that failed and were retried.",
        )
        self.bytes_sent = meter.create_histogram(
            "http.client.request.body.size",
            unit="By",
            description="Size of HTTP client request bodies.",
        )
        self.bytes_received = meter.create_histogram(
            "http.client.response.body.size",
            unit="By",
            description="Size of HTTP client response bodies.",
        )
        self.futures = meter.create_counter(
            "tinkex.futures",
            unit="{future}",
            description="Futures that reached a final state, by outcome (resolved, failed, timed_out, cancelled).",
        )
        self.future_duration = meter.create_histogram(
            "tinkex.future.duration",
            unit="s",
            description="Time from submitting a request to its future's final state.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.queue_state_changes = meter.create_counter(
            "tinkex.queue_state.changes",
            unit="{change}",
            description="Queue-state changes reported for futures, by new state.",
        )
        self.sampling_in_flight = meter.create_up_down_counter(
            "tinkex.sampling.dispatch.in_flight",
            unit="{request}",
            description="Sampling requests dispatched and not yet finished.",
        )
        self.server_request_duration = _server_request_histogram(meter)
        self.operations_active = meter.create_up_down_counter(
            "tinkex.operation.active",
            unit="{operation}",
            description="SDK or server operations currently running, by operation.",
        )
        self.operation_duration = meter.create_histogram(
            "tinkex.operation.duration",
            unit="s",
            description="Duration of one SDK or server operation (forward_backward, sample, ...).",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.regularizer_duration = meter.create_histogram(
            "tinkex.regularizer.duration",
            unit="s",
            description="Time one regularizer took to compute inside a custom-loss pipeline.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.telemetry_events = meter.create_counter(
            "tinkex.telemetry.events",
            unit="{event}",
            description="Generic telemetry events logged through the otel sink, by name and severity.",
        )

        self.breaker_transitions = meter.create_counter(
            "tinkex.circuit_breaker.transitions",
            unit="{transition}",
            description="Circuit-breaker state changes, by endpoint family and new state.",
        )
        self.recovery_events = meter.create_counter(
            "tinkex.recovery.events",
            unit="{event}",
            description="Steps of training-run recovery, by phase.",
        )

    @property
    def off(self) -> bool:
        """Whether nothing is recorded: the meter is the API's no-op one, or its proxy while
        no meter provider is installed (recording methods then return at once instead of
        building attributes for instruments that drop them)."""
        meter = self._meter
        if isinstance(meter, NoOpMeter):
            return True
        return getattr(meter, "_real_meter", meter) is None  # the API's proxy, still unset

    # -- fed by the observer hooks ----------------------------------------------------
    def record_request(self, event: RequestEvent) -> None:
        if self.off:
            return
        attrs: dict[str, Any] = {
            "http.request.method": event.method.upper(),
            "url.template": route_of(event.path),
            **_server_attrs(event.base_url),
        }
        if event.status_code is not None:
            attrs["http.response.status_code"] = event.status_code
        if event.error is not None:
            attrs["error.type"] = event.error.split(":", 1)[0][:64]
        elif event.status_code is not None and event.status_code >= 400:
            attrs["error.type"] = str(event.status_code)
        if event.request_type:
            attrs["tinkex.request_type"] = event.request_type
        self.request_duration.record(max(event.duration_s, 0.0), attrs)
        if event.will_retry:
            self.retries.add(1, attrs)
        if event.bytes_sent:
            self.bytes_sent.record(event.bytes_sent, attrs)
        if event.bytes_received:
            self.bytes_received.record(event.bytes_received, attrs)

    def record_future(self, event: FutureEvent) -> None:
        if self.off:
            return
        attrs: dict[str, Any] = {"tinkex.future.outcome": event.outcome}
        if event.request_type:
            attrs["tinkex.request_type"] = event.request_type
        if event.category:
            attrs["tinkex.error.category"] = event.category
        self.futures.add(1, attrs)
        self.future_duration.record(max(event.duration_s, 0.0), attrs)

    def record_queue_state(self, event: QueueStateEvent) -> None:
        attrs: dict[str, Any] = {"tinkex.queue_state": event.queue_state}
        if event.previous_state:
            attrs["tinkex.queue_state.previous"] = event.previous_state
        self.queue_state_changes.add(1, attrs)

    def record_breaker(self, event: CircuitBreakerEvent) -> None:
        self.breaker_transitions.add(
            1,
            {
                "tinkex.circuit_breaker.family": event.family,
                "tinkex.circuit_breaker.state": event.state,
                **_server_attrs(event.base_url),
            },
        )

    def record_recovery(self, event: RecoveryEvent) -> None:
        self.recovery_events.add(1, {"tinkex.recovery.phase": event.phase})

    def record_regularizer(self, event: RegularizerEvent) -> None:
        if event.phase != "stop" or event.duration_s is None:
            return
        self.regularizer_duration.record(
            max(event.duration_s, 0.0), {"tinkex.regularizer.name": event.name}
        )

    # -- fed by operation spans -------------------------------------------------------
    def record_server_request(self, duration_s: float, attributes: Mapping[str, Any]) -> None:
        """``http.server.request.duration`` of one request, with the attributes the HTTP
        server conventions put on it (method, route, status, scheme, protocol, error)."""
        attrs = {k: attributes[k] for k in _SERVER_METRIC_KEYS if k in attributes}
        self.server_request_duration.record(max(duration_s, 0.0), attrs)

    def operation_started(self, operation: str) -> bool:
        """Count the operation as active; ``False`` when nothing is recorded (:attr:`off`):
        then its :meth:`operation_finished` is not due either."""
        if self.off:
            return False
        self.operations_active.add(1, {"tinkex.operation": operation})
        if operation in SAMPLING_OPERATIONS:
            self.sampling_in_flight.add(1, {"tinkex.operation": operation})
        return True

    def operation_finished(self, operation: str, duration_s: float, error_type: str | None) -> None:
        self.operations_active.add(-1, {"tinkex.operation": operation})
        if operation in SAMPLING_OPERATIONS:
            self.sampling_in_flight.add(-1, {"tinkex.operation": operation})
        attrs: dict[str, Any] = {"tinkex.operation": operation}
        if error_type:
            attrs["error.type"] = error_type
        self.operation_duration.record(max(duration_s, 0.0), attrs)
