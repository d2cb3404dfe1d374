"""Retry rules and backoff delays: which layer retries what.

Every delay comes from one :class:`tinkex_types.Backoff` value; the layers never stack
(docs/architecture.md, "Retries"):

* :class:`RetryPolicy` -- the transport layer, one HTTP request: connection errors,
  timeouts, 408, 409, 429 and 5xx (``x-should-retry`` overrides both ways), up to
  ``max_retries`` (10) times, waiting the server's ``retry-after-ms`` / ``retry-after``
  (seconds or HTTP date) when it lies in ``(0, 60]`` s, else
  ``Backoff(0.5, 10, jitter=0.25, "down")``. Endpoints whose callers own the retrying
  (``/asample``: the sampling loop, ``retrieve_future``: the polling loop, the heartbeat)
  get 0 transport retries.
* An error the transport was allowed to retry (its budget for the request was > 0) leaves
  :class:`~tinkex_http.HTTPClient` marked as already retried (:func:`retried_by` answers
  ``"transport"``); a polling deadline is marked ``"polling"``. :func:`is_retryable_error`
  answers ``False`` for marked errors, so no outer layer re-runs an inner layer's budget.
* :class:`RetryConfig` + :func:`retry_async` -- a loop around a whole operation
  (``RetryConfig.operation()``: 300 s, ``Backoff(1, 30, jitter=0)``;
  ``RetryConfig.sampling()``: unlimited attempts, 7200 s, ``Backoff(0.5, 10, 0.25, "both")``).
  It retries only what reached it unretried: errors of requests sent with a transport
  budget of 0 (``/asample``, or ``max_retries=0``), an expired future (410, sampling only).
  Instead of re-running the transport's budget, it lends the transport its time left
  (:func:`transport_time_left`): a request with a transport budget inside the loop keeps
  retrying (backoff capped at its maximum) until that time is used up, then fails for good.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tinkex_types import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    Backoff,
)

__all__ = [
    "RETRYABLE_STATUS",
    "RetryConfig",
    "RetryPolicy",
    "is_retryable_error",
    "mark_retried",
    "parse_retry_after",
    "retried_by",
    "retry_async",
    "transport_time_left",
]

RETRYABLE_STATUS = frozenset({408, 409, 429})

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Rng = Callable[[], float]

_T = TypeVar("_T")


#: Attribute set on an error by the layer that already spent its retry budget on it.
_RETRIED_BY = "_tinkex_retried_by"


#: The time budget an enclosing :func:`retry_async` lends to the transport layer.
_TIME_LEFT: ContextVar[Callable[[], float] | None] = ContextVar("tinkex_time_left", default=None)


def transport_time_left() -> float:
    """Seconds an enclosing :func:`retry_async` lends to the transport layer of the request
    being sent (0 outside any; ``inf`` when it never gives up)."""
    lender = _TIME_LEFT.get()
    return 0.0 if lender is None else max(lender(), 0.0)


def mark_retried(exc: BaseException, layer: str) -> None:
    """Record that ``layer`` (``"transport"``, ``"polling"``) already retried ``exc``."""
    setattr(exc, _RETRIED_BY, layer)


def retried_by(exc: BaseException) -> str | None:
    """The layer that already retried ``exc`` and gave up (``None``: no layer retried it).

    An outer retry loop must not retry such an error: that would re-run the inner layer's
    whole budget once per outer attempt.
    """
    layer = getattr(exc, _RETRIED_BY, None)
    return layer if isinstance(layer, str) else None


def parse_retry_after(
    headers: Mapping[str, str], *, now: Callable[[], float] = time.time
) -> float | None:
    """Server retry hint in seconds: ``retry-after-ms`` first, then ``retry-after`` (seconds
    or an HTTP date); ``None`` when absent or unreadable."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return float(raw_ms) / 1000.0
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return when.timestamp() - now()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Transport-layer retries of one HTTP request (every endpoint; some override
    ``max_retries``)."""

    max_retries: int = 10
    initial_delay: float = 0.5
    max_delay: float = 10.0
    jitter: float = 0.25
    #: Server hints above this many seconds are ignored (the backoff is used instead).
    max_retry_after: float = 60.0

    @property
    def backoff(self) -> Backoff:
        """``min(initial * 2**n, max)`` scaled by ``[1 - jitter, 1]`` (never above ``max``)."""
        return Backoff(self.initial_delay, self.max_delay, self.jitter, jitter_mode="down")

    def should_retry_status(self, status: int, headers: Mapping[str, str]) -> bool:
        """``x-should-retry`` wins; else 408, 409, 429 and 5xx are retried."""
        hint = headers.get("x-should-retry")
        if hint is not None:
            text = hint.strip().lower()
            if text == "true":
                return True
            if text == "false":
                return False
        return status in RETRYABLE_STATUS or status >= 500

    def delay(
        self,
        attempt: int,
        headers: Mapping[str, str] | None = None,
        *,
        rng: Rng = random.random,
        now: Callable[[], float] = time.time,
    ) -> float:
        """Seconds to wait before retry ``attempt`` (0-based): the server hint when it lies in
        ``(0, max_retry_after]``, otherwise :attr:`backoff`."""
        if headers is not None:
            hint = parse_retry_after(headers, now=now)
            if hint is not None and 0 < hint <= self.max_retry_after:
                return hint
        return self.backoff.delay(attempt, rng)


def is_retryable_error(exc: BaseException, *, retry_gone: bool = False) -> bool:
    """Whether an operation-level retry makes sense for ``exc``.

    Connection errors and timeouts, 408, 409, 429 and 5xx are retryable, unless a lower
    layer already retried them (:func:`retried_by`); other 4xx and ``RequestFailedError``
    are not. 410 only when ``retry_gone`` (sampling re-submits an expired future).
    """
    if retried_by(exc) is not None:
        return False
    if isinstance(exc, (APIConnectionError, APITimeoutError)):
        return True
    if isinstance(exc, APIStatusError):
        code = exc.status_code
        if code == 410:
            return retry_gone
        return code in RETRYABLE_STATUS or code >= 500
    # RequestFailedError (any category) and everything else: the server ran the request.
    return False


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """A retry loop around a whole operation (layers 2 and 3 of protocol.md §2.13)."""

    #: ``None`` = unlimited attempts (bounded by the timeouts).
    max_retries: int | None = None
    base_delay: float = 0.5
    max_delay: float = 10.0
    jitter: float = 0.25
    #: Give up when this many seconds passed since the first attempt (``None`` = never).
    total_timeout: float | None = 7200.0
    #: Retry 410 (expired futures): true for sampling.
    retry_gone: bool = True
    enabled: bool = True
    is_retryable: Callable[[BaseException], bool] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        from tinkex_types import TinkexValidationError

        if self.base_delay <= 0:
            raise TinkexValidationError("base_delay", f"must be > 0, got {self.base_delay}")
        if self.max_delay < self.base_delay:
            raise TinkexValidationError("max_delay", "must be >= base_delay")
        if not 0.0 <= self.jitter <= 1.0:
            raise TinkexValidationError("jitter", f"must be within [0, 1], got {self.jitter}")
        if self.total_timeout is not None and self.total_timeout <= 0:
            raise TinkexValidationError("total_timeout", "must be > 0 or None")
        if self.max_retries is not None and self.max_retries < 0:
            raise TinkexValidationError("max_retries", "must be >= 0 or None")

    @classmethod
    def sampling(cls) -> RetryConfig:
        """Layer 3: unlimited attempts, 7200 s progress timeout, 0.5..10 s ± 25 %."""
        return cls()

    @classmethod
    def operation(cls) -> RetryConfig:
        """Layer 2: ``min(2**n, 30)`` s (jitter 0), 300 s total, 410 not retried.

        Errors the transport already retried are final here (:func:`is_retryable_error`);
        the transport retries the requests inside the loop for up to its 300 s instead."""
        return cls(
            base_delay=1.0, max_delay=30.0, jitter=0.0, total_timeout=300.0, retry_gone=False
        )

    @property
    def backoff(self) -> Backoff:
        """``min(base * 2**n, max)`` ± ``jitter``, clamped to ``[0, max]``."""
        return Backoff(self.base_delay, self.max_delay, self.jitter, jitter_mode="both")

    def delay(self, attempt: int, rng: Rng = random.random) -> float:
        """Seconds before retry ``attempt`` (0-based), from :attr:`backoff`."""
        return self.backoff.delay(attempt, rng)


async def retry_async(
    call: Callable[[], Awaitable[_T]],
    config: RetryConfig | None = None,
    *,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    rng: Rng = random.random,
    on_retry: Callable[[int, BaseException, float], Any] | None = None,
) -> _T:
    """Run ``call`` until it succeeds, the error is not retryable, attempts run out or the
    total timeout passes (then the last error is raised).

    While ``call`` runs, the time left of ``total_timeout`` is lent to the transport layer
    (:func:`transport_time_left`): a request inside ``call`` that has a transport budget
    keeps retrying past ``max_retries`` until that time is used up, and its final error is
    not retried here again. So a server restart is ridden out once, by one loop.
    """
    cfg = config or RetryConfig.sampling()
    if not cfg.enabled:
        return await call()
    started = clock()
    attempt = 0
    total = cfg.total_timeout

    def time_left() -> float:
        return math.inf if total is None else total - (clock() - started)

    while True:
        token = _TIME_LEFT.set(time_left)
        try:
            return await call()
        except Exception as exc:
            retryable = (
                cfg.is_retryable(exc)
                if cfg.is_retryable is not None
                else is_retryable_error(exc, retry_gone=cfg.retry_gone)
            )
            if not retryable:
                raise
            if cfg.max_retries is not None and attempt >= cfg.max_retries:
                raise
            delay = cfg.delay(attempt, rng)
            if cfg.total_timeout is not None and clock() - started + delay > cfg.total_timeout:
                raise
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            await sleep(delay)
            attempt += 1
        finally:
            _TIME_LEFT.reset(token)
