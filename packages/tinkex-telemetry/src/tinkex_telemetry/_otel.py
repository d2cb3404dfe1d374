"""OpenTelemetry provider setup from ``OTEL_*`` variables, and the ``otel`` sink."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from opentelemetry.util.types import AttributeValue

from tinkex_telemetry._attrs import to_attribute
from tinkex_telemetry._exporters import exporter_names, metric_exporters, span_exporters
from tinkex_telemetry._records import TelemetryRecord
from tinkex_telemetry._sinks import BaseSink

__all__ = ["OtelSetup", "OtelSink", "otel_configured", "setup_otel_from_env"]

_UNSET_PROVIDERS = {
    "ProxyTracerProvider",
    "NoOpTracerProvider",
    "_ProxyMeterProvider",
    "NoOpMeterProvider",
    "_DefaultMeterProvider",
}
_TRUTHY = {"1", "true", "yes", "on"}


def _is_unset(provider: object) -> bool:
    return type(provider).__name__ in _UNSET_PROVIDERS


def otel_configured() -> tuple[bool, bool]:
    """Whether the application has set a global (tracer, meter) provider."""
    return (
        not _is_unset(trace.get_tracer_provider()),
        not _is_unset(metrics.get_meter_provider()),
    )


@dataclass
class OtelSetup:
    """Providers installed by :func:`setup_otel_from_env` (``None``: not installed)."""

    tracer_provider: Any = None
    meter_provider: Any = None

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Export what is buffered now; ``False`` if an export failed or timed out."""
        ok = True
        millis = int(timeout * 1000)
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                ok = bool(provider.force_flush(millis)) and ok
        return ok

    def shutdown(self) -> None:
        """Flush and stop the installed providers (their exporters too)."""
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                provider.shutdown()


def _env_float(name: str) -> float | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return float(raw)
    except ValueError:
        from tinkex_types import TinkexValidationError

        raise TinkexValidationError(
            name, f"must be a number, got {raw!r}", f"unset {name} or give a number"
        ) from None


def setup_otel_from_env(
    *,
    set_global: bool = True,
    force: bool = False,
    service_name: str | None = None,
    traces: bool | None = None,
    metrics_enabled: bool | None = None,
    export_timeout: float | None = None,
    schedule_delay: float | None = None,
    metric_export_interval: float | None = None,
    resource_attributes: Mapping[str, str] | None = None,
) -> OtelSetup:
    """Install span and metric exporters configured by ``OTEL_*`` variables.

    (Most processes need not call it: :func:`tinkex_telemetry.setup_from_env` runs it once
    per process, and tinkex runs that by itself when ``OTEL_*`` variables ask for export.)

    Opt-in: call it once at start-up when the application has no OpenTelemetry setup of
    its own. With ``set_global`` (default) the providers become the global ones, unless
    the application already set some (then nothing is installed for that signal, unless
    ``force``). With ``set_global=False`` the providers are only returned (pass them to
    :class:`~tinkex_telemetry.TelemetryPlugin`).

    Read by the exporters and the SDK: ``OTEL_EXPORTER_OTLP_ENDPOINT``,
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``,
    ``OTEL_EXPORTER_OTLP_HEADERS`` (and the per-signal ``..._HEADERS``),
    ``OTEL_EXPORTER_OTLP_TIMEOUT`` (seconds), ``OTEL_SERVICE_NAME``,
    ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf`` or
    ``grpc``). ``OTEL_SDK_DISABLED=true`` installs nothing; ``OTEL_TRACES_EXPORTER`` /
    ``OTEL_METRICS_EXPORTER`` name the exporters (``otlp``, ``console``, ``none`` skips the
    signal).

    Spans go through a ``BatchSpanProcessor`` (export in a background thread; a receiver
    that is down or slow never blocks the application), metrics through a
    ``PeriodicExportingMetricReader``. ``export_timeout`` (seconds) bounds every export.
    """
    setup = OtelSetup()
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUTHY:
        return setup
    traces, metrics_enabled = _wanted_signals(traces, metrics_enabled, set_global, force)
    resource = _resource(service_name, resource_attributes)
    timeout = (
        export_timeout if export_timeout is not None else _env_float("OTEL_EXPORTER_OTLP_TIMEOUT")
    )
    if traces:
        setup.tracer_provider = _tracer_provider(resource, timeout, schedule_delay, set_global)
        if set_global:
            trace.set_tracer_provider(setup.tracer_provider)
    if metrics_enabled:
        setup.meter_provider = _meter_provider(
            resource, timeout, metric_export_interval, set_global
        )
        if set_global:
            metrics.set_meter_provider(setup.meter_provider)
    return setup


def _wanted_signals(
    traces: bool | None, metrics_enabled: bool | None, set_global: bool, force: bool
) -> tuple[bool, bool]:
    """Which of (traces, metrics) to install: asked for (or not ``OTEL_*_EXPORTER=none``),
    and, when installing globally without ``force``, not set by the application already."""
    if traces is None:
        traces = bool(exporter_names("traces"))
    if metrics_enabled is None:
        metrics_enabled = bool(exporter_names("metrics"))
    if set_global and not force:
        has_tracer, has_meter = otel_configured()
        traces = traces and not has_tracer
        metrics_enabled = metrics_enabled and not has_meter
    return traces, metrics_enabled


def _resource(service_name: str | None, resource_attributes: Mapping[str, str] | None) -> Any:
    """The SDK resource: ``service.name`` is ``service_name``, else ``OTEL_SERVICE_NAME``,
    else ``tinkex``; ``OTEL_RESOURCE_ATTRIBUTES`` is merged in by the SDK."""
    from opentelemetry.sdk.resources import Resource

    attrs: dict[str, str] = dict(resource_attributes or {})
    if service_name:
        attrs["service.name"] = service_name
    elif "OTEL_SERVICE_NAME" not in os.environ and "service.name" not in attrs:
        attrs.setdefault("service.name", "tinkex")
    return Resource.create(attrs)


def _tracer_provider(
    resource: Any, timeout: float | None, schedule_delay: float | None, set_global: bool
) -> Any:
    """An SDK tracer provider exporting through a ``BatchSpanProcessor`` per exporter named
    by ``OTEL_TRACES_EXPORTER`` (``otlp`` by default, ``console``)."""
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = SdkTracerProvider(resource=resource, shutdown_on_exit=set_global)
    for exporter in span_exporters(timeout):
        provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                schedule_delay_millis=None if schedule_delay is None else schedule_delay * 1000,
                export_timeout_millis=None if timeout is None else timeout * 1000,
            )
        )
    return provider


def _meter_provider(
    resource: Any, timeout: float | None, export_interval: float | None, set_global: bool
) -> Any:
    """An SDK meter provider with a periodic reader per exporter named by
    ``OTEL_METRICS_EXPORTER`` (``otlp`` by default, ``console``)."""
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    readers = [
        PeriodicExportingMetricReader(
            exporter,
            export_interval_millis=None if export_interval is None else export_interval * 1000,
            export_timeout_millis=None if timeout is None else timeout * 1000,
        )
        for exporter in metric_exporters(timeout)
    ]
    return SdkMeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=set_global)


def _flatten(
    data: Mapping[str, Any], prefix: str = "", depth: int = 0
) -> dict[str, AttributeValue]:
    out: dict[str, AttributeValue] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and depth < 4:
            out.update(_flatten(value, f"{name}.", depth + 1))
            continue
        converted = to_attribute(value)
        if converted is not None:
            out[name] = converted
    return out


class OtelSink(BaseSink):
    """The ``otel`` sink: generic events and exceptions into OpenTelemetry.

    Hook events (HTTP attempts, futures, queue states, regularizers) already become spans
    and metrics through :class:`~tinkex_telemetry.TelemetryPlugin`; this sink adds what is
    logged explicitly (``sink.log(...)``, ``sink.log_exception(...)``): an event on the
    current span and a count in ``tinkex.telemetry.events``. It uses the application's
    providers (or the given ones); ``setup=True`` (or ``TINKEX_OTEL_SETUP=1``) first calls
    :func:`setup_otel_from_env` when the application has none.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        setup: bool | None = None,
        events_counter: Any = None,
    ) -> None:
        super().__init__()
        if setup is None:
            setup = os.environ.get("TINKEX_OTEL_SETUP", "").strip().lower() in _TRUTHY
        self.setup: OtelSetup | None = None
        if setup and tracer_provider is None and meter_provider is None:
            self.setup = setup_otel_from_env()
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        if events_counter is None:
            from tinkex_telemetry._metrics import TinkexMetrics

            meter = metrics.get_meter("tinkex", meter_provider=meter_provider)
            events_counter = TinkexMetrics(meter).telemetry_events
        self._events = events_counter

    def emit(self, record: TelemetryRecord) -> None:
        if self.closed or record.kind not in ("log", "exception"):
            return
        try:
            attrs = _flatten(record.data)
            attrs["tinkex.event.severity"] = record.severity
            span = trace.get_current_span()
            if span.is_recording():
                span.add_event(record.name, attrs, timestamp=int(record.timestamp * 1e9))
            self._events.add(
                1, {"tinkex.event.name": record.name, "tinkex.event.severity": record.severity}
            )
        except Exception:  # a sink must never break its caller
            pass

    def flush(self, timeout: float | None = None) -> bool:
        millis = int((5.0 if timeout is None else timeout) * 1000)
        ok = True
        providers: list[Any] = [
            self._tracer_provider or trace.get_tracer_provider(),
            self._meter_provider or metrics.get_meter_provider(),
        ]
        for provider in providers:
            flush = getattr(provider, "force_flush", None)
            if callable(flush):
                ok = bool(flush(millis)) and ok
        return ok

    def close(self, timeout: float | None = None) -> None:
        if self.closed:
            return
        self.flush(timeout)
        super().close(timeout)
