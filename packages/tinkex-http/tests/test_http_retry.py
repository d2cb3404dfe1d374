"""Transport-layer retry rules, idempotency keys and backoff bounds."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinkex_http import (
    HTTPClient,
    RetryConfig,
    RetryPolicy,
    is_retryable_error,
    parse_retry_after,
    retried_by,
    retry_async,
    transport_time_left,
)
from tinkex_types import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    Backoff,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestErrorCategory,
    RequestFailedError,
    UnprocessableEntityError,
)

MakeClient = Callable[..., HTTPClient]


def scripted(
    responses: list[Any], seen: list[httpx.Request]
) -> Callable[[httpx.Request], httpx.Response]:
    """A handler answering from ``responses`` in order (an exception instance is raised)."""
    it = iter(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = next(it)
        if isinstance(item, Exception):
            raise item
        return item

    return handler


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
async def test_retryable_statuses_are_retried(
    make_client: MakeClient, clock: Any, status: int
) -> None:
    seen: list[httpx.Request] = []
    handler = scripted(
        [httpx.Response(status, json={"detail": "x"}), httpx.Response(200, json={"ok": 1})], seen
    )
    async with make_client(handler) as http:
        assert await http.post("/api/v1/forward", {"a": 1}) == {"ok": 1}
    assert len(seen) == 2
    assert len(clock.sleeps) == 1


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (404, NotFoundError),
        (422, UnprocessableEntityError),
        (403, PermissionDeniedError),
        (402, APIStatusError),
    ],
)
async def test_other_statuses_fail_at_once_with_the_mapped_error(
    make_client: MakeClient, clock: Any, status: int, cls: type[APIStatusError]
) -> None:
    seen: list[httpx.Request] = []
    handler = scripted(
        [
            httpx.Response(
                status, json={"detail": f"bad thing {status}"}, headers={"x-request-id": "rq-1"}
            )
        ],
        seen,
    )
    async with make_client(handler) as http:
        with pytest.raises(cls) as info:
            await http.post("/api/v1/forward", {})
    assert type(info.value) is cls
    assert info.value.status_code == status
    assert info.value.message == f"bad thing {status}"
    assert info.value.request_id == "rq-1"
    assert len(seen) == 1
    assert clock.sleeps == []


async def test_exhausted_retries_raise_the_last_status(make_client: MakeClient, clock: Any) -> None:
    seen: list[httpx.Request] = []
    handler = scripted([httpx.Response(503, json={"message": "down"})] * 4, seen)
    async with make_client(handler, max_retries=3) as http:
        with pytest.raises(InternalServerError, match="down"):
            await http.get("/api/v1/healthz")
    assert len(seen) == 4
    assert [r.headers["x-stainless-retry-count"] for r in seen] == ["0", "1", "2", "3"]
    assert len(clock.sleeps) == 3


async def test_default_max_retries_is_ten(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []
    handler = scripted([httpx.Response(500)] * 11, seen)
    async with make_client(handler) as http:
        with pytest.raises(InternalServerError):
            await http.get("/api/v1/healthz")
    assert len(seen) == 11


async def test_default_policy_comes_from_max_retries_and_retry_backoff(
    make_client: MakeClient, clock: Any
) -> None:
    async with make_client(lambda r: httpx.Response(200)) as http:
        assert http.retry_policy == RetryPolicy(max_retries=10, initial_delay=0.5, max_delay=10.0)
    seen: list[httpx.Request] = []
    handler = scripted([httpx.Response(503)] * 5, seen)
    async with make_client(
        handler, rng=lambda: 0.0, max_retries=4, env={"TINKEX_RETRY_BACKOFF": "0.02,0.05"}
    ) as http:
        assert http.retry_policy == RetryPolicy(max_retries=4, initial_delay=0.02, max_delay=0.05)
        with pytest.raises(InternalServerError):
            await http.get("/api/v1/healthz")
    assert len(seen) == 5
    assert clock.sleeps == [0.02, 0.04, 0.05, 0.05]


async def test_explicit_retry_policy_beats_the_config(hooks: Any) -> None:
    from tinkex_http import Config

    policy = RetryPolicy(max_retries=1, initial_delay=3.0, max_delay=4.0)
    config = Config(api_key="tml-x", retry_backoff=(0.1, 0.2), env={})
    async with HTTPClient(config, hooks=hooks, retry_policy=policy) as http:
        assert http.retry_policy is policy


@pytest.mark.parametrize(
    ("path", "attempts"),
    [
        ("/api/v1/asample", 1),
        ("/api/v1/retrieve_future", 1),
        ("/api/v1/session_heartbeat", 1),
        ("/api/v1/telemetry", 2),
        ("/api/v1/training_runs/r/checkpoints/weights/c/archive", 1),
        ("/api/v1/create_session", 4),
    ],
)
async def test_per_endpoint_retry_overrides(
    make_client: MakeClient, path: str, attempts: int
) -> None:
    seen: list[httpx.Request] = []
    handler = scripted([httpx.Response(503)] * 10, seen)
    async with make_client(handler, max_retries=3) as http:
        with pytest.raises(InternalServerError):
            await http.post(path, {})
    assert len(seen) == attempts


async def test_per_request_option_beats_endpoint_default(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []
    handler = scripted([httpx.Response(503)] * 10, seen)
    async with make_client(handler) as http:
        with pytest.raises(InternalServerError):
            await http.post("/api/v1/asample", {}, max_retries=2)
    assert len(seen) == 3


async def test_retry_after_seconds_header(make_client: MakeClient, clock: Any) -> None:
    seen: list[httpx.Request] = []
    handler = scripted(
        [httpx.Response(429, headers={"retry-after": "7"}), httpx.Response(200, json={})], seen
    )
    async with make_client(handler) as http:
        await http.get("/api/v1/healthz")
    assert clock.sleeps == [7.0]


async def test_retry_after_ms_header_wins(make_client: MakeClient, clock: Any) -> None:
    seen: list[httpx.Request] = []
    handler = scripted(
        [
            httpx.Response(503, headers={"retry-after-ms": "1500", "retry-after": "9"}),
            httpx.Response(200, json={}),
        ],
        seen,
    )
    async with make_client(handler) as http:
        await http.get("/api/v1/healthz")
    assert clock.sleeps == [1.5]


async def test_retry_after_http_date(make_client: MakeClient, clock: Any) -> None:
    when = email.utils.formatdate(clock.wall() + 12, usegmt=True)
    seen: list[httpx.Request] = []
    handler = scripted(
        [httpx.Response(429, headers={"retry-after": when}), httpx.Response(200, json={})], seen
    )
    async with make_client(handler) as http:
        await http.get("/api/v1/healthz")
    assert len(clock.sleeps) == 1
    assert 11.0 <= clock.sleeps[0] <= 12.0


@pytest.mark.parametrize("hint", ["0", "-3", "61", "3600", "garbage"])
async def test_out_of_range_retry_after_falls_back_to_backoff(
    make_client: MakeClient, clock: Any, hint: str
) -> None:
    seen: list[httpx.Request] = []
    handler = scripted(
        [httpx.Response(429, headers={"retry-after": hint}), httpx.Response(200, json={})], seen
    )
    async with make_client(handler, rng=lambda: 0.0) as http:
        await http.get("/api/v1/healthz")
    assert clock.sleeps == [0.5]  # RetryPolicy().backoff at attempt 0, no jitter


async def test_x_should_retry_true_retries_a_400(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []
    handler = scripted(
        [
            httpx.Response(400, headers={"x-should-retry": "true"}),
            httpx.Response(200, json={"ok": True}),
        ],
        seen,
    )
    async with make_client(handler) as http:
        assert await http.post("/api/v1/forward", {}) == {"ok": True}
    assert len(seen) == 2


async def test_x_should_retry_false_stops_a_503(make_client: MakeClient, clock: Any) -> None:
    seen: list[httpx.Request] = []
    handler = scripted([httpx.Response(503, headers={"x-should-retry": "false"})], seen)
    async with make_client(handler) as http:
        with pytest.raises(InternalServerError):
            await http.post("/api/v1/forward", {})
    assert len(seen) == 1
    assert clock.sleeps == []


async def test_x_should_retry_true_still_bounded_by_max_retries(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []
    handler = scripted([httpx.Response(400, headers={"x-should-retry": "true"})] * 5, seen)
    async with make_client(handler, max_retries=2) as http:
        with pytest.raises(BadRequestError):
            await http.post("/api/v1/forward", {})
    assert len(seen) == 3


async def test_transport_errors_are_retried(make_client: MakeClient, clock: Any) -> None:
    seen: list[httpx.Request] = []
    handler = scripted(
        [
            httpx.ConnectError("refused"),
            httpx.ReadError("reset"),
            httpx.Response(200, json={"v": 1}),
        ],
        seen,
    )
    async with make_client(handler) as http:
        assert await http.post("/api/v1/forward", {}) == {"v": 1}
    assert len(seen) == 3
    assert len(clock.sleeps) == 2


async def test_transport_error_after_retries_is_a_connection_error(
    make_client: MakeClient, recorder: Any, api_key: str
) -> None:
    seen: list[httpx.Request] = []
    handler = scripted([httpx.ConnectError("refused")] * 3, seen)
    async with make_client(handler, max_retries=2) as http:
        with pytest.raises(APIConnectionError) as info:
            await http.post("/api/v1/forward", {})
    assert not isinstance(info.value, APITimeoutError)
    assert "after 3 attempts" in str(info.value)
    assert api_key not in str(info.value)
    assert [e.will_retry for e in recorder.requests] == [True, True, False]
    assert all(e.error == "ConnectError" for e in recorder.requests)


async def test_timeouts_become_api_timeout_error(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []
    handler = scripted([httpx.ReadTimeout("slow")] * 2, seen)
    async with make_client(handler, max_retries=1) as http:
        with pytest.raises(APITimeoutError, match="timed out"):
            await http.post("/api/v1/forward", {})
    assert len(seen) == 2


async def test_idempotency_key_reused_across_retries_and_fresh_per_request(
    make_client: MakeClient,
) -> None:
    seen: list[httpx.Request] = []
    handler = scripted(
        [
            httpx.Response(500),
            httpx.Response(429),
            httpx.Response(200, json={}),
            httpx.Response(200, json={}),
        ],
        seen,
    )
    async with make_client(handler) as http:
        await http.post("/api/v1/forward", {})
        await http.post("/api/v1/forward", {})
    keys = [r.headers["x-idempotency-key"] for r in seen]
    assert keys[0] == keys[1] == keys[2]
    assert keys[3] != keys[0]
    assert all(re.fullmatch(r"[0-9a-f]{32}", k) for k in keys)


async def test_idempotency_key_can_be_given_or_omitted_and_gets_skip_it(
    make_client: MakeClient,
) -> None:
    seen: list[httpx.Request] = []
    handler = scripted([httpx.Response(200, json={})] * 3, seen)
    async with make_client(handler) as http:
        await http.post("/api/v1/forward", {}, idempotency_key="my-key")
        await http.post("/api/v1/forward", {}, idempotency_key=None)
        await http.get("/api/v1/healthz")
    assert seen[0].headers["x-idempotency-key"] == "my-key"
    assert "x-idempotency-key" not in seen[1].headers
    assert "x-idempotency-key" not in seen[2].headers


async def test_on_request_fires_once_per_attempt(make_client: MakeClient, recorder: Any) -> None:
    seen: list[httpx.Request] = []
    handler = scripted([httpx.Response(502), httpx.Response(200, json={"a": 1})], seen)
    async with make_client(handler) as http:
        await http.post("/api/v1/forward", {"x": 1}, request_type="Forward")
    events = recorder.requests
    assert [(e.attempt, e.status_code, e.will_retry) for e in events] == [
        (0, 502, True),
        (1, 200, False),
    ]
    assert all(e.path == "/api/v1/forward" and e.method == "POST" for e in events)
    assert events[0].request_type == "Forward"
    assert events[1].bytes_sent == len(b'{"x":1}')
    assert events[1].bytes_received == len(b'{"a":1}')


def test_retry_policy_decisions() -> None:
    policy = RetryPolicy()
    for status in (408, 409, 429, 500, 599):
        assert policy.should_retry_status(status, {})
    for status in (400, 401, 403, 404, 410, 422):
        assert not policy.should_retry_status(status, {})
    assert policy.should_retry_status(404, {"x-should-retry": "TRUE"})
    assert not policy.should_retry_status(500, {"x-should-retry": "false"})
    assert policy.should_retry_status(500, {"x-should-retry": "unclear"})


def test_parse_retry_after_variants() -> None:
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "tomorrow-ish"}) is None
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=lambda: 1_000_000.0) == pytest.approx(30.0)


def test_transport_backoff_sequence_without_jitter() -> None:
    backoff = RetryPolicy().backoff
    assert backoff == Backoff(0.5, 10.0, 0.25, jitter_mode="down")
    delays = [RetryPolicy().delay(n, rng=lambda: 0.0) for n in range(8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert RetryPolicy().delay(0, rng=lambda: 1.0) == 0.375


@settings(max_examples=200, deadline=None)
@given(
    attempt=st.integers(min_value=-5, max_value=10_000),
    initial=st.floats(min_value=0.0, max_value=100.0),
    extra=st.floats(min_value=0.0, max_value=1000.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    r=st.floats(min_value=-1.0, max_value=2.0),
)
def test_transport_delay_always_within_bounds(
    attempt: int, initial: float, extra: float, jitter: float, r: float
) -> None:
    policy = RetryPolicy(initial_delay=initial, max_delay=initial + extra, jitter=jitter)
    assert 0.0 <= policy.delay(attempt, rng=lambda: r) <= initial + extra


@settings(max_examples=200, deadline=None)
@given(
    attempt=st.integers(min_value=0, max_value=5000),
    base=st.floats(min_value=0.001, max_value=10.0),
    extra=st.floats(min_value=0.0, max_value=100.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    r=st.floats(min_value=0.0, max_value=1.0),
)
def test_retry_config_delay_within_bounds(
    attempt: int, base: float, extra: float, jitter: float, r: float
) -> None:
    cfg = RetryConfig(base_delay=base, max_delay=base + extra, jitter=jitter)
    assert 0.0 <= cfg.delay(attempt, lambda: r) <= base + extra


def test_retry_config_validation() -> None:
    from tinkex_types import TinkexValidationError

    with pytest.raises(TinkexValidationError, match="jitter"):
        RetryConfig(jitter=1.5)
    with pytest.raises(TinkexValidationError, match="max_delay"):
        RetryConfig(base_delay=2.0, max_delay=1.0)


def test_is_retryable_error() -> None:
    assert is_retryable_error(APIConnectionError())
    assert is_retryable_error(APITimeoutError())
    assert is_retryable_error(RateLimitError("x", status_code=429))
    assert is_retryable_error(ConflictError("x", status_code=409))
    assert is_retryable_error(InternalServerError("x", status_code=500))
    assert not is_retryable_error(BadRequestError("x", status_code=400))
    assert not is_retryable_error(APIStatusError("gone", status_code=410))
    assert is_retryable_error(APIStatusError("gone", status_code=410), retry_gone=True)
    assert not is_retryable_error(RequestFailedError("x", category=RequestErrorCategory.SERVER))
    assert not is_retryable_error(ValueError("x"))


async def test_retry_async_retries_then_succeeds(clock: Any) -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise RateLimitError("slow down", status_code=429)
        return "done"

    result = await retry_async(
        flaky, RetryConfig.sampling(), clock=clock, sleep=clock.sleep, rng=lambda: 0.5
    )
    assert result == "done"
    assert clock.sleeps == [0.5, 1.0, 2.0]


async def test_retry_async_stops_on_user_errors_and_on_total_timeout(clock: Any) -> None:
    async def bad() -> None:
        raise BadRequestError("no", status_code=400)

    with pytest.raises(BadRequestError):
        await retry_async(bad, RetryConfig.operation(), clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []

    async def down() -> None:
        raise InternalServerError("down", status_code=503)

    with pytest.raises(InternalServerError):
        await retry_async(down, RetryConfig.operation(), clock=clock, sleep=clock.sleep)
    assert sum(clock.sleeps) <= 300.0
    assert clock.sleeps[:5] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert max(clock.sleeps) == 30.0


async def test_retry_async_max_retries_and_disabled(clock: Any) -> None:
    calls = 0

    async def fail() -> None:
        nonlocal calls
        calls += 1
        raise APIConnectionError()

    with pytest.raises(APIConnectionError):
        await retry_async(fail, RetryConfig(max_retries=2), clock=clock, sleep=clock.sleep)
    assert calls == 3
    calls = 0
    with pytest.raises(APIConnectionError):
        await retry_async(fail, RetryConfig(enabled=False), clock=clock, sleep=clock.sleep)
    assert calls == 1


async def test_operation_layer_does_not_rerun_the_transport_budget(
    make_client: MakeClient, clock: Any
) -> None:
    """The operation loop lends its 300 s to the transport instead of re-running it: one
    loop of attempts (retry counts 0, 1, 2, ... never restarting), then a final error."""
    seen: list[httpx.Request] = []
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503, json={"detail": "down"})

    async with make_client(handler, max_retries=2) as http:

        async def operation() -> Any:
            nonlocal calls
            calls += 1
            return await http.post("/api/v1/forward", {})

        with pytest.raises(InternalServerError) as info:
            await retry_async(operation, RetryConfig.operation(), clock=clock, sleep=clock.sleep)
    assert calls == 1
    counts = [int(r.headers["x-stainless-retry-count"]) for r in seen]
    assert counts == list(range(len(seen)))
    assert len(seen) > 3  # past max_retries=2: the lent time is used
    assert sum(clock.sleeps) == pytest.approx(300.0)  # and never beyond it
    assert max(clock.sleeps) <= 10.0
    assert retried_by(info.value) == "transport"
    assert not is_retryable_error(info.value)


async def test_without_an_operation_loop_the_transport_stops_at_max_retries(
    make_client: MakeClient, clock: Any
) -> None:
    seen: list[httpx.Request] = []
    handler = scripted([httpx.Response(503)] * 5, seen)
    async with make_client(handler, max_retries=2) as http:
        with pytest.raises(InternalServerError) as info:
            await http.post("/api/v1/forward", {})
        assert transport_time_left() == 0.0
    assert len(seen) == 3
    assert retried_by(info.value) == "transport"


async def test_a_server_restart_is_ridden_out_by_one_loop(
    make_client: MakeClient, clock: Any
) -> None:
    """Connection refused for longer than the transport budget, then back: the operation
    loop's time keeps the one transport loop going; the operation runs once."""
    seen: list[httpx.Request] = []
    handler = scripted([httpx.ConnectError("refused")] * 15 + [httpx.Response(200, json={})], seen)
    calls = 0
    async with make_client(handler, max_retries=2) as http:

        async def operation() -> Any:
            nonlocal calls
            calls += 1
            return await http.post("/api/v1/forward", {})

        assert (
            await retry_async(operation, RetryConfig.operation(), clock=clock, sleep=clock.sleep)
            == {}
        )
    assert calls == 1
    assert len(seen) == 16
    assert len({r.headers["x-idempotency-key"] for r in seen}) == 1


async def test_transport_connection_errors_are_final_for_outer_layers(
    make_client: MakeClient, clock: Any
) -> None:
    seen: list[httpx.Request] = []
    handler = scripted([httpx.ConnectError("refused")] * 10, seen)
    async with make_client(handler, max_retries=1) as http:
        with pytest.raises(APIConnectionError) as info:
            await retry_async(
                lambda: http.post("/api/v1/forward", {}),
                RetryConfig(max_retries=5, total_timeout=None, enabled=False),
                clock=clock,
                sleep=clock.sleep,
            )
        assert len(seen) == 2
        assert retried_by(info.value) == "transport"
        assert not is_retryable_error(info.value)


async def test_zero_budget_requests_are_left_to_the_outer_layer(
    make_client: MakeClient, clock: Any
) -> None:
    seen: list[httpx.Request] = []
    handler = scripted([httpx.Response(503), httpx.Response(200, json={"request_id": "r"})], seen)
    errors: list[BaseException] = []
    async with make_client(handler) as http:
        result = await retry_async(
            lambda: http.post("/api/v1/asample", {}),
            RetryConfig.sampling(),
            clock=clock,
            sleep=clock.sleep,
            on_retry=lambda _n, exc, _d: errors.append(exc),
        )
    assert result == {"request_id": "r"}
    assert len(seen) == 2
    assert [retried_by(e) for e in errors] == [None]


def test_every_layer_takes_its_delays_from_backoff() -> None:
    assert RetryConfig.operation().backoff == Backoff(1.0, 30.0, 0.0, jitter_mode="both")
    assert RetryConfig.sampling().backoff == Backoff(0.5, 10.0, 0.25, jitter_mode="both")
    assert [RetryConfig.operation().delay(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]


async def test_x_should_retry_false_is_final_for_the_operation_loop(
    make_client: MakeClient, clock: Any
) -> None:
    """With no transport retries, the server's ``x-should-retry: false`` still stops the
    operation loop (it used to re-send the request for its whole 300 s)."""
    seen: list[httpx.Request] = []
    handler = scripted([httpx.Response(500, headers={"x-should-retry": "false"})] * 5, seen)
    async with make_client(handler, max_retries=0) as http:

        async def call() -> Any:
            return await http.post("/api/v1/optim_step", {})

        with pytest.raises(InternalServerError) as info:
            await retry_async(call, RetryConfig.operation(), clock=clock, sleep=clock.sleep)
    assert len(seen) == 1
    assert retried_by(info.value) == "server"
    assert not is_retryable_error(info.value)
