"""Observer events passed to the ``tinkex_on_*`` hooks (frozen dataclasses, cheap to build)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CircuitBreakerEvent",
    "FutureEvent",
    "QueueStateEvent",
    "RecoveryEvent",
    "RegularizerEvent",
    "RequestEvent",
    "SessionEvent",
]

QueueStateName = Literal["active", "paused_rate_limit", "paused_capacity", "unknown"]


@dataclass(frozen=True, slots=True)
class QueueStateEvent:
    """A future's queue state changed (reported by ``try_again`` answers).

    ``queue_position`` is how many of the model's requests run before this one (0: it is
    next), ``estimated_wait_s`` the server's estimate of the wait until it starts; both
    ``None`` when the server did not say (docs/queue.md).
    """

    request_id: str
    queue_state: str
    previous_state: str | None
    reason: str
    model_id: str | None = None
    base_url: str | None = None
    request_type: str | None = None
    timestamp: float = field(default_factory=time.time)
    queue_position: int | None = None
    estimated_wait_s: float | None = None

    @property
    def queue_place(self) -> str | None:
        """``"3rd in queue, ~12 s"`` (ordinal of ``queue_position + 1``, rounded seconds;
        the wait only when estimated), or ``None`` without a position."""
        return queue_place_text(self.queue_position, self.estimated_wait_s)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def queue_place_text(position: int | None, estimated_wait_s: float | None = None) -> str | None:
    """``"1st in queue"``, ``"3rd in queue, ~12 s"``: ``position`` requests ahead (so the
    ordinal is ``position + 1``), the estimate rounded to whole seconds; ``None`` without a
    position."""
    if position is None:
        return None
    text = f"{_ordinal(position + 1)} in queue"
    if estimated_wait_s is not None:
        text += f", ~{round(estimated_wait_s):d} s"
    return text


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """One HTTP attempt finished, with a response or with a transport error."""

    method: str
    path: str
    attempt: int
    duration_s: float
    status_code: int | None = None
    error: str | None = None
    request_type: str | None = None
    will_retry: bool = False
    bytes_sent: int = 0
    bytes_received: int = 0
    base_url: str | None = None
    timestamp: float = field(default_factory=time.time)


FutureOutcome = Literal["resolved", "failed", "timed_out", "cancelled"]


@dataclass(frozen=True, slots=True)
class FutureEvent:
    """A future reached a final state."""

    request_id: str
    outcome: FutureOutcome
    duration_s: float
    polls: int
    request_type: str | None = None
    model_id: str | None = None
    category: str | None = None
    error: str | None = None
    timestamp: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class RegularizerEvent:
    """A regularizer started or stopped computing inside a custom-loss pipeline."""

    name: str
    phase: Literal["start", "stop"]
    duration_s: float | None = None
    value: float | None = None
    weight: float | None = None
    timestamp: float = field(default_factory=time.time)


SessionPhase = Literal["start", "end"]


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A ServiceClient session started (``create_session`` succeeded) or ended (closed).

    ``config`` is the client's ``tinkex_http.Config`` (typed ``Any`` here: tinkex-types does
    not depend on tinkex-http); read its secrets only to authenticate, never log them.
    """

    session_id: str
    phase: SessionPhase
    base_url: str
    config: Any = field(default=None, repr=False)
    sdk_version: str | None = None
    timestamp: float = field(default_factory=time.time)


CircuitState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class CircuitBreakerEvent:
    """A circuit breaker of one endpoint family changed state (``tinkex_http`` breakers).

    ``family`` is ``session``, ``training``, ``sampling``, ``futures``, ``rest`` or
    ``telemetry``; ``base_url`` the normalized ``scheme://host[:port]`` of the server;
    ``failures`` the consecutive failures counted when it changed; ``reason`` why (e.g.
    ``"5 consecutive failures (last: HTTP 503)"``, ``"recovery timeout elapsed"``,
    ``"probe succeeded"``); ``retry_after_s`` how long an open breaker refuses requests.
    """

    family: str
    base_url: str
    state: CircuitState
    previous_state: CircuitState
    failures: int
    reason: str
    retry_after_s: float | None = None
    timestamp: float = field(default_factory=time.time)


RecoveryPhase = Literal["detected", "started", "attempt_failed", "completed", "failed"]


@dataclass(frozen=True, slots=True)
class RecoveryEvent:
    """A step of the opt-in recovery of a training run (``tinkex_clients`` recovery).

    ``detected``: the monitor found the run corrupted; ``started``: an attempt restores
    ``checkpoint``; ``attempt_failed``: that attempt failed with ``error`` (it is retried
    until ``max_attempts``); ``completed``: ``new_model_id`` continues the run;
    ``failed``: recovery gave up after ``attempt`` attempts.
    """

    run_id: str
    phase: RecoveryPhase
    attempt: int = 0
    checkpoint: str | None = None
    new_model_id: str | None = None
    error: str | None = None
    timestamp: float = field(default_factory=time.time)
