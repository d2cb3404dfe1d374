"""The record every sink receives, the sink protocol, and the event → record mapping."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from tinkex_telemetry._classify import is_user_error
from tinkex_telemetry._redact import redact_text, redact_value
from tinkex_types import FutureEvent, QueueStateEvent, RegularizerEvent, RequestEvent
from tinkex_types._events import CircuitBreakerEvent, RecoveryEvent

__all__ = [
    "SEVERITIES",
    "ObserverEvent",
    "RecordKind",
    "Severity",
    "TelemetryRecord",
    "TelemetrySink",
    "exception_record",
    "record_from_event",
]

Severity = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
SEVERITIES: tuple[Severity, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: ``request``, ``future``, ``queue_state``, ``regularizer`` come from the observer hooks;
#: ``log`` from an explicit ``sink.log(...)``; ``exception`` from ``sink.log_exception``.
RecordKind = Literal[
    "request",
    "future",
    "queue_state",
    "regularizer",
    "circuit_breaker",
    "recovery",
    "log",
    "exception",
]
ObserverEvent = (
    RequestEvent
    | FutureEvent
    | QueueStateEvent
    | RegularizerEvent
    | CircuitBreakerEvent
    | RecoveryEvent
)


def severity_rank(severity: str) -> int:
    """0 for DEBUG up to 4 for CRITICAL (unknown names rank as INFO)."""
    try:
        return SEVERITIES.index(parse_severity(severity, "INFO"))
    except ValueError:
        return 1


def parse_severity(value: object, default: Severity = "INFO") -> Severity:
    """Parse a severity name tolerantly (``warn`` → ``WARNING``); unknown → ``default``."""
    text = str(value).strip().upper() if value is not None else ""
    if text == "WARN":
        return "WARNING"
    for sev in SEVERITIES:
        if sev == text:
            return sev
    return default


@dataclass(frozen=True, slots=True)
class TelemetryRecord:
    """One thing that happened, as handed to every sink.

    ``name`` is dotted (``tinkex.http.request.stop``, ``tinkex.queue.state_change``,
    ``tinkex.future.failed``, ``tinkex.regularizer.compute.stop`` or a user-chosen name);
    ``data`` is JSON-friendly and already redacted.
    """

    kind: RecordKind
    name: str
    data: Mapping[str, Any]
    severity: Severity = "INFO"
    timestamp: float = field(default_factory=time.time)


@runtime_checkable
class TelemetrySink(Protocol):
    """Where telemetry records go (``otel``, ``backend``, ``console`` or a plugin's own).

    ``emit`` must not block and must not raise; ``flush`` waits (up to ``timeout``
    seconds) until what was emitted has been delivered and says whether it was;
    ``close`` flushes and releases resources (emits after ``close`` are ignored).
    """

    def emit(self, record: TelemetryRecord) -> None: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def close(self, timeout: float | None = None) -> None: ...


def _clean(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = redact_value({k: v for k, v in data.items() if v is not None})
    return out


def record_from_event(event: ObserverEvent) -> TelemetryRecord:
    """Turn an observer-hook event into a :class:`TelemetryRecord`."""
    if isinstance(event, RequestEvent):
        return _request_record(event)
    if isinstance(event, FutureEvent):
        return _future_record(event)
    if isinstance(event, QueueStateEvent):
        return _queue_state_record(event)
    if isinstance(event, RegularizerEvent):
        return _regularizer_record(event)
    if isinstance(event, CircuitBreakerEvent):
        return _breaker_record(event)
    if isinstance(event, RecoveryEvent):
        return _recovery_record(event)
    raise TypeError(f"not a tinkex observer event: {type(event).__name__}")


def _request_record(event: RequestEvent) -> TelemetryRecord:
    """One HTTP attempt: ``stop`` (INFO) or ``exception`` (ERROR, no response)."""
    failed = event.error is not None
    data = _clean(
        {
            "method": event.method,
            "path": event.path,
            "attempt": event.attempt,
            "retry_count": event.attempt,
            "duration_s": event.duration_s,
            "status_code": event.status_code,
            "error": event.error,
            "request_type": event.request_type,
            "will_retry": event.will_retry,
            "bytes_sent": event.bytes_sent,
            "bytes_received": event.bytes_received,
            "base_url": event.base_url,
            "result": "error" if failed or (event.status_code or 0) >= 400 else "ok",
        }
    )
    return TelemetryRecord(
        kind="request",
        name="tinkex.http.request.exception" if failed else "tinkex.http.request.stop",
        data=data,
        severity="ERROR" if failed else "INFO",
        timestamp=event.timestamp,
    )


def _future_record(event: FutureEvent) -> TelemetryRecord:
    """A resolved future: user failures and time-outs WARNING, other failures ERROR."""
    severity: Severity = "INFO"
    if event.outcome == "failed":
        severity = "WARNING" if event.category == "user" else "ERROR"
    elif event.outcome == "timed_out":
        severity = "WARNING"
    data = _clean(
        {
            "request_id": event.request_id,
            "outcome": event.outcome,
            "duration_s": event.duration_s,
            "polls": event.polls,
            "request_type": event.request_type,
            "model_id": event.model_id,
            "category": event.category,
            "error": event.error,
        }
    )
    return TelemetryRecord(
        kind="future",
        name=f"tinkex.future.{event.outcome}",
        data=data,
        severity=severity,
        timestamp=event.timestamp,
    )


def _queue_state_record(event: QueueStateEvent) -> TelemetryRecord:
    """A queue-state change: WARNING unless the queue is ``active`` again."""
    data = _clean(
        {
            "request_id": event.request_id,
            "queue_state": event.queue_state,
            "previous_state": event.previous_state,
            "reason": event.reason,
            "model_id": event.model_id,
            "base_url": event.base_url,
        }
    )
    return TelemetryRecord(
        kind="queue_state",
        name="tinkex.queue.state_change",
        data=data,
        severity="INFO" if event.queue_state == "active" else "WARNING",
        timestamp=event.timestamp,
    )


def _regularizer_record(event: RegularizerEvent) -> TelemetryRecord:
    """A regularizer's ``start`` (DEBUG) or ``stop`` (INFO)."""
    data = _clean(
        {
            "name": event.name,
            "phase": event.phase,
            "duration_s": event.duration_s,
            "value": event.value,
            "weight": event.weight,
        }
    )
    return TelemetryRecord(
        kind="regularizer",
        name=f"tinkex.regularizer.compute.{event.phase}",
        data=data,
        severity="DEBUG" if event.phase == "start" else "INFO",
        timestamp=event.timestamp,
    )


def _breaker_record(event: CircuitBreakerEvent) -> TelemetryRecord:
    """A breaker changed state: WARNING when it opens, INFO otherwise."""
    data = _clean(
        {
            "family": event.family,
            "base_url": event.base_url,
            "state": event.state,
            "previous_state": event.previous_state,
            "failures": event.failures,
            "reason": event.reason,
            "retry_after_s": event.retry_after_s,
        }
    )
    return TelemetryRecord(
        kind="circuit_breaker",
        name=f"tinkex.circuit_breaker.{event.state}",
        data=data,
        severity="WARNING" if event.state == "open" else "INFO",
        timestamp=event.timestamp,
    )


def _recovery_record(event: RecoveryEvent) -> TelemetryRecord:
    """A recovery step: ERROR when it gave up, WARNING for detections and failed attempts."""
    severity: Severity = "INFO"
    if event.phase == "failed":
        severity = "ERROR"
    elif event.phase in ("detected", "attempt_failed"):
        severity = "WARNING"
    data = _clean(
        {
            "run_id": event.run_id,
            "phase": event.phase,
            "attempt": event.attempt,
            "checkpoint": event.checkpoint,
            "new_model_id": event.new_model_id,
            "error": event.error,
        }
    )
    return TelemetryRecord(
        kind="recovery",
        name=f"tinkex.recovery.{event.phase}",
        data=data,
        severity=severity,
        timestamp=event.timestamp,
    )


def exception_record(exc: BaseException, severity: Severity = "ERROR") -> TelemetryRecord:
    """A record for an exception: ``user_error`` (WARNING) or ``unhandled_exception``.

    The classification follows :func:`tinkex_telemetry.is_user_error`.
    """
    import traceback

    message = redact_text(str(exc))
    if is_user_error(exc):
        data: dict[str, Any] = {"error_type": type(exc).__name__, "message": message}
        status = getattr(exc, "status_code", None)
        if isinstance(status, int):
            data["status_code"] = status
        body = getattr(exc, "body", None)
        if body is not None:
            data["body"] = redact_value(body)
        return TelemetryRecord(kind="exception", name="user_error", data=data, severity="WARNING")
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return TelemetryRecord(
        kind="exception",
        name="unhandled_exception",
        data={
            "error_type": type(exc).__name__,
            "error_message": message,
            "traceback": redact_text(tb) if exc.__traceback__ is not None else None,
        },
        severity=severity,
    )
