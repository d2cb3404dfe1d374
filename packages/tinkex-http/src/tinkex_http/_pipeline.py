"""One logical request through the transport layer: the plan (pool, timeout, retry budget,
encoded body, headers) and the attempt loop of :class:`tinkex_http.HTTPClient`.

The loop retries what :class:`~tinkex_http.RetryPolicy` says (transport errors; 408, 409,
429, 5xx; ``x-should-retry``) up to the plan's budget (``max_retries``, extended by the time
an enclosing :func:`tinkex_http.retry_async` lends), fires ``Hooks.on_request`` once per
attempt and leaves every answer it gives up on marked with its budget
(:data:`RETRIED_EXTENSION`), so the error raised from it is final for the outer layers
(:func:`tinkex_http.retried_by`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from tinkex_http._breaker import guard as breaker_guard
from tinkex_http._config import redact_headers
from tinkex_http._endpoints import endpoint_spec
from tinkex_http._logs import get_logger
from tinkex_http._messages import RequestOptions, fmt_seconds, request_headers
from tinkex_http._retry import mark_retried, transport_time_left
from tinkex_http._scrub import scrub_request
from tinkex_http._wire import EncodedBody
from tinkex_types import APIConnectionError, APITimeoutError, RequestEvent

if TYPE_CHECKING:
    from tinkex_http._client import HTTPClient

__all__ = ["RETRIED_EXTENSION", "Plan", "make_plan", "send"]

_log = get_logger("tinkex.http")

#: ``response.extensions`` key: set when the transport had a retry budget for the request.
RETRIED_EXTENSION = "tinkex.transport_retries"


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one logical request needs, fixed before the first attempt."""

    method: str
    path: str
    pool: str
    timeout: float
    max_retries: int
    body: EncodedBody = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)
    params: Mapping[str, Any] | None
    opts: RequestOptions

    @property
    def sent(self) -> int:
        return len(self.body.content or b"")


def make_plan(
    http: HTTPClient, method: str, path: str, body: EncodedBody, opts: RequestOptions
) -> Plan:
    """Resolve pool, timeout and retry budget (option > endpoint > client) and headers."""
    spec = endpoint_spec(path)
    if opts.max_retries is not None:
        max_retries = opts.max_retries
    elif spec.max_retries is not None:
        max_retries = spec.max_retries
    else:
        max_retries = http.retry_policy.max_retries
    headers = request_headers(http.static_headers, method, path, opts)
    if body.content_type is not None:
        headers["content-type"] = body.content_type
    if body.content_encoding is not None:
        headers["content-encoding"] = body.content_encoding
    params: dict[str, Any] | None = None
    if http.config.default_query or opts.params:
        params = {**http.config.default_query, **(opts.params or {})}
    return Plan(
        method=method,
        path=path,
        pool=opts.pool or spec.pool,
        timeout=opts.timeout or spec.timeout or http.config.timeout,
        max_retries=max_retries,
        body=body,
        headers=headers,
        params=params,
        opts=opts,
    )


def _build(http: HTTPClient, plan: Plan, attempt: int) -> httpx.Request:
    headers = dict(plan.headers)
    for name, secret in http.secret_headers.items():
        headers.setdefault(name, secret.get_secret_value())
    headers["x-stainless-retry-count"] = str(attempt)
    headers["x-stainless-read-timeout"] = fmt_seconds(plan.timeout)
    if http.config.otel_propagate:
        http.hooks.inject_headers(headers)
    request = http.build_request(
        plan.pool,
        plan.method,
        plan.path,
        content=plan.body.content,
        headers=headers,
        params=plan.params,
        timeout=plan.timeout,
    )
    if http.config.dump_headers:
        _log.debug(
            "http_request",
            method=plan.method,
            url=str(request.url),
            headers=redact_headers(dict(request.headers)),
            body_bytes=plan.sent,
        )
    return request


def _emit(
    http: HTTPClient,
    plan: Plan,
    attempt: int,
    started: float,
    *,
    will_retry: bool,
    status: int | None = None,
    error: str | None = None,
    received: int = 0,
) -> None:
    http.hooks.on_request(
        RequestEvent(
            method=plan.method,
            path=plan.path.split("?", 1)[0],
            attempt=attempt,
            duration_s=max(http.clock() - started, 0.0),
            status_code=status,
            error=error,
            request_type=plan.opts.request_type,
            will_retry=will_retry,
            bytes_sent=plan.sent,
            bytes_received=received,
            base_url=http.config.base_url,
        )
    )


def transport_error(
    http: HTTPClient, exc: httpx.TransportError, plan: Plan, attempt: int
) -> APIConnectionError:
    """The error of a transport failure the loop gave up on (the API key scrubbed)."""
    what = f"{plan.method} {plan.path}"
    tries = f"after {attempt + 1} attempt{'s' if attempt else ''}"
    name = type(exc).__name__
    error: APIConnectionError
    if isinstance(exc, httpx.TimeoutException):
        limit = fmt_seconds(plan.timeout)
        error = APITimeoutError(http.scrub(f"{what} timed out ({name}, {limit} s timeout) {tries}"))
    else:
        detail = str(exc) or name
        error = APIConnectionError(
            http.scrub(f"{what} failed to connect {tries}: {name}: {detail}")
        )
    if plan.max_retries > 0:
        mark_retried(error, "transport")
    return error


async def send(http: HTTPClient, plan: Plan, *, stream: bool) -> httpx.Response:
    """Send ``plan`` with transport retries; the last answer is returned whatever its status
    (read unless ``stream`` and 2xx); a transport failure past the budget raises."""
    http.client_for(plan.pool)  # a closed client refuses here, before any attempt
    policy = http.retry_policy
    breaker = breaker_guard(http.config, plan.path)
    attempt = 0
    while True:
        breaker.before()  # an open circuit breaker refuses the attempt (CircuitOpenError)
        request = _build(http, plan, attempt)
        retry = _may_retry(plan, attempt)
        started = http.clock()
        try:
            try:
                response = await http.dispatch(plan.pool, request)
                if not stream or response.status_code >= 300:
                    await response.aread()
            except BaseException:
                scrub_request(request)  # whatever escapes carries no secret header
                raise
        except httpx.TransportError as exc:
            scrub_request(request)  # exc.request is this request: no key past this point
            _emit(http, plan, attempt, started, error=type(exc).__name__, will_retry=retry)
            breaker.failure(type(exc).__name__)
            if not retry:
                raise transport_error(http, exc, plan, attempt) from None
            delay = policy.delay(attempt, rng=http.rng)
            _log.debug(
                "http_retry",
                method=plan.method,
                path=plan.path,
                attempt=attempt,
                error=type(exc).__name__,
                delay_s=round(delay, 3),
            )
        else:
            status = response.status_code
            breaker.answered(status)
            retry = retry and status >= 400 and policy.should_retry_status(status, response.headers)
            read = not stream or status >= 300
            _emit(
                http,
                plan,
                attempt,
                started,
                status=status,
                will_retry=retry,
                received=len(response.content) if read else 0,
            )
            if not retry:
                response.extensions[RETRIED_EXTENSION] = plan.max_retries
                return response
            delay = policy.delay(attempt, response.headers, rng=http.rng, now=http.wall_clock)
            _log.debug(
                "http_retry",
                method=plan.method,
                path=plan.path,
                attempt=attempt,
                status=status,
                delay_s=round(delay, 3),
            )
            await response.aclose()
        await http.sleep(_within_budget(plan, attempt, delay))
        attempt += 1


def _may_retry(plan: Plan, attempt: int) -> bool:
    """Within the budget: ``max_retries``, extended by the time an enclosing
    :func:`tinkex_http.retry_async` lends (never for a request with no budget)."""
    if attempt < plan.max_retries:
        return True
    return plan.max_retries > 0 and transport_time_left() > 0


def _within_budget(plan: Plan, attempt: int, delay: float) -> float:
    """Past ``max_retries`` a wait never outlasts the lent time."""
    return delay if attempt < plan.max_retries else min(delay, transport_time_left())
