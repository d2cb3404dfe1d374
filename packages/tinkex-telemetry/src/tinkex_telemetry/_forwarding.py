"""What a session reporter forwards of the observer hooks, like the official client.

The official SDK reports HTTP failures (every failed attempt of its retry loops, with the
status code and whether it retries), failed and timed-out futures, but not each successful
request. A session reporter built by the plugin forwards the same, plus every queue-state
change (``active``, ``paused_rate_limit``, ``paused_capacity``):

* ``tinkex.http.request.exception`` / ``tinkex.http.request.stop`` for attempts that got
  no answer or a status >= 400;
* ``tinkex.queue.state_change`` for each change;
* ``tinkex.future.failed`` / ``tinkex.future.timed_out``;
* ``tinkex.circuit_breaker.<state>`` and ``tinkex.recovery.<phase>`` (tinkex's own).

Bounded: at most ``per_minute`` events of one name per session reporter and minute (the
rest are dropped and counted in :attr:`SessionForwarder.dropped`), on top of the
reporter's own queue bound and batching. Observer events carry no session id: an event
goes to the reporter of the session on its base URL, else to the newest session.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tinkex_telemetry._records import ObserverEvent, TelemetryRecord
from tinkex_telemetry._reporter import BackendReporter
from tinkex_types import FutureEvent, RegularizerEvent, RequestEvent

__all__ = ["DEFAULT_FORWARD_PER_MINUTE", "SessionForwarder", "event_notable", "is_notable"]

#: Events of one name one session reporter forwards per minute, at most.
DEFAULT_FORWARD_PER_MINUTE = 60
_WINDOW_S = 60.0


def is_notable(record: TelemetryRecord) -> bool:
    """Whether the official client would report this record (see the module docstring)."""
    if record.kind == "request":
        return record.data.get("result") == "error"
    if record.kind in ("queue_state", "circuit_breaker", "recovery"):
        return True
    if record.kind == "future":
        return record.data.get("outcome") in ("failed", "timed_out")
    return False


def event_notable(event: ObserverEvent) -> bool:
    """:func:`is_notable` of the record an event would become, decided from the event
    alone (so the record, and its redaction, is built only when it will be forwarded)."""
    if isinstance(event, RequestEvent):
        return event.error is not None or (event.status_code or 0) >= 400
    if isinstance(event, FutureEvent):
        return event.outcome in ("failed", "timed_out")
    return not isinstance(event, RegularizerEvent)


class SessionForwarder:
    """Rate-bounded forwarding of notable records to one reporter per record."""

    def __init__(
        self,
        *,
        per_minute: int = DEFAULT_FORWARD_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = clock()
        self._counts: dict[tuple[str, str], int] = {}
        self.dropped = 0

    def forward(self, record: TelemetryRecord, reporter: BackendReporter) -> bool:
        """Queue ``record`` on ``reporter`` if notable and within the budget."""
        if not is_notable(record):
            return False
        key = (reporter.session_id, record.name)
        with self._lock:
            now = self._clock()
            if now - self._window_start >= _WINDOW_S:
                self._window_start = now
                self._counts.clear()
            count = self._counts.get(key, 0)
            if count >= self.per_minute:
                self.dropped += 1
                return False
            self._counts[key] = count + 1
        return reporter.forward(record)
