"""Resolving futures through ``POST /api/v1/retrieve_future`` (protocol.md §2.5, §2.15).

``await poll_future(http, request_id, request_type="ForwardBackward")`` (or
``await APIFutureResolver(http, request_id, ...)``) polls until the result is there:

* 200 ``{"type": "try_again", "queue_state", "queue_state_reason"?, "retry_after_ms"?}`` →
  reports queue-state changes through ``Hooks.on_queue_state_change`` (with a human-readable
  reason), waits ``retry_after_ms`` if given, 1 s when paused, else re-polls at once
  (the server long-polls);
* 200 ``{"status": "pending"}`` → bounded backoff (1 s doubling to 30 s);
* 200 ``{"status": "complete_metadata", "response_payload_size": N}`` → reserves N bytes of
  the tenant's 5 MiB response budget and re-polls with ``allow_metadata_only: false``;
* 200 with an ``error`` key or ``status: failed`` → :class:`tinkex_types.RequestFailedError`
  with its category (terminal for every category, as the official 0.16.1 client);
* 200 ``{"status": "completed", "result": ...}`` → ``result``; any other 200 body → the body;
* 408 → try_again (its body may carry queue state); 5xx → re-polled after
  ``config.poll_backoff`` (1 s doubling to 30 s by default); 429 → re-polled after the
  body's ``retry_after_ms`` or the transport backoff (0.5 s doubling to 10 s; 0.16.1 fails
  here, later SDKs retry: a poll only reads, and failing would report a request the server
  ran as failed, inviting a second run of it); blank 400 → up to 3 immediate re-polls;
  410 → terminal "promise expired"; other statuses → terminal;
* connection errors and poll timeouts → backoff ``min(2**n, 30)`` s, then re-poll.

With a ``timeout`` (argument or ``config.future_timeout``) the loop raises
:class:`tinkex_types.APITimeoutError` naming the request and the elapsed time; each poll's
own timeout (45 s) is cut to the time left. ``Hooks.on_future`` fires once at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import structlog

from tinkex_http._client import HTTPClient, RequestOptions
from tinkex_http._ratelimit import BytesSemaphore, response_byte_limiter
from tinkex_types import (
    NOT_GIVEN,
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    FutureEvent,
    NotGiven,
    QueueStateEvent,
    RequestErrorCategory,
    RequestFailedError,
    status_error_class,
)

__all__ = [
    "QUEUE_STATES",
    "APIFutureResolver",
    "PollPolicy",
    "default_queue_state_reason",
    "poll_future",
]

_log = structlog.get_logger("tinkex.futures")

RETRIEVE_FUTURE_PATH = "/api/v1/retrieve_future"
QUEUE_STATES = ("active", "paused_rate_limit", "paused_capacity", "unknown")
_SAMPLING_TYPES = frozenset({"Sample", "StreamSample", "ComputeLogprobs"})


def default_queue_state_reason(state: str, request_type: str | None = None) -> str:
    """The message shown when the server gives no ``queue_state_reason``."""
    if state == "paused_rate_limit":
        if request_type in _SAMPLING_TYPES:
            return "concurrent sampler weights limit hit"
        return "concurrent training clients rate limit hit"
    if state == "paused_capacity":
        return "Tinker backend is running short on capacity, please wait"
    if state == "active":
        return "the request is queued or running normally"
    return "the server reported an unknown queue state"


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """Timing of the polling loop (seconds)."""

    #: Timeout of one ``retrieve_future`` call.
    http_timeout: float = 45.0
    #: Backoff for connection errors and ``pending``: ``min(initial * 2**n, max)``.
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    #: Wait after a ``try_again`` in a paused state without ``retry_after_ms``.
    paused_delay: float = 1.0
    #: Immediate re-polls allowed for blank 400 answers.
    max_blank_400: int = 3

    def backoff(self, n: int) -> float:
        return min(self.backoff_initial * (2.0 ** min(n, 32)), self.backoff_max)


class APIFutureResolver:
    """Awaitable resolution of one ``request_id``; see the module docstring.

    ``queue_state`` / ``queue_state_reason`` hold the last reported state and ``polls``
    the number of ``retrieve_future`` calls made so far.
    """

    def __init__(
        self,
        http: HTTPClient,
        request_id: str,
        *,
        request_type: str | None = None,
        model_id: str | None = None,
        timeout: float | NotGiven | None = NOT_GIVEN,
        create_roundtrip_time: float | None = None,
        allow_metadata_only: bool = True,
        policy: PollPolicy | None = None,
        response_limiter: BytesSemaphore | None = None,
    ) -> None:
        if not isinstance(request_id, str) or not request_id:
            raise APIResponseValidationError(f"invalid future request_id {request_id!r}")
        self.http = http
        self.request_id = request_id
        self.request_type = request_type
        self.model_id = model_id
        self.timeout = http.config.future_timeout if isinstance(timeout, NotGiven) else timeout
        self.create_roundtrip_time = create_roundtrip_time
        self.allow_metadata_only = allow_metadata_only
        self.policy = policy or PollPolicy()
        self._limiter = response_limiter
        self.queue_state: str | None = None
        self.queue_state_reason: str | None = None
        self.polls = 0
        self._task: asyncio.Future[Any] | None = None

    def __await__(self) -> Generator[Any, None, Any]:
        return self.result().__await__()

    def __repr__(self) -> str:
        return (
            f"APIFutureResolver(request_id={self.request_id!r}, "
            f"request_type={self.request_type!r}, polls={self.polls})"
        )

    # -- queue state ----------------------------------------------------------------------
    def _observe(self, state_raw: Any, reason_raw: Any) -> None:
        if state_raw is None:
            return
        state = str(state_raw).strip().lower()
        if state not in QUEUE_STATES:
            state = "unknown"
        reason = (
            reason_raw.strip()
            if isinstance(reason_raw, str) and reason_raw.strip()
            else default_queue_state_reason(state, self.request_type)
        )
        if (state, reason) == (self.queue_state, self.queue_state_reason):
            return
        previous = self.queue_state
        self.queue_state, self.queue_state_reason = state, reason
        self.http.hooks.on_queue_state_change(
            QueueStateEvent(
                request_id=self.request_id,
                queue_state=state,
                previous_state=previous,
                reason=reason,
                model_id=self.model_id,
                base_url=self.http.config.base_url,
            )
        )

    # -- main loop ------------------------------------------------------------------------
    async def result(self) -> Any:
        """Poll until the future resolves; raises the terminal error otherwise."""
        http = self.http
        started = http.clock()
        outcome = "failed"
        category: str | None = None
        error_text: str | None = None
        try:
            value = await self._loop(started)
            outcome = "resolved"
            return value
        except APITimeoutError as exc:
            outcome = "timed_out" if self._timed_out else "failed"
            error_text = type(exc).__name__
            raise
        except RequestFailedError as exc:
            category = exc.category.value
            error_text = type(exc).__name__
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as exc:
            error_text = type(exc).__name__
            raise
        finally:
            http.hooks.on_future(
                FutureEvent(
                    request_id=self.request_id,
                    outcome=outcome,  # type: ignore[arg-type]
                    duration_s=max(http.clock() - started, 0.0),
                    polls=self.polls,
                    request_type=self.request_type,
                    model_id=self.model_id,
                    category=category,
                    error=error_text,
                )
            )

    _timed_out = False

    def _timeout_error(self, started: float, last: BaseException | None) -> APITimeoutError:
        self._timed_out = True
        elapsed = self.http.clock() - started
        what = self.request_type or "request"
        state = f", last queue state {self.queue_state}" if self.queue_state else ""
        err = APITimeoutError(
            f"Timed out after {elapsed:.1f}s (timeout {self.timeout:g}s) waiting for future "
            f"{self.request_id} ({what}, {self.polls} polls{state})",
            request_id=self.request_id,
        )
        err.__cause__ = last
        return err

    async def _sleep(self, seconds: float, deadline: float | None) -> None:
        if deadline is not None:
            seconds = min(seconds, max(deadline - self.http.clock(), 0.0))
        if seconds > 0:
            await self.http.sleep(seconds)

    async def _loop(self, started: float) -> Any:
        http = self.http
        policy = self.policy
        deadline = started + self.timeout if self.timeout is not None else None
        allow_meta = self.allow_metadata_only
        held = 0
        limiter: BytesSemaphore | None = None
        conn_errors = 0
        server_errors = 0
        blank_400 = 0
        pending = 0
        rate_limited = 0
        last: BaseException | None = None
        try:
            while True:
                poll_timeout = policy.http_timeout
                if deadline is not None:
                    left = deadline - http.clock()
                    if left <= 0:
                        raise self._timeout_error(started, last)
                    poll_timeout = min(poll_timeout, left)
                options = RequestOptions(
                    max_retries=0,
                    timeout=poll_timeout,
                    pool="futures",
                    request_type=self.request_type,
                    iteration=self.polls,
                    create_roundtrip_time=self.create_roundtrip_time if self.polls == 0 else None,
                )
                self.polls += 1
                try:
                    body = await http.post(
                        RETRIEVE_FUTURE_PATH,
                        {"request_id": self.request_id, "allow_metadata_only": allow_meta},
                        options=options,
                    )
                except APIConnectionError as exc:  # includes APITimeoutError of one poll
                    last = exc
                    delay = policy.backoff(conn_errors)
                    conn_errors += 1
                    _log.debug(
                        "future_poll_connection_error",
                        request_id=self.request_id,
                        error=type(exc).__name__,
                        delay_s=delay,
                    )
                    await self._sleep(delay, deadline)
                    continue
                except APIStatusError as exc:
                    conn_errors = 0
                    code = exc.status_code
                    if code == 410:
                        raise status_error_class(410)(
                            f"Promise expired for request {self.request_id}; submit a new request.",
                            status_code=410,
                            request_id=self.request_id,
                            body=exc.body,
                        ) from None
                    if code == 408:
                        blank_400 = 0
                        last = exc
                        if isinstance(exc.body, dict):
                            self._observe(
                                exc.body.get("queue_state"), exc.body.get("queue_state_reason")
                            )
                            await self._sleep(self._try_again_delay(exc.body), deadline)
                        continue
                    if code == 429:
                        last = exc
                        delay = http.retry_policy.delay(rate_limited, rng=http.rng)
                        if isinstance(exc.body, dict):
                            self._observe(
                                exc.body.get("queue_state"), exc.body.get("queue_state_reason")
                            )
                            delay = self._try_again_delay(exc.body) or delay
                        rate_limited += 1
                        await self._sleep(delay, deadline)
                        continue
                    if code >= 500:
                        last = exc
                        backoff = http.config.poll_backoff
                        if backoff is not None:
                            initial, maximum = backoff
                            delay = min(initial * 2.0 ** min(server_errors, 32), maximum)
                            await self._sleep(delay, deadline)
                        server_errors += 1
                        continue
                    if code == 400 and self._blank(exc) and blank_400 < policy.max_blank_400:
                        blank_400 += 1
                        last = exc
                        continue
                    raise
                conn_errors = server_errors = rate_limited = 0
                if not isinstance(body, dict):
                    return body
                if body.get("type") == "try_again":
                    self._observe(body.get("queue_state"), body.get("queue_state_reason"))
                    await self._sleep(self._try_again_delay(body), deadline)
                    continue
                status = body.get("status")
                if "error" in body or status == "failed":
                    raise self._failed(body)
                if status == "pending":
                    await self._sleep(policy.backoff(pending), deadline)
                    pending += 1
                    continue
                if status == "complete_metadata":
                    if not allow_meta:
                        raise APIResponseValidationError(
                            f"retrieve_future for {self.request_id} answered complete_metadata "
                            "although the client asked for the full payload",
                            request_id=self.request_id,
                            body=body,
                        )
                    size = body.get("response_payload_size")
                    held = size if isinstance(size, int) and size > 0 else 0
                    limiter = self._limiter or response_byte_limiter(http.config.tenant_key)
                    await limiter.acquire(held)
                    allow_meta = False
                    continue
                if status == "completed":
                    return body.get("result")
                return body
        finally:
            if limiter is not None:
                limiter.release(held)

    def _try_again_delay(self, body: dict[str, Any]) -> float:
        retry_ms = body.get("retry_after_ms")
        if isinstance(retry_ms, (int, float)) and not isinstance(retry_ms, bool) and retry_ms > 0:
            return float(retry_ms) / 1000.0
        state = str(body.get("queue_state") or "").lower()
        if state in ("paused_rate_limit", "paused_capacity"):
            return self.policy.paused_delay
        return 0.0

    @staticmethod
    def _blank(exc: APIStatusError) -> bool:
        return exc.body in (None, "", {}) or exc.message.strip() in ("", "HTTP 400")

    def _failed(self, body: dict[str, Any]) -> RequestFailedError:
        error = body.get("error")
        category_raw = body.get("category")
        message: str
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("detail") or error)
            category_raw = category_raw or error.get("category")
        elif isinstance(error, str) and error.strip():
            message = error.strip()
        else:
            message = str(body.get("message") or "request failed")
        return RequestFailedError(
            message,
            category=RequestErrorCategory.parse(category_raw),
            request_id=self.request_id,
            body=body,
        )


async def poll_future(
    http: HTTPClient,
    request_id: str,
    *,
    request_type: str | None = None,
    model_id: str | None = None,
    timeout: float | NotGiven | None = NOT_GIVEN,  # noqa: ASYNC109 - a polling deadline
    create_roundtrip_time: float | None = None,
    allow_metadata_only: bool = True,
    policy: PollPolicy | None = None,
) -> Any:
    """Poll ``request_id`` until it resolves and return the result payload (a dict)."""
    return await APIFutureResolver(
        http,
        request_id,
        request_type=request_type,
        model_id=model_id,
        timeout=timeout,
        create_roundtrip_time=create_roundtrip_time,
        allow_metadata_only=allow_metadata_only,
        policy=policy,
    )
