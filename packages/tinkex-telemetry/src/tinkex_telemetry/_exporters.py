"""Span and metric exporters named by the standard ``OTEL_*`` variables.

``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``: a comma list of ``otlp`` (default),
``console`` or ``none``. ``OTEL_EXPORTER_OTLP_PROTOCOL`` (or the per-signal
``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``..._METRICS_PROTOCOL``): ``http/protobuf``
(default) or ``grpc`` (needs ``opentelemetry-exporter-otlp-proto-grpc``). Anything else is
refused with an error naming the variable (the Python SDK has no ``http/json`` exporter).
"""

from __future__ import annotations

import os
from typing import Any

from tinkex_types import TinkexValidationError

__all__ = ["exporter_names", "metric_exporters", "otlp_protocol", "span_exporters"]

_EXPORTERS = ("otlp", "console", "none")
_PROTOCOLS = ("http/protobuf", "grpc")


def exporter_names(signal: str) -> list[str]:
    """The exporters ``OTEL_<SIGNAL>_EXPORTER`` names (``[]`` for ``none``)."""
    var = f"OTEL_{signal.upper()}_EXPORTER"
    raw = os.environ.get(var, "").strip().lower() or "otlp"
    names = [n.strip() for n in raw.split(",") if n.strip()]
    for name in names:
        if name not in _EXPORTERS:
            raise TinkexValidationError(
                var,
                f"unknown exporter {name!r}",
                f"use a comma list of {', '.join(_EXPORTERS)}",
            )
    return [] if "none" in names else names


def otlp_protocol(signal: str) -> str:
    """The OTLP protocol of a signal (per-signal variable, then the general one)."""
    for var in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        raw = os.environ.get(var, "").strip().lower()
        if raw:
            if raw not in _PROTOCOLS:
                raise TinkexValidationError(
                    var,
                    f"unsupported OTLP protocol {raw!r}",
                    f"use {' or '.join(_PROTOCOLS)}",
                )
            return raw
    return "http/protobuf"


def _grpc_missing(signal: str) -> TinkexValidationError:
    return TinkexValidationError(
        f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL",
        "grpc needs the package opentelemetry-exporter-otlp-proto-grpc, which is not installed",
        "pip install opentelemetry-exporter-otlp-proto-grpc, or use http/protobuf",
    )


def span_exporters(timeout: float | None) -> list[Any]:
    """One span exporter per name in ``OTEL_TRACES_EXPORTER``."""
    out: list[Any] = []
    for name in exporter_names("traces"):
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            out.append(ConsoleSpanExporter())
        elif otlp_protocol("traces") == "grpc":
            try:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                    OTLPSpanExporter as GrpcSpanExporter,
                )
            except ImportError:
                raise _grpc_missing("traces") from None
            out.append(GrpcSpanExporter(timeout=timeout))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            out.append(OTLPSpanExporter(timeout=timeout))
    return out


def metric_exporters(timeout: float | None) -> list[Any]:
    """One metric exporter per name in ``OTEL_METRICS_EXPORTER``."""
    out: list[Any] = []
    for name in exporter_names("metrics"):
        if name == "console":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            out.append(ConsoleMetricExporter())
        elif otlp_protocol("metrics") == "grpc":
            try:
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # type: ignore[import-not-found]
                    OTLPMetricExporter as GrpcMetricExporter,
                )
            except ImportError:
                raise _grpc_missing("metrics") from None
            out.append(GrpcMetricExporter(timeout=timeout))
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            out.append(OTLPMetricExporter(timeout=timeout))
    return out
