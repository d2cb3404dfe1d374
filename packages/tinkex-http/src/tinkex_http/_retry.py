"""Retry rules and backoff delays.

* :func:`backoff_delay` -- ``min(initial * 2**attempt, max) * U[1 - jitter, 1]``, always in
  ``[0, max]`` (transport layer: 0.5 s initial, 10 s max, 25 % jitter; protocol.md §2.13).
* :class:`RetryPolicy` -- the HTTP (transport) layer: which responses and errors are retried
  (408, 409, 429, 5xx and transport errors; ``x-should-retry`` overrides both ways) and how
  long to wait (``retry-after-ms`` / ``retry-after`` seconds or HTTP date when in
  ``(0, 60]`` s, else the backoff).
* :class:`RetryConfig` + :func:`retry_async` -- the operation and sampling layers around a
  whole call (``RetryConfig.operation()``: 300 s budget, ``min(2**n, 30)`` s;
  ``RetryConfig.sampling()``: unlimited attempts, 7200 s progress timeout, 0.5..10 s ± 25 %).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tinkex_types import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
)

__all__ = [
    "RETRYABLE_STATUS",
    "RetryConfig",
    "RetryPolicy",
    "backoff_delay",
    "is_retryable_error",
    "parse_retry_after",
    "retry_async",
]

RETRYABLE_STATUS = frozenset({408, 409, 429})

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Rng = Callable[[], float]

_T = TypeVar("_T")


def backoff_delay(
    attempt: int,
    *,
    initial: float = 0.5,
    maximum: float = 10.0,
    jitter: float = 0.25,
    rng: Rng = random.random,
) -> float:
    """Delay in seconds before retry number ``attempt`` (0-based).

    ``min(initial * 2**attempt, maximum)`` scaled by a factor in ``[1 - jitter, 1]``; the
    result always lies in ``[0, maximum]``.
    """
    if attempt < 0:
        attempt = 0
    base = maximum if attempt >= 64 else min(initial * (2.0**attempt), maximum)
    jitter = min(max(jitter, 0.0), 1.0)
    factor = 1.0 - jitter * min(max(rng(), 0.0), 1.0)
    return min(max(base * factor, 0.0), maximum)


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
        ``(0, max_retry_after]``, otherwise :func:`backoff_delay`."""
        if headers is not None:
            hint = parse_retry_after(headers, now=now)
            if hint is not None and 0 < hint <= self.max_retry_after:
                return hint
        return backoff_delay(
            attempt,
            initial=self.initial_delay,
            maximum=self.max_delay,
            jitter=self.jitter,
            rng=rng,
        )


def is_retryable_error(exc: BaseException, *, retry_gone: bool = False) -> bool:
    """Whether an operation-level retry makes sense for ``exc``.

    Connection errors and timeouts, 408, 409, 429 and 5xx are retryable; other 4xx and
    ``RequestFailedError`` with category ``user`` are not. 410 only when ``retry_gone``
    (sampling re-submits an expired future).
    """
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
        """Layer 2: ``min(2**n, 30)`` s (jitter 0), 300 s total, 410 not retried."""
        return cls(
            base_delay=1.0, max_delay=30.0, jitter=0.0, total_timeout=300.0, retry_gone=False
        )

    def delay(self, attempt: int, rng: Rng = random.random) -> float:
        """``min(base * 2**attempt, max)`` ± ``jitter``, clamped to ``[0, max]``."""
        base = (
            self.max_delay if attempt >= 64 else min(self.base_delay * 2.0**attempt, self.max_delay)
        )
        spread = base * self.jitter * (2.0 * rng() - 1.0)
        return min(max(base + spread, 0.0), self.max_delay)


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
    total timeout passes (then the last error is raised)."""
    cfg = config or RetryConfig.sampling()
    if not cfg.enabled:
        return await call()
    started = clock()
    attempt = 0
    while True:
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
