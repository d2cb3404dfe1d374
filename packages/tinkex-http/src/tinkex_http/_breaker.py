"""Circuit breakers per endpoint family and server, with a process-wide registry.

A breaker counts consecutive failed attempts (transport errors, 5xx answers) of one
endpoint family (:func:`endpoint_family`: ``session``, ``training``, ``sampling``,
``futures``, ``rest``, ``telemetry``) on one server (the normalized base URL). After
``failure_threshold`` of them it *opens*: attempts fail at once with
:class:`CircuitOpenError` for ``recovery_timeout`` seconds. Then it is *half open*: up to
``half_open_max_calls`` probe attempts go through; a success closes it, a failure opens it
again. Any answer below 500 (a 4xx included) counts as a success: the server is up.

Off by default (``Config.circuit_breaker``, ``TINKEX_CIRCUIT_BREAKER``): tinkex's retries
are built to ride out a server restart (an operation lends its retry time to the transport
loop) and the official SDK has no breaker, so failing fast is a choice an application makes.

Every state change is a :class:`tinkex_types.CircuitBreakerEvent`, given to the registry's
listeners and to the ``tinkex_on_circuit_breaker`` hook (once per transition).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tinkex_http._settings import fail, normalize_base_url, parse_bool
from tinkex_types import APIConnectionError
from tinkex_types._events import CircuitBreakerEvent, CircuitState

__all__ = [
    "FAMILIES",
    "CircuitBreaker",
    "CircuitBreakerRegistry",
    "CircuitBreakerSettings",
    "CircuitOpenError",
    "breakers",
    "endpoint_family",
    "guard",
    "parse_circuit_breaker",
]

FAMILIES: tuple[str, ...] = ("session", "training", "sampling", "futures", "rest", "telemetry")
_SESSION_PATHS = frozenset(
    {
        "/api/v1/create_session",
        "/api/v1/session_heartbeat",
        "/api/v1/get_server_capabilities",
        "/api/v1/healthz",
        "/api/v1/create_sampling_session",
        "/api/v1/client/config",
    }
)
_REST_PREFIXES = (
    "/api/v1/training_runs",
    "/api/v1/checkpoints",
    "/api/v1/sessions",
    "/api/v1/samplers",
    "/api/v1/weights_info",
)


def endpoint_family(path: str) -> str:
    """The family of an API path (relative to the base URL; a query string is ignored)."""
    bare = path.split("?", 1)[0].rstrip("/") or "/"
    if bare in _SESSION_PATHS:
        return "session"
    if bare == "/api/v1/retrieve_future":
        return "futures"
    if bare == "/api/v1/telemetry":
        return "telemetry"
    if bare in ("/api/v1/asample", "/api/v1/stream_sample", "/api/v1/compute_logprobs"):
        return "sampling"
    if bare.startswith(_REST_PREFIXES):
        return "rest"
    return "training"


@dataclass(frozen=True, slots=True)
class CircuitBreakerSettings:
    """``enabled``; ``failure_threshold`` consecutive failures open a breaker; it stays
    open ``recovery_timeout`` seconds; then ``half_open_max_calls`` probes go through."""

    enabled: bool = False
    failure_threshold: int = 5
    recovery_timeout: float = 30.0
    half_open_max_calls: int = 1

    def __post_init__(self) -> None:
        for name in ("failure_threshold", "half_open_max_calls"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise fail(
                    f"circuit_breaker.{name}",
                    f"must be an integer >= 1, got {value!r}",
                    f"pass {name}=5",
                )
        timeout = self.recovery_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise fail(
                "circuit_breaker.recovery_timeout",
                f"must be a number of seconds > 0, got {timeout!r}",
                "pass recovery_timeout=30.0",
            )


_KEYS = {
    "failures": "failure_threshold",
    "failure_threshold": "failure_threshold",
    "reset": "recovery_timeout",
    "recovery_timeout": "recovery_timeout",
    "probes": "half_open_max_calls",
    "half_open_max_calls": "half_open_max_calls",
}
_FIX = "use on/off, or failures=5,reset=30,probes=1 (any subset)"


def parse_circuit_breaker(raw: Any, where: str, _resolved: Any = None) -> CircuitBreakerSettings:
    """``Config.circuit_breaker``: a :class:`CircuitBreakerSettings`, a bool, a mapping of
    its fields, or text: a boolean word or ``failures=5,reset=30,probes=1`` (switches on)."""
    if isinstance(raw, CircuitBreakerSettings):
        return raw
    if isinstance(raw, bool):
        return CircuitBreakerSettings(enabled=raw)
    if isinstance(raw, Mapping):
        fields = {_KEYS.get(str(k), str(k)): v for k, v in raw.items()}
        unknown = sorted(set(fields) - {*_KEYS.values(), "enabled"})
        if unknown:
            raise fail(where, f"unknown key(s) {', '.join(unknown)}", _FIX)
        fields.setdefault("enabled", True)
        return CircuitBreakerSettings(**fields)
    if isinstance(raw, str):
        text = raw.strip()
        if "=" not in text:
            try:
                return CircuitBreakerSettings(enabled=parse_bool(text, where))
            except ValueError:
                raise fail(where, f"must be on/off or key=value pairs, got {raw!r}", _FIX) from None
        return parse_circuit_breaker(_pairs(text, where), where)
    raise fail(where, f"must be a bool, a mapping or text, got {type(raw).__name__}", _FIX)


def _pairs(text: str, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in _KEYS:
            raise fail(where, f"bad entry {part.strip()!r}", _FIX)
        try:
            number: float = float(value) if _KEYS[key] == "recovery_timeout" else int(value)
        except ValueError:
            raise fail(where, f"{key} must be a number, got {value.strip()!r}", _FIX) from None
        out[key] = number
    return out


class CircuitOpenError(APIConnectionError):
    """A request refused without being sent: its endpoint family's breaker is open."""

    def __init__(self, family: str, base_url: str, retry_after_s: float) -> None:
        super().__init__(
            f"circuit breaker for {family} requests to {base_url} is open after repeated "
            f"failures; requests are refused for {retry_after_s:.1f} s more "
            "(Config.circuit_breaker / TINKEX_CIRCUIT_BREAKER configure or switch it off)"
        )
        self.family = family
        self.base_url = base_url
        self.retry_after_s = retry_after_s


Listener = Callable[[CircuitBreakerEvent], None]


class CircuitBreaker:
    """The breaker of one (server, family); thread-safe. See the module docstring."""

    def __init__(
        self,
        family: str,
        base_url: str,
        settings: CircuitBreakerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        notify: Listener | None = None,
    ) -> None:
        self.family = family
        self.base_url = base_url
        self.settings = settings
        self._clock = clock
        self._notify = notify
        self._lock = threading.RLock()  # listeners may read the state
        self._state: CircuitState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0

    @property
    def state(self) -> CircuitState:
        with self._lock:
            return self._current()

    @property
    def failures(self) -> int:
        return self._failures

    def _current(self) -> CircuitState:
        """The state, moving open → half_open once the recovery timeout elapsed."""
        elapsed = self._clock() - self._opened_at
        if self._state == "open" and elapsed >= self.settings.recovery_timeout:
            self._change("half_open", "recovery timeout elapsed")
            self._probes = 0
        return self._state

    def _change(self, state: CircuitState, reason: str, retry_after: float | None = None) -> None:
        previous, self._state = self._state, state
        if self._notify is None or previous == state:
            return
        event = CircuitBreakerEvent(
            family=self.family,
            base_url=self.base_url,
            state=state,
            previous_state=previous,
            failures=self._failures,
            reason=reason,
            retry_after_s=retry_after,
        )
        with contextlib.suppress(Exception):  # an observer never breaks a request
            self._notify(event)

    def before(self) -> None:
        """Let an attempt through, or raise :class:`CircuitOpenError`."""
        with self._lock:
            state = self._current()
            if state == "closed":
                return
            if state == "half_open" and self._probes < self.settings.half_open_max_calls:
                self._probes += 1
                return
            left = self.settings.recovery_timeout - (self._clock() - self._opened_at)
        raise CircuitOpenError(self.family, self.base_url, max(left, 0.0))

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            if self._state != "closed":
                self._change("closed", "probe succeeded")

    def failure(self, what: str) -> None:
        with self._lock:
            self._failures += 1
            state = self._current()
            if state == "half_open":
                self._open(f"probe failed ({what})")
            elif state == "closed" and self._failures >= self.settings.failure_threshold:
                self._open(f"{self._failures} consecutive failures (last: {what})")

    def answered(self, status: int) -> None:
        """Count an HTTP answer: 5xx is a failure, anything else a success."""
        if status >= 500:
            self.failure(f"HTTP {status}")
        else:
            self.success()

    def _open(self, reason: str) -> None:
        self._opened_at = self._clock()
        self._change("open", reason, self.settings.recovery_timeout)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.family} {self.base_url} {self._state}>"


class CircuitBreakerRegistry:
    """The breakers of a process, one per (normalized base URL, family), built on first use
    with the settings of the first client that needs it."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        #: The clock of breakers built from now on (tests swap it, then :meth:`reset`).
        self.clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._listeners: list[Listener] = []

    def get(self, base_url: str, family: str, settings: CircuitBreakerSettings) -> CircuitBreaker:
        key = (normalize_base_url(base_url), family)
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                breaker = CircuitBreaker(
                    family, key[0], settings, clock=self.clock, notify=self._dispatch
                )
                self._breakers[key] = breaker
            return breaker

    def states(self) -> dict[tuple[str, str], CircuitState]:
        """``(base URL, family) → state`` of every breaker built so far."""
        with self._lock:
            items = list(self._breakers.items())
        return {key: breaker.state for key, breaker in items}

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every state change; returns the unsubscribe function."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def reset(self) -> None:
        """Forget every breaker (all closed again)."""
        with self._lock:
            self._breakers.clear()

    def _dispatch(self, event: CircuitBreakerEvent) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            with contextlib.suppress(Exception):
                listener(event)
        from tinkex_types import get_hooks

        # An observer hook: a raising implementation is logged and skipped by the facade.
        get_hooks().on_circuit_breaker(event)


_registry = CircuitBreakerRegistry()


class _NoBreaker:
    """What :func:`guard` gives when breakers are off: every call does nothing."""

    def before(self) -> None:
        return None

    def answered(self, status: int) -> None:
        return None

    def failure(self, what: str) -> None:
        return None


_NO_BREAKER = _NoBreaker()


def guard(config: Any, path: str) -> CircuitBreaker | _NoBreaker:
    """The breaker of a request to ``path`` with ``config`` (a :class:`tinkex_http.Config`),
    or a no-op when ``config.circuit_breaker`` is off."""
    settings = getattr(config, "circuit_breaker", None)
    if not isinstance(settings, CircuitBreakerSettings) or not settings.enabled:
        return _NO_BREAKER
    return _registry.get(config.base_url, endpoint_family(path), settings)


def breakers() -> CircuitBreakerRegistry:
    """The process-wide registry the request pipeline uses."""
    return _registry
