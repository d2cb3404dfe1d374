"""``TelemetryPlugin``: every hook implementation of tinkex-telemetry, on one object."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import httpx
from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Span, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tinkex_telemetry._forwarding import (
    DEFAULT_FORWARD_PER_MINUTE,
    SessionForwarder,
    event_notable,
)
from tinkex_telemetry._metrics import TinkexMetrics
from tinkex_telemetry._otel import OtelSink
from tinkex_telemetry._records import ObserverEvent, TelemetrySink, record_from_event
from tinkex_telemetry._redact import register_secret
from tinkex_telemetry._reporter import BackendReporter
from tinkex_telemetry._sessions import SessionReporters
from tinkex_telemetry._sinks import ConsoleSink
from tinkex_telemetry._spans import (
    annotate_future,
    annotate_queue_state,
    operation_span,
    remote_parent,
    span_kind,
)
from tinkex_telemetry._transport import TracingTransport, tracing_off
from tinkex_types import (
    FutureEvent,
    PluginError,
    QueueStateEvent,
    RegularizerEvent,
    RequestEvent,
    SessionEvent,
    TinkexValidationError,
    hookimpl,
)
from tinkex_types._events import CircuitBreakerEvent, RecoveryEvent

__all__ = ["SINK_NAMES", "TelemetryPlugin"]

INSTRUMENTATION_NAME = "tinkex"
INSTRUMENTATION_VERSION = "0.1.0"
SINK_NAMES: tuple[str, ...] = ("backend", "console", "otel")
_SECRET_CONFIG_FIELDS = ("api_key", "cf_access_client_secret", "proxy")
#: Operations that never start a trace (no span unless they already have a parent).
UNTRACED_OPERATIONS: frozenset[str] = frozenset(
    {
        "server.telemetry",
        "server.healthz",
        "server.session_heartbeat",
        "session_heartbeat",
        "heartbeat",
    }
)


class TelemetryPlugin:
    """Traces, metrics, propagation and sinks for tinkex, as a pluggy plugin object.

    ``tracer_provider`` / ``meter_provider`` default to the global OpenTelemetry
    providers (resolved lazily, so an application may set them after tinkex started);
    tests pass their own (e.g. with ``InMemorySpanExporter`` / ``InMemoryMetricReader``).
    ``propagator`` defaults to W3C Trace Context; ``propagate=False`` injects nothing.
    ``capture_request_headers`` lists extra request headers to record on attempt spans
    (sensitive headers are refused). ``server_operations`` are the operation names that
    get a SERVER span (others are INTERNAL); by default every ``server.*`` operation except
    ``server.queue_wait`` and ``server.engine_step``. ``sinks`` are attached at once;
    ``register_sinks=False`` keeps this instance from contributing the ``backend``,
    ``console`` and ``otel`` sink factories (sink names must be unique per plugin manager).

    Session reporters (spec §7.1): on ``tinkex_on_session`` ``start`` (a ServiceClient
    created its session) the plugin builds a :class:`BackendReporter` for that session
    (``SESSION_START`` queued at once) and returns it, so ``ServiceClient.get_telemetry()``
    hands it out; on ``end`` it sends ``SESSION_END`` and closes it, waiting about
    ``session_close_timeout`` seconds at most. Nothing is built when the client's
    ``telemetry_enabled`` (``TINKER_TELEMETRY``) is false or ``session_reporters=False``.
    ``session_reporter_options`` are :meth:`BackendReporter.from_config` overrides. Like
    the official client, a session reporter forwards the notable observer events (failed
    HTTP attempts, queue-state changes, failed and timed-out futures; at most
    ``session_forward_per_minute`` of one name per minute) to the session of their base
    URL (:mod:`tinkex_telemetry._forwarding`); ``session_forward=False`` forwards none, and
    a ``forward`` option makes the reporter an attached sink that gets every record of
    those kinds.

    The module ``tinkex_telemetry._plugin`` (entry point ``telemetry``) delegates to one
    default instance using the global providers.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        propagator: TextMapPropagator | None = None,
        propagate: bool = True,
        capture_request_headers: Iterable[str] = (),
        server_operations: Iterable[str] | None = None,
        sinks: Iterable[TelemetrySink] = (),
        register_sinks: bool = True,
        session_reporters: bool = True,
        session_close_timeout: float = 5.0,
        session_reporter_options: Mapping[str, Any] | None = None,
        session_forward: bool = True,
        session_forward_per_minute: int = DEFAULT_FORWARD_PER_MINUTE,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self.propagator: TextMapPropagator | None = (
            (propagator or TraceContextTextMapPropagator()) if propagate else None
        )
        self.capture_request_headers = tuple(capture_request_headers)
        self.server_operations = (
            frozenset(server_operations) if server_operations is not None else None
        )
        self.register_sinks = register_sinks
        self._lock = threading.Lock()
        self._tracer: Tracer | None = None
        self._metrics: TinkexMetrics | None = None
        self._sinks: list[TelemetrySink] = []
        self._sessions = SessionReporters(
            enabled=session_reporters,
            close_timeout=session_close_timeout,
            options=session_reporter_options,
        )
        self.session_forward = session_forward
        self.forwarder = SessionForwarder(per_minute=session_forward_per_minute)
        for sink in sinks:
            self.attach(sink)

    @property
    def session_reporter_options(self) -> dict[str, Any]:
        """The :meth:`BackendReporter.from_config` overrides of new session reporters
        (a live dict: updating it affects the next session)."""
        return self._sessions.options

    # -- OpenTelemetry objects ---------------------------------------------------------
    @property
    def tracer(self) -> Tracer:
        if self._tracer is None:
            with self._lock:
                if self._tracer is None:
                    self._tracer = trace.get_tracer(
                        INSTRUMENTATION_NAME,
                        INSTRUMENTATION_VERSION,
                        tracer_provider=self._tracer_provider,
                    )
        return self._tracer

    @property
    def metrics(self) -> TinkexMetrics:
        if self._metrics is None:
            with self._lock:
                if self._metrics is None:
                    meter = metrics.get_meter(
                        INSTRUMENTATION_NAME,
                        INSTRUMENTATION_VERSION,
                        meter_provider=self._meter_provider,
                    )
                    self._metrics = TinkexMetrics(meter)
        return self._metrics

    # -- sinks -------------------------------------------------------------------------
    @property
    def sinks(self) -> tuple[TelemetrySink, ...]:
        """The sinks that currently receive the hook events."""
        with self._lock:
            return tuple(self._sinks)

    def attach(self, sink: TelemetrySink) -> TelemetrySink:
        """Send every hook event (and nothing else) to ``sink`` from now on."""
        with self._lock:
            if sink not in self._sinks:
                self._sinks.append(sink)
        add_callback = getattr(sink, "add_close_callback", None)
        if callable(add_callback):
            add_callback(lambda: self.detach(sink))
        return sink

    def detach(self, sink: TelemetrySink) -> None:
        with self._lock:
            if sink in self._sinks:
                self._sinks.remove(sink)

    def create_sink(self, name: str, **options: Any) -> TelemetrySink:
        """Build a built-in sink (``backend``, ``console`` or ``otel``) and attach it.

        ``backend`` takes ``session_id`` (required), ``config`` (a client configuration)
        and any :class:`BackendReporter` option; ``console`` takes ``stream``,
        ``min_severity``, ``kinds``; ``otel`` takes ``setup``. ``attach=False`` returns
        the sink without attaching it.
        """
        attach = bool(options.pop("attach", True))
        sink: TelemetrySink
        if name == "backend":
            config = options.pop("config", None)
            session_id = options.pop("session_id", None)
            if not isinstance(session_id, str):
                raise TinkexValidationError(
                    "session_id",
                    "the backend sink needs the session id",
                    "call factory(session_id=..., config=...)",
                )
            sink = BackendReporter.from_config(config, session_id=session_id, **options)
        elif name == "console":
            sink = ConsoleSink(**options)
        elif name == "otel":
            options.setdefault("tracer_provider", self._tracer_provider)
            options.setdefault("meter_provider", self._meter_provider)
            if options.get("meter_provider") is self._meter_provider:
                options.setdefault("events_counter", self.metrics.telemetry_events)
            sink = OtelSink(**options)
        else:
            raise PluginError(f"unknown telemetry sink {name!r}; built-in: {', '.join(SINK_NAMES)}")
        if attach:
            self.attach(sink)
        return sink

    def session_reporter(self, session_id: str) -> BackendReporter | None:
        """The open reporter of a ServiceClient session, if this plugin built one."""
        return self._sessions.get(session_id)

    def _owned(self) -> list[TelemetrySink]:
        """Attached sinks, then session reporters that are not attached."""
        owned: list[TelemetrySink] = list(self.sinks)
        owned += [r for r in self._sessions.open_reporters() if r not in owned]
        return owned

    def _dispatch(self, event: ObserverEvent, base_url: str | None = None) -> None:
        """Emit the event's record to every attached sink, and the notable ones to the
        session reporter of ``base_url`` (see :mod:`tinkex_telemetry._forwarding`). With no
        sink, the record is built only for an event the reporter will forward."""
        sinks = self.sinks
        if not sinks and not (self.session_forward and event_notable(event)):
            return
        reporter = self._sessions.route(base_url) if self.session_forward else None
        if not sinks and reporter is None:
            return
        record = record_from_event(event)
        for sink in sinks:
            with contextlib.suppress(Exception):  # one broken sink must not starve the others
                sink.emit(record)
        if reporter is not None and reporter not in sinks:
            self.forwarder.forward(record, reporter)

    def flush(self, timeout: float | None = None) -> bool:
        """Flush every attached sink; ``True`` if all delivered in time."""
        ok = True
        for sink in self._owned():
            try:
                ok = bool(sink.flush(timeout)) and ok
            except Exception:
                ok = False
        return ok

    def close(self, timeout: float | None = None) -> None:
        """Close (and detach) every attached sink and every open session reporter."""
        for sink in self._owned():
            with contextlib.suppress(Exception):
                sink.close(timeout)
            self.detach(sink)
        self._sessions.forget_all()

    # -- sampling dispatch -------------------------------------------------------------
    def adjust_sampling_in_flight(self, delta: int, operation: str = "sample") -> None:
        """Move the ``tinkex.sampling.dispatch.in_flight`` gauge by ``delta``."""
        self.metrics.sampling_in_flight.add(delta, {"tinkex.operation": operation})

    @contextlib.contextmanager
    def sampling_dispatch(self, operation: str = "sample") -> Iterator[None]:
        """Count one sampling request as in flight for the duration of the block."""
        self.adjust_sampling_in_flight(1, operation)
        try:
            yield
        finally:
            self.adjust_sampling_in_flight(-1, operation)

    # -- spans -------------------------------------------------------------------------
    def operation_span(
        self,
        operation: str,
        attributes: Mapping[str, Any] | None = None,
        carrier: Mapping[str, str] | None = None,
    ) -> contextlib.AbstractContextManager[Span]:
        """Span one operation: a child of the current span, or of the remote span in
        ``carrier``; current for the duration of the block (asyncio-safe via contextvars).

        Telemetry, health and heart-beat operations (:data:`UNTRACED_OPERATIONS`) with no
        parent get no span: they never start traces of their own."""
        parent = remote_parent(self.propagator, carrier)
        if (
            (operation in UNTRACED_OPERATIONS or self._idle())
            and parent is None
            and not trace.get_current_span().get_span_context().is_valid
        ):
            return contextlib.nullcontext(trace.INVALID_SPAN)
        return operation_span(
            self.tracer,
            self.metrics,
            operation,
            attributes,
            parent=parent,
            kind=span_kind(operation, self.server_operations),
        )

    def _idle(self) -> bool:
        """No tracer provider and no meter provider: an operation span would record
        nothing (with no parent, the span is the invalid one either way)."""
        return tracing_off(self.tracer) and self.metrics.off

    # -- hook implementations ----------------------------------------------------------
    @hookimpl
    def tinkex_operation_span(
        self,
        operation: str,
        attributes: Mapping[str, Any],
        carrier: Mapping[str, str] | None,
    ) -> contextlib.AbstractContextManager[Any] | None:
        return self.operation_span(operation, attributes, carrier)

    @hookimpl
    def tinkex_inject_headers(self, headers: dict[str, str]) -> None:
        if self.propagator is None:
            return
        present = {k.lower() for k in headers}
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier)
        for key, value in carrier.items():
            if key.lower() not in present:
                headers[key] = value

    @hookimpl
    def tinkex_wrap_transport(self, transport: Any, config: Any) -> Any | None:
        for field in _SECRET_CONFIG_FIELDS:
            register_secret(getattr(config, field, None))
        if isinstance(transport, httpx.AsyncBaseTransport | httpx.BaseTransport):
            return TracingTransport(
                transport,
                tracer=self.tracer,
                propagator=self.propagator,
                capture_request_headers=self.capture_request_headers,
            )
        return None

    @hookimpl
    def tinkex_on_request(self, event: RequestEvent) -> None:
        self.metrics.record_request(event)
        self._dispatch(event, event.base_url)

    @hookimpl
    def tinkex_on_future(self, event: FutureEvent) -> None:
        self.metrics.record_future(event)
        annotate_future(event)
        self._dispatch(event)

    @hookimpl
    def tinkex_on_queue_state_change(self, event: QueueStateEvent) -> None:
        self.metrics.record_queue_state(event)
        annotate_queue_state(event)
        self._dispatch(event, event.base_url)

    @hookimpl
    def tinkex_on_circuit_breaker(self, event: CircuitBreakerEvent) -> None:
        self.on_circuit_breaker(event)

    @hookimpl
    def tinkex_on_recovery(self, event: RecoveryEvent) -> None:
        self.on_recovery(event)

    def on_circuit_breaker(self, event: CircuitBreakerEvent) -> None:
        """A circuit breaker changed state: metric, span event, sinks, session reporter."""
        self.metrics.record_breaker(event)
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                f"tinkex.circuit_breaker.{event.state}",
                {"tinkex.circuit_breaker.family": event.family, "tinkex.reason": event.reason},
            )
        self._dispatch(event, event.base_url)

    def on_recovery(self, event: RecoveryEvent) -> None:
        """A recovery step: metric, sinks, session reporter."""
        self.metrics.record_recovery(event)
        self._dispatch(event)

    @hookimpl
    def tinkex_on_regularizer(self, event: RegularizerEvent) -> None:
        self.metrics.record_regularizer(event)
        self._dispatch(event)

    @hookimpl
    def tinkex_on_session(self, event: SessionEvent) -> Any | None:
        if event.phase == "start":
            reporter = self._sessions.start(event)
            if reporter is not None and reporter.settings.forward:
                self.attach(reporter)
            return reporter
        ended = self._sessions.end(event)
        if ended is not None:
            self.detach(ended)
        return None

    @hookimpl
    def tinkex_register_telemetry_sinks(self, register: Callable[[str, Any], None]) -> None:
        if not self.register_sinks:
            return
        for name in SINK_NAMES:
            register(name, _SinkFactory(self, name))


class _SinkFactory:
    """``factory(**options)`` → a built-in sink attached to its plugin."""

    def __init__(self, plugin: TelemetryPlugin, name: str) -> None:
        self.plugin = plugin
        self.name = name

    def __call__(self, **options: Any) -> TelemetrySink:
        return self.plugin.create_sink(self.name, **options)

    def __repr__(self) -> str:
        return f"<tinkex-telemetry sink factory {self.name!r}>"
