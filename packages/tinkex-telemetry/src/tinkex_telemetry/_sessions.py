"""One backend reporter per ServiceClient session (spec §7.1), keyed by session id.

``tinkex_on_session`` ``start`` builds a :class:`BackendReporter` (``SESSION_START``
queued at once); ``end`` closes it (``SESSION_END``), waiting about ``close_timeout``
seconds at most.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from tinkex_http import get_logger
from tinkex_telemetry._redact import redact_text
from tinkex_telemetry._reporter import BackendReporter
from tinkex_telemetry._reporter_settings import telemetry_enabled_from_env
from tinkex_types import SessionEvent, TinkexValidationError

__all__ = ["SessionReporters"]

_log = get_logger("tinkex.telemetry")


class SessionReporters:
    """The open reporters of the sessions announced so far.

    ``enabled=False`` builds none; ``options`` are :meth:`BackendReporter.from_config`
    overrides (they win over the session's base URL, ``forward=()`` and start time).
    """

    def __init__(
        self, *, enabled: bool, close_timeout: float, options: Mapping[str, Any] | None
    ) -> None:
        if (
            isinstance(close_timeout, bool)
            or not isinstance(close_timeout, int | float)
            or not close_timeout > 0
        ):
            raise TinkexValidationError(
                "session_close_timeout",
                f"must be a number of seconds > 0, got {close_timeout!r}",
                "pass session_close_timeout=5.0",
            )
        self.enabled = enabled
        self.close_timeout = float(close_timeout)
        self.options: dict[str, Any] = dict(options or {})
        self._lock = threading.Lock()
        self._by_session: dict[str, BackendReporter] = {}

    def get(self, session_id: str) -> BackendReporter | None:
        with self._lock:
            return self._by_session.get(session_id)

    def route(self, base_url: str | None) -> BackendReporter | None:
        """The reporter that forwards an observer event of ``base_url``: the newest open
        session on that base URL, else the newest open session; only reporters that do
        not forward everything themselves (``forward`` empty)."""
        with self._lock:
            candidates = [r for r in reversed(self._by_session.values()) if not r.settings.forward]
        if not candidates:
            return None
        if base_url:
            wanted = base_url.rstrip("/")
            for reporter in candidates:
                if reporter.base_url == wanted:
                    return reporter
        return candidates[0]

    def open_reporters(self) -> list[BackendReporter]:
        with self._lock:
            return list(self._by_session.values())

    def start(self, event: SessionEvent) -> BackendReporter | None:
        """A new reporter for ``event``'s session (``None``: disabled or it failed)."""
        if not self.enabled:
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
        options.update(self.options)
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
            previous.close(timeout=self.close_timeout)
        return reporter

    def end(self, event: SessionEvent) -> BackendReporter | None:
        """Close the reporter of ``event``'s session; return it (``None``: there was none)."""
        with self._lock:
            reporter = self._by_session.pop(event.session_id, None)
        if reporter is not None:
            reporter.close(timeout=self.close_timeout)
        return reporter

    def forget_all(self) -> None:
        with self._lock:
            self._by_session.clear()
