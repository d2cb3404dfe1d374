"""``TelemetryPlugin``: every hook implementation of tinkex-telemetry, on one object."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import httpx
import structlog
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tinkex_telemetry._attrs import span_attributes
from tinkex_telemetry._metrics import TinkexMetrics
from tinkex_telemetry._otel import OtelSink
from tinkex_telemetry._records import TelemetryRecord, TelemetrySink, record_from_event
from tinkex_telemetry._redact import redact_text, register_secret
from tinkex_telemetry._reporter import BackendReporter, telemetry_enabled_from_env
from tinkex_telemetry._sinks import ConsoleSink
from tinkex_telemetry._transport import TracingTransport
from tinkex_types import (
    FutureEvent,
    QueueStateEvent,
    RegularizerEvent,
    RequestEvent,
    SessionEvent,
    TinkexValidationError,
    hookimpl,
)

__all__ = ["SINK_NAMES", "TelemetryPlugin"]

_log = structlog.get_logger("tinkex.telemetry")

INSTRUMENTATION_NAME = "tinkex"
INSTRUMENTATION_VERSION = "0.1.0"
SINK_NAMES: tuple[str, ...] = ("backend", "console", "otel")
_SECRET_CONFIG_FIELDS = ("api_key", "cf_access_client_secret", "proxy")
#: Server operations that are work inside a request, not the request itself.
_SERVER_INTERNAL = frozenset({"server.queue_wait", "server.engine_step"})


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
    ``session_reporter_options`` are :meth:`BackendReporter.from_config` overrides; hook
    events are not forwarded unless they include ``forward`` (they carry no session id, so
    every session reporter on the same base URL would receive them).

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
        self.session_reporters = session_reporters
        if (
            isinstance(session_close_timeout, bool)
            or not isinstance(session_close_timeout, int | float)
            or not session_close_timeout > 0
        ):
            raise TinkexValidationError(
                "session_close_timeout",
                f"must be a number of seconds > 0, got {session_close_timeout!r}",
                "pass session_close_timeout=5.0",
            )
        self.session_close_timeout = float(session_close_timeout)
        self.session_reporter_options: dict[str, Any] = dict(session_reporter_options or {})
        self._by_session: dict[str, BackendReporter] = {}
        for sink in sinks:
            self.attach(sink)

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
                from tinkex_types import TinkexValidationError

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
            from tinkex_types import PluginError

            raise PluginError(f"unknown telemetry sink {name!r}; built-in: {', '.join(SINK_NAMES)}")
        if attach:
            self.attach(sink)
        return sink

    def session_reporter(self, session_id: str) -> BackendReporter | None:
        """The open reporter of a ServiceClient session, if this plugin built one."""
        with self._lock:
            return self._by_session.get(session_id)

    def _owned(self) -> list[TelemetrySink]:
        """Attached sinks, then session reporters that are not attached."""
        with self._lock:
            owned: list[TelemetrySink] = list(self._sinks)
            owned += [r for r in self._by_session.values() if r not in owned]
        return owned

    def _start_session(self, event: SessionEvent) -> BackendReporter | None:
        if not self.session_reporters:
            return None
        config = event.config
        enabled = getattr(config, "telemetry_enabled", None)
        if not (bool(enabled) if enabled is not None else telemetry_enabled_from_env()):
            return None
        options: dict[str, Any] = {
            "base_url": event.base_url,
            "forward": (),
            "session_start": event.timestamp,
        }
        if event.sdk_version:
            options["sdk_version"] = event.sdk_version
        options.update(self.session_reporter_options)
        try:
            reporter = BackendReporter.from_config(config, session_id=event.session_id, **options)
        except Exception as exc:  # e.g. no transport for the scheme: no telemetry, no crash
            _log.warning(
                "telemetry_session_reporter_failed",
                session_id=event.session_id,
                error=redact_text(str(exc)),
            )
            return None
        with self._lock:
            previous = self._by_session.pop(event.session_id, None)
            self._by_session[event.session_id] = reporter
        if previous is not None:  # the same id announced twice: end the older reporter
            previous.close(timeout=self.session_close_timeout)
        if reporter.settings.forward:
            self.attach(reporter)
        return reporter

    def _end_session(self, event: SessionEvent) -> None:
        with self._lock:
            reporter = self._by_session.pop(event.session_id, None)
        if reporter is not None:
            reporter.close(timeout=self.session_close_timeout)
            self.detach(reporter)

    def _dispatch(self, record_for: Callable[[], TelemetryRecord]) -> None:
        sinks = self.sinks
        if not sinks:
            return
        record = record_for()
        for sink in sinks:
            with contextlib.suppress(Exception):  # one broken sink must not starve the others
                sink.emit(record)

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
        with self._lock:
            self._by_session.clear()

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
    def _parent_context(self, carrier: Mapping[str, str] | None) -> otel_context.Context | None:
        """The remote parent from ``carrier``, unless the current span already continues
        the same trace (then the operation nests under it)."""
        if not carrier or self.propagator is None:
            return None
        lowered = {str(k).lower(): str(v) for k, v in carrier.items()}
        remote = self.propagator.extract(carrier=lowered)
        remote_span = trace.get_current_span(remote).get_span_context()
        if not remote_span.is_valid:
            return None
        current = trace.get_current_span().get_span_context()
        if current.is_valid and current.trace_id == remote_span.trace_id:
            return None
        return remote

    def _is_server_entry(self, operation: str) -> bool:
        if self.server_operations is not None:
            return operation in self.server_operations
        return operation.startswith("server.") and operation not in _SERVER_INTERNAL

    @contextlib.contextmanager
    def operation_span(
        self,
        operation: str,
        attributes: Mapping[str, Any] | None = None,
        carrier: Mapping[str, str] | None = None,
    ) -> Iterator[Span]:
        """Span one operation: a child of the current span, or of the remote span in
        ``carrier``; current for the duration of the block (asyncio-safe via contextvars)."""
        attrs = span_attributes(attributes)
        attrs["tinkex.operation"] = operation
        parent = self._parent_context(carrier)
        kind = SpanKind.SERVER if self._is_server_entry(operation) else SpanKind.INTERNAL
        span = self.tracer.start_span(operation, context=parent, kind=kind, attributes=attrs)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        record_metrics = True
        try:
            self.metrics.operation_started(operation)
        except Exception:
            record_metrics = False
        started = time.perf_counter()
        error_type: str | None = None
        try:
            yield span
        except Exception as exc:
            error_type = type(exc).__qualname__
            _record_exception(span, exc)
            raise
        except BaseException as exc:  # cancellation, interpreter exit: not an error
            span.set_attribute("tinkex.cancelled", True)
            error_type = type(exc).__qualname__
            raise
        finally:
            otel_context.detach(token)
            if record_metrics:
                with contextlib.suppress(Exception):
                    self.metrics.operation_finished(
                        operation, time.perf_counter() - started, error_type
                    )
            span.end()

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
        self._dispatch(lambda: record_from_event(event))

    @hookimpl
    def tinkex_on_future(self, event: FutureEvent) -> None:
        self.metrics.record_future(event)
        span = trace.get_current_span()
        if span.is_recording():
            attrs: dict[str, Any] = {
                "tinkex.request_id": event.request_id,
                "tinkex.future.outcome": event.outcome,
                "tinkex.future.polls": event.polls,
            }
            if event.category:
                attrs["tinkex.error.category"] = event.category
            if event.model_id:
                attrs["tinkex.model_id"] = event.model_id
            span.add_event(f"tinkex.future.{event.outcome}", attrs)
            if event.category:
                span.set_attribute("tinkex.error.category", event.category)
        self._dispatch(lambda: record_from_event(event))

    @hookimpl
    def tinkex_on_queue_state_change(self, event: QueueStateEvent) -> None:
        self.metrics.record_queue_state(event)
        span = trace.get_current_span()
        if span.is_recording():
            attrs: dict[str, Any] = {
                "tinkex.request_id": event.request_id,
                "tinkex.queue_state": event.queue_state,
                "tinkex.queue_state.reason": redact_text(event.reason),
            }
            if event.previous_state:
                attrs["tinkex.queue_state.previous"] = event.previous_state
            span.add_event("tinkex.queue.state_change", attrs)
            span.set_attribute("tinkex.queue_state", event.queue_state)
        self._dispatch(lambda: record_from_event(event))

    @hookimpl
    def tinkex_on_regularizer(self, event: RegularizerEvent) -> None:
        self.metrics.record_regularizer(event)
        self._dispatch(lambda: record_from_event(event))

    @hookimpl
    def tinkex_on_session(self, event: SessionEvent) -> Any | None:
        if event.phase == "start":
            return self._start_session(event)
        self._end_session(event)
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


def _record_exception(span: Span, exc: BaseException) -> None:
    import traceback

    if not span.is_recording():
        return
    message = redact_text(str(exc))
    span.set_attribute("error.type", type(exc).__qualname__)
    category = getattr(exc, "category", None)
    if category is not None:
        span.set_attribute("tinkex.error.category", str(getattr(category, "value", category)))
    status_code = getattr(exc, "status_code", None)
    if isinstance(status_code, int):
        span.set_attribute("http.response.status_code", status_code)
    span.set_status(Status(StatusCode.ERROR, message[:256] or None))
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    span.add_event(
        "exception",
        {
            "exception.type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "exception.message": message[:2048],
            "exception.stacktrace": redact_text(stack)[:16384],
        },
    )
