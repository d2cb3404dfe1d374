"""Hook implementations of tinkex_http: a built-in plugin (``tinkex_types.DEFAULT_PLUGINS``,
also the entry point ``http`` of group ``tinkex``).

* ``tinkex_register_transports``: ``http`` and ``https`` → :func:`http_transport_factory`
  (which needs a real :class:`~tinkex_http.Config`).
* ``tinkex_on_queue_state_change``: the default observer, :class:`QueueStateLogger`, which
  logs paused states (a warning) and queued requests with a known place (``active`` with a
  ``queue_position``: an info line, "... is 3rd in queue, ~12 s") through structlog at most
  once per ``debounce_s`` (60 s) for the same subject (model id, else base URL) and state;
  ``active`` without a place is never logged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tinkex_http._config import Config
from tinkex_http._logs import get_logger
from tinkex_http._transport import http_transport_factory
from tinkex_types import (
    AsyncTransport,
    QueueStateEvent,
    RegisterTransport,
    TinkexValidationError,
    TransportConfig,
    hookimpl,
)

__all__ = ["QueueStateLogger", "tinkex_on_queue_state_change", "tinkex_register_transports"]

_log = get_logger("tinkex.queue")


class QueueStateLogger:
    """Debounced structlog warnings for queue-state changes."""

    def __init__(
        self, debounce_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.debounce_s = debounce_s
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def __call__(self, event: QueueStateEvent) -> bool:
        """Log ``event`` unless debounced; returns whether a line was written."""
        place = event.queue_place
        if event.queue_state == "active" and place is None:
            return False
        subject = event.model_id or event.base_url or event.request_id
        now = self.clock()
        with self._lock:
            last = self._last.get((subject, event.queue_state))
            if last is not None and now - last < self.debounce_s:
                return False
            self._last[(subject, event.queue_state)] = now
        fields = {
            "queue_state": event.queue_state,
            "reason": event.reason,
            "request_id": event.request_id,
            "model_id": event.model_id,
            "queue_position": event.queue_position,
            "estimated_wait_s": event.estimated_wait_s,
        }
        if event.queue_state == "active":
            what = f" ({event.request_type})" if event.request_type else ""
            _log.info(f"Request {event.request_id}{what} for {subject} is {place}", **fields)
            return True
        where = f": {place}" if place else ""
        _log.warning(
            f"Requests for {subject} are paused ({event.queue_state}){where}. "
            f"Reason: {event.reason}",
            **fields,
        )
        return True


_DEFAULT_LOGGER = QueueStateLogger()


def _http_factory(*, config: TransportConfig, pool: str) -> AsyncTransport:
    if not isinstance(config, Config):
        raise TinkexValidationError(
            "config",
            f"the http(s) transport needs a tinkex_http.Config, got {type(config).__name__}",
            "build the client from tinkex_http.Config(...)",
        )
    return http_transport_factory(config=config, pool=pool)


@hookimpl
def tinkex_register_transports(register: RegisterTransport) -> None:
    register("http", _http_factory)
    register("https", _http_factory)


@hookimpl
def tinkex_on_queue_state_change(event: QueueStateEvent) -> None:
    _DEFAULT_LOGGER(event)
