"""Resolving futures through ``POST /api/v1/retrieve_future`` (protocol.md §2.5, §2.15).

``await poll_future(http, request_id, request_type="ForwardBackward")`` (or
``await APIFutureResolver(http, request_id, ...)``) polls until the result is there:

* 200 ``{"type": "try_again", "queue_state", "queue_state_reason"?, "retry_after_ms"?,
  "queue_position"?, "estimated_wait_s"?}`` → reports changes of the queue state, the
  position or the estimate through ``Hooks.on_queue_state_change`` (with a human-readable
  reason; docs/queue.md), waits ``retry_after_ms`` if given, 1 s when paused, else re-polls
  at once (the server long-polls);
* 200 ``{"status": "pending"}`` → bounded backoff (1 s doubling to 30 s);
* 200 ``{"status": "complete_metadata", "response_payload_size": N}`` → reserves N bytes of
  the tenant's 5 MiB response budget and re-polls with ``allow_metadata_only: false``;
* 200 with an ``error`` key or ``status: failed`` → :class:`tinkex_types.RequestFailedError`
  with its category (terminal for every category, as the official 0.16.1 client);
* 200 ``{"status": "completed", "result": ...}`` → ``result``; any other 200 body → the body;
  a 200 in a binary media type (protobuf, by ``Content-Type``) is the result itself, decoded
  into ``result_model`` by the codec seam (:mod:`tinkex_http._wire`); ``accept`` names the
  media types the poll asks for (default: JSON only);
* 408 → try_again (its body may carry queue state); 5xx → re-polled after
  ``config.poll_backoff`` (1 s doubling to 30 s by default); 429 → re-polled after the
  body's ``retry_after_ms`` or the transport backoff (0.5 s doubling to 10 s; 0.16.1 fails
  here, later SDKs retry: a poll only reads, and failing would report a request the server
  ran as failed, inviting a second run of it); blank 400 → up to 3 immediate re-polls;
  410 → terminal "promise expired"; other statuses → terminal;
* connection errors and poll timeouts → backoff ``min(2**n, 30)`` s, then re-poll.

Every wait is a :class:`tinkex_types.Backoff` (``PollPolicy.backoff_for``,
``config.poll_backoff``, the transport's ``RetryPolicy.backoff``). The polls themselves
are sent with 0 transport retries: this loop is their only retry layer.

With a ``timeout`` (argument or ``config.future_timeout``) the loop raises
:class:`tinkex_types.APITimeoutError` naming the request and the elapsed time; each poll's
own timeout (45 s) is cut to the time left; that error is marked as retried by the
``"polling"`` layer (:func:`tinkex_http.retried_by`), so no outer loop re-submits after it.
``Hooks.on_future`` fires once at the end.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from tinkex_http._client import HTTPClient, RequestOptions
from tinkex_http._logs import get_logger
from tinkex_http._ratelimit import BytesSemaphore, response_byte_limiter
from tinkex_http._retry import mark_retried
from tinkex_http._wire import accept_header
from tinkex_types import (
    NOT_GIVEN,
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    Backoff,
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

_log = get_logger("tinkex.futures")

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

    @property
    def backoff_for(self) -> Backoff:
        """The backoff of connection errors and ``pending``: doubling, no jitter."""
        return Backoff(self.backoff_initial, self.backoff_max, jitter=0.0)

    def backoff(self, n: int) -> float:
        """Seconds before re-poll ``n`` (0-based) of :attr:`backoff_for`."""
        return self.backoff_for.cap(n)


_AGAIN: Any = object()  # "poll again": a result is never this object


@dataclass
class _PollState:
    """Counters of one resolution (each resets when its condition clears)."""

    allow_meta: bool
    conn_errors: int = 0
    server_errors: int = 0
    blank_400: int = 0
    pending: int = 0
    rate_limited: int = 0
    held: int = 0
    limiter: BytesSemaphore | None = None
    last: BaseException | None = field(default=None, repr=False)


class APIFutureResolver:
    """Awaitable resolution of one ``request_id``; see the module docstring.

    ``queue_state`` / ``queue_state_reason`` / ``queue_position`` / ``estimated_wait_s``
    hold the last reported state and place, and ``polls`` the number of
    ``retrieve_future`` calls made so far.
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
        result_model: type[BaseModel] | None = None,
        accept: Sequence[str] = (),
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
        self.queue_position: int | None = None
        self.estimated_wait_s: float | None = None
        self.polls = 0
        #: The model a binary (protobuf) result decodes into; JSON results stay plain data.
        self.result_model = result_model
        #: Media types asked for in ``Accept`` besides JSON, preferred first.
        self.accept = tuple(accept)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.result().__await__()

    def __repr__(self) -> str:
        return (
            f"APIFutureResolver(request_id={self.request_id!r}, "
            f"request_type={self.request_type!r}, polls={self.polls})"
        )

    # -- queue state ----------------------------------------------------------------------
    def _observe(self, body: dict[str, Any]) -> None:
        """Report the queue state and place of a ``try_again`` body when any changed."""
        state_raw, reason_raw = body.get("queue_state"), body.get("queue_state_reason")
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
        position = _count(body.get("queue_position"))
        wait = _seconds(body.get("estimated_wait_s")) if position is not None else None
        now = (state, reason, position, wait)
        if now == (self.queue_state, self.queue_state_reason, *self._place()):
            return
        previous = self.queue_state
        self.queue_state, self.queue_state_reason = state, reason
        self.queue_position, self.estimated_wait_s = position, wait
        self.http.hooks.on_queue_state_change(
            QueueStateEvent(
                request_id=self.request_id,
                queue_state=state,
                previous_state=previous,
                reason=reason,
                model_id=self.model_id,
                base_url=self.http.config.base_url,
                request_type=self.request_type,
                queue_position=position,
                estimated_wait_s=wait,
            )
        )

    def _place(self) -> tuple[int | None, float | None]:
        return self.queue_position, self.estimated_wait_s

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
        mark_retried(err, "polling")
        return err

    async def _sleep(self, seconds: float, deadline: float | None) -> None:
        if deadline is not None:
            seconds = min(seconds, max(deadline - self.http.clock(), 0.0))
        if seconds > 0:
            await self.http.sleep(seconds)

    async def _loop(self, started: float) -> Any:
        http = self.http
        deadline = started + self.timeout if self.timeout is not None else None
        state = _PollState(allow_meta=self.allow_metadata_only)
        try:
            while True:
                poll_timeout = self.policy.http_timeout
                if deadline is not None:
                    left = deadline - http.clock()
                    if left <= 0:
                        raise self._timeout_error(started, state.last)
                    poll_timeout = min(poll_timeout, left)
                try:
                    body = await self._poll(state, poll_timeout)
                except APIConnectionError as exc:  # includes APITimeoutError of one poll
                    await self._on_connection_error(exc, state, deadline)
                    continue
                except APIStatusError as exc:
                    state.conn_errors = 0
                    await self._on_status_error(exc, state, deadline)
                    continue
                state.conn_errors = state.server_errors = state.rate_limited = 0
                value = await self._on_body(body, state, deadline)
                if value is not _AGAIN:
                    return value
        finally:
            if state.limiter is not None:
                state.limiter.release(state.held)

    async def _poll(self, state: _PollState, poll_timeout: float) -> Any:
        """One ``retrieve_future`` call (0 transport retries: this loop retries)."""
        headers = {"accept": accept_header(self.accept)} if self.accept else None
        options = RequestOptions(
            max_retries=0,
            timeout=poll_timeout,
            pool="futures",
            request_type=self.request_type,
            iteration=self.polls,
            create_roundtrip_time=self.create_roundtrip_time if self.polls == 0 else None,
            headers=headers,
        )
        self.polls += 1
        return await self.http.post(
            RETRIEVE_FUTURE_PATH,
            {"request_id": self.request_id, "allow_metadata_only": state.allow_meta},
            options=options,
            result_model=self.result_model,
        )

    async def _on_connection_error(
        self, exc: APIConnectionError, state: _PollState, deadline: float | None
    ) -> None:
        state.last = exc
        delay = self.policy.backoff(state.conn_errors)
        state.conn_errors += 1
        _log.debug(
            "future_poll_connection_error",
            request_id=self.request_id,
            error=type(exc).__name__,
            delay_s=delay,
        )
        await self._sleep(delay, deadline)

    async def _on_status_error(
        self, exc: APIStatusError, state: _PollState, deadline: float | None
    ) -> None:
        """Wait as the status asks and return (poll again), or raise the terminal error."""
        code = exc.status_code
        body = exc.body if isinstance(exc.body, dict) else None
        if code == 410:
            raise status_error_class(410)(
                f"Promise expired for request {self.request_id}; submit a new request.",
                status_code=410,
                request_id=self.request_id,
                body=exc.body,
            ) from None
        if code == 400 and self._blank(exc) and state.blank_400 < self.policy.max_blank_400:
            state.blank_400 += 1
            state.last = exc
            return
        if code not in (408, 429) and code < 500:
            raise exc
        state.last = exc
        delay = 0.0
        if code == 408:
            state.blank_400 = 0
        elif code == 429:
            delay = self.http.retry_policy.delay(state.rate_limited, rng=self.http.rng)
            state.rate_limited += 1
        else:
            backoff = self.http.config.poll_backoff
            if backoff is not None:
                delay = Backoff(backoff[0], backoff[1], jitter=0.0).cap(state.server_errors)
            state.server_errors += 1
        if body is not None and code in (408, 429):
            self._observe(body)
            delay = self._try_again_delay(body) or (delay if code == 429 else 0.0)
        await self._sleep(delay, deadline)

    async def _on_body(self, body: Any, state: _PollState, deadline: float | None) -> Any:
        """The result, or :data:`_AGAIN` after waiting as the body asks."""
        if not isinstance(body, dict):
            return body
        if body.get("type") == "try_again":
            self._observe(body)
            await self._sleep(self._try_again_delay(body), deadline)
            return _AGAIN
        status = body.get("status")
        if "error" in body or status == "failed":
            raise self._failed(body)
        if status == "pending":
            await self._sleep(self.policy.backoff(state.pending), deadline)
            state.pending += 1
            return _AGAIN
        if status == "complete_metadata":
            await self._reserve(body, state)
            return _AGAIN
        if status == "completed":
            return body.get("result")
        return body

    async def _reserve(self, body: dict[str, Any], state: _PollState) -> None:
        """Reserve the announced payload size, then ask for the full payload."""
        if not state.allow_meta:
            raise APIResponseValidationError(
                f"retrieve_future for {self.request_id} answered complete_metadata "
                "although the client asked for the full payload",
                request_id=self.request_id,
                body=body,
            )
        size = body.get("response_payload_size")
        state.held = size if isinstance(size, int) and size > 0 else 0
        state.limiter = self._limiter or response_byte_limiter(self.http.config.tenant_key)
        await state.limiter.acquire(state.held)
        state.allow_meta = False

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


def _count(value: Any) -> int | None:
    """A ``queue_position`` as sent: a non-negative integer, else ignored (``None``)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _seconds(value: Any) -> float | None:
    """An ``estimated_wait_s`` as sent: a finite non-negative number, else ``None``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


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
    result_model: type[BaseModel] | None = None,
    accept: Sequence[str] = (),
) -> Any:
    """Poll ``request_id`` until it resolves and return the result payload (a dict, or a
    ``result_model`` when the server answered a binary media type from ``accept``)."""
    return await APIFutureResolver(
        http,
        request_id,
        request_type=request_type,
        model_id=model_id,
        timeout=timeout,
        create_roundtrip_time=create_roundtrip_time,
        allow_metadata_only=allow_metadata_only,
        policy=policy,
        result_model=result_model,
        accept=accept,
    )
