"""Spans of tinkex operations: parent and kind, the span itself, and what goes on it.

:class:`~tinkex_telemetry.TelemetryPlugin` calls these with its tracer, metrics and
propagator; nothing here keeps state.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from tinkex_telemetry._attrs import span_attributes
from tinkex_telemetry._metrics import TinkexMetrics
from tinkex_telemetry._redact import redact_text
from tinkex_types import FutureEvent, QueueStateEvent

__all__ = [
    "LATE_ATTRIBUTES",
    "annotate_future",
    "annotate_queue_state",
    "operation_span",
    "record_exception",
    "remote_parent",
    "server_span_name",
    "span_kind",
]

#: Server operations that are work inside a request, not the request itself.
_SERVER_INTERNAL = frozenset({"server.queue_wait", "server.engine_step"})
#: Attribute key of a mapping the caller fills while the operation runs (the server's
#: ``http.response.status_code``, ``error.type``); set on the span when the block ends.
LATE_ATTRIBUTES = "tinkex.late_attributes"


def server_span_name(operation: str, attributes: Mapping[str, Any]) -> str:
    """``{method} {route}`` (HTTP semantic conventions) for a server span with
    ``http.request.method`` and ``http.route``; just ``{method}`` without a route; else
    the operation name."""
    method = attributes.get("http.request.method")
    if not isinstance(method, str) or not method:
        return operation
    route = attributes.get("http.route")
    if method == "_OTHER":
        method = "HTTP"
    return f"{method} {route}" if isinstance(route, str) and route else method


def remote_parent(
    propagator: TextMapPropagator | None, carrier: Mapping[str, str] | None
) -> otel_context.Context | None:
    """The remote parent from ``carrier``, unless the current span already continues
    the same trace (then the operation nests under it)."""
    if not carrier or propagator is None:
        return None
    lowered = {str(k).lower(): str(v) for k, v in carrier.items()}
    remote = propagator.extract(carrier=lowered)
    remote_span = trace.get_current_span(remote).get_span_context()
    if not remote_span.is_valid:
        return None
    current = trace.get_current_span().get_span_context()
    if current.is_valid and current.trace_id == remote_span.trace_id:
        return None
    return remote


def span_kind(operation: str, server_operations: frozenset[str] | None) -> SpanKind:
    """SERVER for an operation that is a server's entry point, else INTERNAL.

    ``server_operations`` lists them; ``None`` means every ``server.*`` operation except
    ``server.queue_wait`` and ``server.engine_step``.
    """
    if server_operations is not None:
        entry = operation in server_operations
    else:
        entry = operation.startswith("server.") and operation not in _SERVER_INTERNAL
    return SpanKind.SERVER if entry else SpanKind.INTERNAL


@contextlib.contextmanager
def operation_span(
    tracer: Tracer,
    metrics: TinkexMetrics,
    operation: str,
    attributes: Mapping[str, Any] | None,
    *,
    parent: otel_context.Context | None,
    kind: SpanKind,
) -> Iterator[Span]:
    """A span of ``operation`` under ``parent`` (or the current span), current for the block
    (asyncio-safe via contextvars), with the operation metrics around it.

    An exception marks the span as failed; a ``BaseException`` that is not an ``Exception``
    (cancellation, exit) marks it ``tinkex.cancelled``.
    """
    given = dict(attributes or {})
    late = given.pop(LATE_ATTRIBUTES, None)
    attrs = span_attributes(given)
    attrs["tinkex.operation"] = operation
    name = server_span_name(operation, attrs) if kind == SpanKind.SERVER else operation
    span = tracer.start_span(name, context=parent, kind=kind, attributes=attrs)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    try:
        record_metrics = metrics.operation_started(operation)
    except Exception:
        record_metrics = False
    started = time.perf_counter()
    error_type: str | None = None
    try:
        yield span
    except Exception as exc:
        error_type = type(exc).__qualname__
        record_exception(span, exc)
        raise
    except BaseException as exc:  # cancellation, interpreter exit: not an error
        span.set_attribute("tinkex.cancelled", True)
        error_type = type(exc).__qualname__
        raise
    finally:
        otel_context.detach(token)
        if isinstance(late, Mapping) and late:
            error_type = _apply_late(span, late) or error_type
        if record_metrics:
            elapsed = time.perf_counter() - started
            with contextlib.suppress(Exception):
                metrics.operation_finished(operation, elapsed, error_type)
            if kind == SpanKind.SERVER and "http.request.method" in attrs:
                with contextlib.suppress(Exception):
                    done = {**attrs, **span_attributes(late if isinstance(late, Mapping) else {})}
                    if error_type and "error.type" not in done:
                        done["error.type"] = error_type
                    metrics.record_server_request(elapsed, done)
        span.end()


def _apply_late(span: Span, late: Mapping[str, Any]) -> str | None:
    """Set the late attributes on ``span``; a 5xx status marks it failed (a 4xx does not:
    on a server span that is the client's mistake). Returns the ``error.type`` set."""
    if not span.is_recording():
        return None
    span.set_attributes(span_attributes(late))
    status = late.get("http.response.status_code")
    if isinstance(status, int) and status >= 500:
        span.set_status(Status(StatusCode.ERROR))
        return str(late.get("error.type") or status)
    return None


def record_exception(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc``: status, error attributes, a redacted ``exception``
    event."""
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


def annotate_future(event: FutureEvent) -> None:
    """Add ``tinkex.future.<outcome>`` to the current span (if it records)."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
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


def annotate_queue_state(event: QueueStateEvent) -> None:
    """Add ``tinkex.queue.state_change`` to the current span (if it records)."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attrs: dict[str, Any] = {
        "tinkex.request_id": event.request_id,
        "tinkex.queue_state": event.queue_state,
        "tinkex.queue_state.reason": redact_text(event.reason),
    }
    if event.previous_state:
        attrs["tinkex.queue_state.previous"] = event.previous_state
    span.add_event("tinkex.queue.state_change", attrs)
    span.set_attribute("tinkex.queue_state", event.queue_state)
