"""The backend telemetry reporter: batches events to ``POST {base_url}/api/v1/telemetry``.

Wire format: protocol.md §2.10. Behaviour: features §7.1, with the bounded-retry decision of
protocol.md §2.15 (a batch is retried at most ``max_retries`` times, then dropped and
counted; the caller is never blocked). The knobs live in
:class:`~tinkex_telemetry._reporter_settings.ReporterSettings`, the posting and retrying in
:class:`~tinkex_telemetry._reporter_sender.BatchSender`; this module queues events and runs
the worker thread.
"""

from __future__ import annotations

import atexit
import contextlib
import platform as _platform
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tinkex_http import get_logger
from tinkex_telemetry._records import (
    Severity,
    TelemetryRecord,
    exception_record,
    parse_severity,
)
from tinkex_telemetry._redact import sanitize_url
from tinkex_telemetry._reporter_sender import BatchSender
from tinkex_telemetry._reporter_settings import (
    DEFAULT_FORWARD,
    DEFAULT_SDK_VERSION,
    NETWORK_SCHEMES,
    ReporterSettings,
    options_from_config,
    telemetry_enabled_from_env,
)
from tinkex_telemetry._sinks import BaseSink
from tinkex_types import TinkexValidationError

__all__ = [
    "DEFAULT_FORWARD",
    "DEFAULT_SDK_VERSION",
    "BackendReporter",
    "ReporterSettings",
    "ReporterStats",
    "telemetry_enabled_from_env",
]

_log = get_logger("tinkex.telemetry")


@dataclass(frozen=True, slots=True)
class ReporterStats:
    """Counters of one reporter (a snapshot)."""

    enqueued: int
    sent: int
    batches_sent: int
    failed_attempts: int
    dropped_queue_full: int
    dropped_after_retries: int
    queued: int


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


_live: weakref.WeakSet[BackendReporter] = weakref.WeakSet()
_atexit_lock = threading.Lock()
_atexit_registered = False


def _close_all_at_exit() -> None:
    for reporter in list(_live):
        with contextlib.suppress(Exception):  # never fail interpreter shutdown
            reporter.close(timeout=reporter.settings.exit_timeout)


def _register_atexit() -> None:
    global _atexit_registered
    with _atexit_lock:
        if not _atexit_registered:
            atexit.register(_close_all_at_exit)
            _atexit_registered = True


class BackendReporter(BaseSink):
    """Send tinkex telemetry to the Tinker backend, in batches, from a background thread.

    * ``SESSION_START`` is queued at construction, ``SESSION_END`` (with the session
      duration) at :meth:`close`; :meth:`log` queues a ``GENERIC_EVENT``,
      :meth:`log_exception` a ``user_error`` ``GENERIC_EVENT`` or an
      ``UNHANDLED_EXCEPTION``; records of the observer hooks whose kind is in ``forward``
      become ``GENERIC_EVENT``\\ s named like ``tinkex.http.request.stop``.
    * A batch (at most ``max_batch_size`` events) is sent when ``flush_threshold`` events
      are queued, every ``flush_interval`` seconds, on :meth:`flush`, and on
      :meth:`close` (also called at interpreter exit).
    * The queue holds at most ``max_queue_size`` events; newer events are dropped when it
      is full and counted in :attr:`stats`.
    * A failed batch (transport error, 408, 429, 5xx) is retried ``max_retries`` times
      after ``retry_base_delay · 2^attempt`` seconds (at most 30 s, shortened by up to
      10 % jitter: :attr:`ReporterSettings.backoff`), then dropped and counted. Other 4xx
      answers drop the batch at once.
    * Nothing here blocks the caller except an explicit :meth:`flush`/:meth:`close`, which
      wait at most ``timeout`` seconds.

    ``endpoint`` (full URL) or ``base_url`` (``/api/v1/telemetry`` is appended) says where;
    ``transport`` (an ``httpx.BaseTransport``) is for tests and custom networking. The
    keyword knobs (``flush_interval`` … ``match_base_url``) become :attr:`settings`.
    """

    def __init__(
        self,
        *,
        session_id: str,
        base_url: str | None = None,
        endpoint: str | None = None,
        api_key: object = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        sdk_version: str = DEFAULT_SDK_VERSION,
        platform: str | None = None,
        flush_interval: float = 10.0,
        flush_threshold: int = 100,
        max_batch_size: int = 100,
        max_queue_size: int = 10_000,
        http_timeout: float = 5.0,
        max_retries: int = 3,
        retry_base_delay: float = 1.0,
        flush_timeout: float = 30.0,
        exit_timeout: float = 5.0,
        forward: Iterable[str] = DEFAULT_FORWARD,
        match_base_url: bool = True,
        enabled: bool = True,
        session_start: float | None = None,
    ) -> None:
        super().__init__()
        self.settings = ReporterSettings(
            flush_interval=flush_interval,
            flush_threshold=flush_threshold,
            max_batch_size=max_batch_size,
            max_queue_size=max_queue_size,
            http_timeout=http_timeout,
            max_retries=max_retries,
            retry_base_delay=retry_base_delay,
            flush_timeout=flush_timeout,
            exit_timeout=exit_timeout,
            forward=frozenset(forward),
            match_base_url=match_base_url,
        )
        self.session_id = _check_session_id(session_id)
        self.base_url = base_url.rstrip("/") if base_url else None
        self.endpoint = _endpoint(self.base_url, endpoint, transport, enabled=enabled)
        self.sdk_version = sdk_version
        self.platform = platform or _platform.system() or "Unknown"
        self.enabled = enabled
        self.session_start = session_start if session_start is not None else time.time()
        self._init_state()
        self._sender: BatchSender | None = None
        if enabled:
            self._sender = BatchSender(
                self.endpoint,
                settings=self.settings,
                sdk_version=sdk_version,
                api_key=api_key,
                headers=headers,
                transport=transport,
            )
            self._start()

    def _init_state(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[dict[str, Any]] = deque()
        self._index = 0
        self._pushed = 0
        self._processed = 0
        self._sent = 0
        self._batches_sent = 0
        self._failed_attempts = 0
        self._dropped_full = 0
        self._dropped_retries = 0
        self._flush_requested = False
        self._drain = False
        self._closing = False
        self._session_ended = False
        self._abort = threading.Event()
        self._next_flush = time.monotonic() + self.settings.flush_interval
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        self._enqueue({"event": "SESSION_START", "severity": "INFO"}, ts=self.session_start)
        self._next_flush = time.monotonic() + self.settings.flush_interval
        self._thread = threading.Thread(
            target=self._run, name=f"tinkex-telemetry-{self.session_id[:8]}", daemon=True
        )
        self._thread.start()
        _live.add(self)
        _register_atexit()

    @classmethod
    def from_config(
        cls, config: Any = None, *, session_id: str, **overrides: Any
    ) -> BackendReporter:
        """A reporter for a client configuration (a ``tinkex_http.Config`` or alike).

        Reads ``base_url``, ``api_key``, ``sdk_version``, ``telemetry_enabled`` and the
        Cloudflare Access headers from ``config``; ``overrides`` win. Without a config,
        ``TINKER_BASE_URL``/``TINKER_API_KEY``/``TINKER_TELEMETRY`` are used.

        For a URL scheme other than ``http``/``https`` (e.g. ``local://``, the in-process
        server) the transport registered for that scheme through the
        ``tinkex_register_transports`` hook is used (pool ``"telemetry"``); it must support
        synchronous requests.
        """
        return cls(session_id=session_id, **options_from_config(config, overrides))

    # -- queueing ---------------------------------------------------------------------
    def _enqueue(
        self, fields: dict[str, Any], *, ts: float | None = None, force: bool = False
    ) -> bool:
        if not self.enabled:
            return False
        with self._cond:
            if self.closed and not force:
                return False
            if len(self._queue) >= self.settings.max_queue_size and not force:
                self._dropped_full += 1
                dropped = self._dropped_full
                if dropped == 1 or dropped % 1000 == 0:
                    _log.warning(
                        "telemetry_queue_full",
                        session_id=self.session_id,
                        max_queue_size=self.settings.max_queue_size,
                        dropped=dropped,
                    )
                return False
            event = {
                "event_id": uuid.uuid4().hex,
                "event_session_index": self._index,
                "timestamp": _iso(ts if ts is not None else time.time()),
                **fields,
            }
            self._index += 1
            self._queue.append(event)
            self._pushed += 1
            if len(self._queue) >= self.settings.flush_threshold:
                self._drain = True  # send everything queued, batch after batch
                self._cond.notify_all()
            return True

    def emit(self, record: TelemetryRecord) -> None:
        """Queue a record as a telemetry event (never blocks, never raises)."""
        try:
            self._emit(record)
        except Exception as exc:  # a sink must never break its caller
            _log.debug("telemetry_emit_failed", error=type(exc).__name__)

    def _emit(self, record: TelemetryRecord) -> None:
        if record.kind == "exception":
            if record.name == "user_error":
                self._enqueue(
                    {
                        "event": "GENERIC_EVENT",
                        "severity": record.severity,
                        "event_name": "user_error",
                        "event_data": dict(record.data),
                    },
                    ts=record.timestamp,
                )
            else:
                self._enqueue(
                    {
                        "event": "UNHANDLED_EXCEPTION",
                        "severity": record.severity,
                        "error_type": record.data.get("error_type", "Exception"),
                        "error_message": record.data.get("error_message", ""),
                        "traceback": record.data.get("traceback"),
                    },
                    ts=record.timestamp,
                )
            return
        if record.kind != "log":
            if record.kind not in self.settings.forward:
                return
            if self.settings.match_base_url and self.base_url:
                other = record.data.get("base_url")
                if isinstance(other, str) and other.rstrip("/") != self.base_url:
                    return
        self._enqueue(
            {
                "event": "GENERIC_EVENT",
                "severity": record.severity,
                "event_name": record.name,
                "event_data": dict(record.data),
            },
            ts=record.timestamp,
        )

    def forward(self, record: TelemetryRecord) -> bool:
        """Queue an observer record as a ``GENERIC_EVENT`` whatever :attr:`settings`
        ``forward`` says (the session forwarding of
        :class:`~tinkex_telemetry._forwarding.SessionForwarder` decides); never raises."""
        try:
            return self._enqueue(
                {
                    "event": "GENERIC_EVENT",
                    "severity": record.severity,
                    "event_name": record.name,
                    "event_data": dict(record.data),
                },
                ts=record.timestamp,
            )
        except Exception:  # a sink must never break its caller
            return False

    def log_fatal_exception(
        self, exc: BaseException, severity: Severity | str = "CRITICAL"
    ) -> bool:
        """Log ``exc``, end the session and flush synchronously (bounded by ``flush_timeout``).

        Returns whether everything queued was processed in time.
        """
        self.emit(exception_record(exc, parse_severity(severity, "CRITICAL")))
        self._end_session()
        drained = self.flush(self.settings.flush_timeout)
        _log.info("telemetry_exception_logged", session_id=self.session_id)
        return drained

    def _end_session(self) -> None:
        with self._cond:
            if self._session_ended:
                return
            self._session_ended = True
        duration = timedelta(seconds=max(time.time() - self.session_start, 0.0))
        self._enqueue(
            {"event": "SESSION_END", "severity": "INFO", "duration": str(duration)}, force=True
        )

    # -- worker -----------------------------------------------------------------------
    def _should_send(self) -> bool:
        return bool(self._queue) and (
            len(self._queue) >= self.settings.flush_threshold
            or self._flush_requested
            or self._closing
            or self._drain
        )

    def _next_batch(self) -> list[dict[str, Any]] | None:
        """Wait (holding the condition) until a batch is due; ``None`` when closed and empty."""
        while not self._should_send():
            if self._closing and not self._queue:
                self._cond.notify_all()
                return None
            now = time.monotonic()
            if now >= self._next_flush:
                self._next_flush = now + self.settings.flush_interval
                if self._queue:
                    self._drain = True
                    continue
            self._cond.wait(self._next_flush - now)
        size = min(self.settings.max_batch_size, len(self._queue))
        return [self._queue.popleft() for _ in range(size)]

    def _run(self) -> None:
        assert self._sender is not None
        try:
            self._sender.open()
        except Exception as exc:  # e.g. a broken TLS setup: drop everything, never raise
            _log.warning("telemetry_client_failed", error=type(exc).__name__)
            self._abort.set()
        while True:
            with self._cond:
                batch = self._next_batch()
            if batch is None:
                return
            try:
                self._send(batch)
            except Exception as exc:  # keep the worker alive whatever happens
                _log.warning("telemetry_send_crashed", error=type(exc).__name__)
                with self._cond:
                    self._dropped_retries += len(batch)
            with self._cond:
                self._processed += len(batch)
                if not self._queue:
                    self._drain = False
                    self._flush_requested = False
                self._cond.notify_all()

    def _send(self, batch: list[dict[str, Any]]) -> None:
        sender = self._sender
        if sender is None or not sender.is_open:
            with self._cond:
                self._dropped_retries += len(batch)
            return
        body = {
            "session_id": self.session_id,
            "platform": self.platform,
            "sdk_version": self.sdk_version,
            "events": batch,
        }
        result = sender.send(body, self._abort)
        with self._cond:
            self._failed_attempts += result.failed_attempts
            if result.delivered:
                self._sent += len(batch)
                self._batches_sent += 1
            else:
                self._dropped_retries += len(batch)
        if not result.delivered:
            _log.warning(
                "telemetry_batch_dropped",
                session_id=self.session_id,
                events=len(batch),
                reason=result.reason,
            )

    # -- control ----------------------------------------------------------------------
    @property
    def stats(self) -> ReporterStats:
        with self._cond:
            return ReporterStats(
                enqueued=self._pushed,
                sent=self._sent,
                batches_sent=self._batches_sent,
                failed_attempts=self._failed_attempts,
                dropped_queue_full=self._dropped_full,
                dropped_after_retries=self._dropped_retries,
                queued=len(self._queue),
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued so far; wait until it was processed (sent, or dropped
        after its retries) or ``timeout`` (default ``flush_timeout``) seconds passed.

        Returns whether everything was processed in time.
        """
        if not self.enabled or self._thread is None:
            return True
        deadline = time.monotonic() + (self.settings.flush_timeout if timeout is None else timeout)
        with self._cond:
            target = self._pushed
            self._flush_requested = True
            self._cond.notify_all()
            while self._processed < target:
                if not self._thread.is_alive():
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self, timeout: float | None = None) -> None:
        """End the session (``SESSION_END``), send what is queued and stop the worker.

        Waits at most ``timeout`` (default ``flush_timeout``) seconds; past that, pending
        retries are abandoned and the rest is dropped.
        """
        if self.closed:
            return
        if self.enabled:
            self._end_session()
        with self._cond:
            self.closed = True
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            wait = self.settings.flush_timeout if timeout is None else timeout
            self._thread.join(wait)
            if self._thread.is_alive():
                self._abort.set()
                self._thread.join(1.0)
        if self._sender is not None:
            self._sender.close()
        _live.discard(self)
        self._run_close_callbacks()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("enabled" if self.enabled else "disabled")
        endpoint = sanitize_url(self.endpoint)
        return f"BackendReporter(session_id={self.session_id!r}, endpoint={endpoint!r}, {state})"


def _check_session_id(session_id: object) -> str:
    if not isinstance(session_id, str) or not session_id.strip():
        raise TinkexValidationError(
            "session_id",
            f"must be a non-empty string, got {session_id!r}",
            "pass the session id of the ServiceClient",
        )
    return session_id


def _endpoint(
    base_url: str | None,
    endpoint: str | None,
    transport: httpx.BaseTransport | None,
    *,
    enabled: bool,
) -> str:
    """The URL the batches go to; errors name ``base_url``/``endpoint``."""
    if endpoint is None and not base_url:
        raise TinkexValidationError(
            "base_url",
            "neither base_url nor endpoint was given",
            "pass base_url='https://...' (or endpoint=...)",
        )
    url = endpoint or f"{base_url}/api/v1/telemetry"
    scheme = httpx.URL(url).scheme.lower()
    if enabled and transport is None and scheme not in NETWORK_SCHEMES:
        raise TinkexValidationError(
            "base_url" if endpoint is None else "endpoint",
            f"httpx cannot reach a {scheme!r} URL by itself",
            "build the reporter with BackendReporter.from_config(config) (it uses the "
            "transport registered for the scheme) or pass transport=",
        )
    return url
