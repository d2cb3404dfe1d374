"""The sink base class and the ``console`` sink."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

from tinkex_telemetry._records import (
    Severity,
    TelemetryRecord,
    exception_record,
    parse_severity,
    severity_rank,
)
from tinkex_telemetry._redact import redact_value

__all__ = ["BaseSink", "ConsoleSink", "format_record"]


class BaseSink:
    """Common behaviour of the built-in sinks: ``log``, ``log_exception``, close callbacks.

    Subclasses implement :meth:`emit` (and usually :meth:`flush`/:meth:`close`).
    """

    def __init__(self) -> None:
        self.closed = False
        self._close_callbacks: list[Callable[[], None]] = []

    def emit(self, record: TelemetryRecord) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def log(
        self,
        name: str,
        data: Mapping[str, Any] | None = None,
        severity: Severity | str = "INFO",
    ) -> None:
        """Emit a generic event ``name`` with ``data`` (redacted) at ``severity``."""
        clean: dict[str, Any] = redact_value(dict(data or {}))
        self.emit(
            TelemetryRecord(kind="log", name=name, data=clean, severity=parse_severity(severity))
        )

    def log_exception(self, exc: BaseException, severity: Severity | str = "ERROR") -> None:
        """Emit an exception: a ``user_error`` event (WARNING) for user errors, otherwise an
        unhandled exception at ``severity`` (see :func:`tinkex_telemetry.is_user_error`)."""
        self.emit(exception_record(exc, parse_severity(severity, "ERROR")))

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def add_close_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once when the sink closes (used to detach it from a plugin)."""
        self._close_callbacks.append(callback)

    def close(self, timeout: float | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self._run_close_callbacks()

    def _run_close_callbacks(self) -> None:
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            with contextlib.suppress(Exception):  # a close callback must not break closing
                callback()


def _ms(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def format_record(record: TelemetryRecord) -> str:
    """One human-readable line (without timestamp and severity) for a record."""
    d = record.data
    if record.kind == "request":
        target = f"{d.get('method', '?')} {d.get('path', '?')}"
        outcome = f"error {d['error']}" if "error" in d else str(d.get("status_code", "?"))
        extra = [f"attempt {d.get('attempt', 0)}"]
        if d.get("request_type"):
            extra.append(str(d["request_type"]))
        if d.get("will_retry"):
            extra.append("will retry")
        return f"http {target} -> {outcome} in {_ms(d.get('duration_s'))} ({', '.join(extra)})"
    if record.kind == "future":
        text = (
            f"future {d.get('request_id', '?')} {d.get('outcome', '?')} after "
            f"{d.get('polls', 0)} polls in {_ms(d.get('duration_s'))}"
        )
        if d.get("request_type"):
            text += f" [{d['request_type']}]"
        if d.get("category"):
            text += f" category={d['category']}"
        if d.get("error"):
            text += f": {d['error']}"
        return text
    if record.kind == "queue_state":
        prev = d.get("previous_state") or "?"
        text = f"queue {d.get('request_id', '?')}: {prev} -> {d.get('queue_state', '?')}"
        if d.get("reason"):
            text += f" ({d['reason']})"
        return text
    if record.kind == "regularizer":
        if d.get("phase") == "start":
            return f"regularizer {d.get('name', '?')} started"
        text = f"regularizer {d.get('name', '?')} took {_ms(d.get('duration_s'))}"
        if "value" in d:
            text += f", value {d['value']}"
        return text
    fields = " ".join(f"{k}={v!r}" for k, v in d.items() if k != "traceback")
    return f"{record.name} {fields}".rstrip()


class ConsoleSink(BaseSink):
    """Human-readable lines on stderr (or ``stream``), for notebooks and scripts.

    ``min_severity`` filters (default ``INFO``); ``kinds`` restricts to some record kinds
    (``request``, ``future``, ``queue_state``, ``regularizer``, ``log``, ``exception``).
    """

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        min_severity: Severity | str = "INFO",
        kinds: Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        self._stream = stream
        self._min_rank = severity_rank(parse_severity(min_severity))
        self._kinds = frozenset(kinds) if kinds is not None else None
        self._lock = threading.Lock()

    def emit(self, record: TelemetryRecord) -> None:
        if self.closed or severity_rank(record.severity) < self._min_rank:
            return
        if self._kinds is not None and record.kind not in self._kinds:
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(record.timestamp))
        millis = int((record.timestamp % 1) * 1000)
        line = f"{stamp}.{millis:03d} {record.severity:<8} tinkex {format_record(record)}\n"
        stream = self._stream if self._stream is not None else sys.stderr
        try:
            with self._lock:
                stream.write(line)
                stream.flush()
        except (OSError, ValueError):  # closed stream: the console is gone, nothing to do
            pass

    def flush(self, timeout: float | None = None) -> bool:
        stream = self._stream if self._stream is not None else sys.stderr
        try:
            stream.flush()
        except (OSError, ValueError):
            return False
        return True
