"""Future polling: every outcome of retrieve_future, queue-state events and timeouts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
import structlog

from tinkex_http import (
    APIFutureResolver,
    BytesSemaphore,
    HTTPClient,
    QueueStateLogger,
    default_queue_state_reason,
    poll_future,
)
from tinkex_types import (
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    NotFoundError,
    QueueStateEvent,
    RateLimitError,
    RequestErrorCategory,
    RequestFailedError,
)

MakeClient = Callable[..., HTTPClient]


def futures_server(
    answers: list[Any], seen: list[dict[str, Any]], clock: Any = None, cost: float = 0.0
) -> Callable[[httpx.Request], httpx.Response]:
    """Answer retrieve_future polls from ``answers``: (status, json) tuples, a dict (200) or an
    exception. ``cost`` seconds of fake time pass per poll."""
    it = iter(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("/api/v1/retrieve_future")
        seen.append({"body": orjson.loads(request.content), "headers": dict(request.headers)})
        if clock is not None:
            clock.now += cost
        item = next(it)
        if isinstance(item, Exception):
            raise item
        if isinstance(item, tuple):
            status, payload = item
            return (
                httpx.Response(status, json=payload)
                if payload is not None
                else httpx.Response(status)
            )
        return httpx.Response(200, json=item)

    return handler


async def test_immediate_result(make_client: MakeClient, recorder: Any) -> None:
    seen: list[dict[str, Any]] = []
    async with make_client(futures_server([{"metrics": {"loss:sum": 2.0}}], seen)) as http:
        result = await poll_future(
            http, "req-1", request_type="ForwardBackward", model_id="m1", create_roundtrip_time=0.5
        )
    assert result == {"metrics": {"loss:sum": 2.0}}
    assert seen[0]["body"] == {"request_id": "req-1", "allow_metadata_only": True}
    h = seen[0]["headers"]
    assert h["x-tinker-request-type"] == "ForwardBackward"
    assert h["x-tinker-request-iteration"] == "0"
    assert h["x-tinker-create-promise-roundtrip-time"] == "0.5"
    assert h["x-stainless-read-timeout"] == "45"
    [event] = recorder.futures
    assert (event.request_id, event.outcome, event.polls, event.model_id) == (
        "req-1",
        "resolved",
        1,
        "m1",
    )


async def test_completed_wrapper_returns_result(make_client: MakeClient) -> None:
    seen: list[dict[str, Any]] = []
    answers = [{"status": "completed", "result": {"path": "tinker://m/weights/a"}}]
    async with make_client(futures_server(answers, seen)) as http:
        assert await APIFutureResolver(http, "r") == {"path": "tinker://m/weights/a"}


async def test_try_again_sequence_reports_queue_state_changes_in_order(
    make_client: MakeClient, recorder: Any, clock: Any
) -> None:
    seen: list[dict[str, Any]] = []
    answers = [
        {"type": "try_again", "request_id": "r", "queue_state": "active"},
        {"type": "try_again", "request_id": "r", "queue_state": "active"},
        {"type": "try_again", "request_id": "r", "queue_state": "paused_rate_limit"},
        {"type": "try_again", "request_id": "r", "queue_state": "paused_rate_limit"},
        {
            "type": "try_again",
            "request_id": "r",
            "queue_state": "paused_capacity",
            "queue_state_reason": "GPUs busy",
        },
        {
            "type": "try_again",
            "request_id": "r",
            "queue_state": "paused_capacity",
            "retry_after_ms": 250,
        },
        {"type": "try_again", "request_id": "r", "queue_state": "active"},
        {"loss_fn_outputs": []},
    ]
    async with make_client(futures_server(answers, seen)) as http:
        resolver = APIFutureResolver(http, "r", request_type="OptimStep", model_id="m")
        assert await resolver == {"loss_fn_outputs": []}
    events: list[QueueStateEvent] = recorder.queue
    assert [(e.previous_state, e.queue_state) for e in events] == [
        (None, "active"),
        ("active", "paused_rate_limit"),
        ("paused_rate_limit", "paused_capacity"),
        ("paused_capacity", "paused_capacity"),  # reason changed back to the default
        ("paused_capacity", "active"),
    ]
    assert events[1].reason == "concurrent training clients rate limit hit"
    assert events[2].reason == "GPUs busy"
    assert events[3].reason == "Tinker backend is running short on capacity, please wait"
    assert all(e.request_id == "r" and e.model_id == "m" for e in events)
    # active: immediate; paused: 1 s; retry_after_ms honoured
    assert clock.sleeps == [1.0, 1.0, 1.0, 0.25]
    assert [s["headers"]["x-tinker-request-iteration"] for s in seen] == [str(i) for i in range(8)]
    assert resolver.polls == 8


async def test_unknown_queue_state_and_sampling_reason(
    make_client: MakeClient, recorder: Any
) -> None:
    seen: list[dict[str, Any]] = []
    answers = [
        {"type": "try_again", "queue_state": "paused_billing"},
        {"type": "try_again", "queue_state": "paused_rate_limit"},
        {"sequences": []},
    ]
    async with make_client(futures_server(answers, seen)) as http:
        await poll_future(http, "r", request_type="Sample")
    assert [e.queue_state for e in recorder.queue] == ["unknown", "paused_rate_limit"]
    assert recorder.queue[1].reason == "concurrent sampler weights limit hit"


async def test_408_is_try_again_with_queue_state(
    make_client: MakeClient, recorder: Any, clock: Any
) -> None:
    seen: list[dict[str, Any]] = []
    answers = [
        (408, {"type": "try_again", "request_id": "r", "queue_state": "active"}),
        (408, None),
        (
            408,
            {"type": "try_again", "queue_state": "paused_capacity", "queue_state_reason": "full"},
        ),
        {"ok": 1},
    ]
    async with make_client(futures_server(answers, seen)) as http:
        assert await poll_future(http, "r") == {"ok": 1}
    assert [(e.queue_state, e.reason) for e in recorder.queue][-1] == ("paused_capacity", "full")
    assert len(seen) == 4
    assert clock.sleeps == [1.0]  # only the paused state waits


async def test_5xx_polls_back_off_boundedly(make_client: MakeClient, clock: Any) -> None:
    seen: list[dict[str, Any]] = []
    answers = [(500, None)] * 7 + [{"done": True}]
    async with make_client(futures_server(answers, seen)) as http:
        assert await poll_future(http, "r") == {"done": True}
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert len(seen) == 8  # no transport retries inside a poll


async def test_5xx_polls_without_backoff_when_disabled(make_client: MakeClient, clock: Any) -> None:
    seen: list[dict[str, Any]] = []
    answers = [(503, None)] * 3 + [{"done": True}]
    async with make_client(futures_server(answers, seen), poll_backoff=None) as http:
        assert await poll_future(http, "r") == {"done": True}
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("body", "category", "message"),
    [
        (
            {"error": "bad token id 99999", "category": "user"},
            RequestErrorCategory.USER,
            "bad token id 99999",
        ),
        ({"error": "oom", "category": "server"}, RequestErrorCategory.SERVER, "oom"),
        ({"error": "weird", "category": "martian"}, RequestErrorCategory.UNKNOWN, "weird"),
        ({"error": "no category"}, RequestErrorCategory.UNKNOWN, "no category"),
        (
            {"status": "failed", "error": {"message": "shape mismatch", "category": "user"}},
            RequestErrorCategory.USER,
            "shape mismatch",
        ),
    ],
)
async def test_request_failed_by_category(
    make_client: MakeClient,
    recorder: Any,
    body: dict[str, Any],
    category: RequestErrorCategory,
    message: str,
) -> None:
    seen: list[dict[str, Any]] = []
    async with make_client(futures_server([body], seen)) as http:
        with pytest.raises(RequestFailedError) as info:
            await poll_future(http, "req-9", request_type="ForwardBackward")
    assert info.value.category == category
    assert info.value.message == message
    assert info.value.request_id == "req-9"
    assert len(seen) == 1  # terminal for every category
    [event] = recorder.futures
    assert (event.outcome, event.category) == ("failed", category.value)


async def test_410_is_final(make_client: MakeClient, recorder: Any) -> None:
    seen: list[dict[str, Any]] = []
    async with make_client(futures_server([(410, {"detail": "gone"})], seen)) as http:
        with pytest.raises(APIStatusError) as info:
            await poll_future(http, "req-old")
    assert info.value.status_code == 410
    assert "Promise expired for request req-old" in info.value.message
    assert len(seen) == 1
    assert recorder.futures[0].outcome == "failed"


async def test_429_polls_wait_and_repoll(
    make_client: MakeClient, clock: Any, recorder: Any
) -> None:
    """Regression: a rate-limited poll used to fail the call although the server had run
    the request (a user redoing the step would then apply it twice)."""
    seen: list[dict[str, Any]] = []
    answers = [
        (429, {"detail": "slow down"}),
        (429, None),
        (429, {"detail": "slow", "queue_state": "paused_rate_limit", "retry_after_ms": 250}),
        (429, {"detail": "slow down"}),
        {"done": True},
        (429, {"detail": "slow down"}),
        {"again": True},
    ]
    async with make_client(futures_server(answers, seen)) as http:
        assert await poll_future(http, "r", request_type="OptimStep") == {"done": True}
        assert await poll_future(http, "r2") == {"again": True}
    # Transport backoff (rng 0.5 → x0.875) unless the body gives retry_after_ms; the count
    # starts again after each answer.
    assert clock.sleeps == [0.4375, 0.875, 0.25, 3.5, 0.4375]
    assert len(seen) == 7
    assert [e.queue_state for e in recorder.queue] == ["paused_rate_limit"]
    assert [e.outcome for e in recorder.futures] == ["resolved", "resolved"]


async def test_429_polls_stop_at_the_timeout(make_client: MakeClient) -> None:
    seen: list[dict[str, Any]] = []
    async with make_client(futures_server([(429, {"detail": "no"})] * 50, seen)) as http:
        with pytest.raises(APITimeoutError) as info:
            await poll_future(http, "r", timeout=5.0)
    assert isinstance(info.value.__cause__, RateLimitError)
    assert 1 < len(seen) < 10


@pytest.mark.parametrize(("status", "cls"), [(404, NotFoundError), (409, APIStatusError)])
async def test_other_4xx_are_final(
    make_client: MakeClient, status: int, cls: type[Exception]
) -> None:
    seen: list[dict[str, Any]] = []
    async with make_client(futures_server([(status, {"detail": "no"})], seen)) as http:
        with pytest.raises(cls):
            await poll_future(http, "r")
    assert len(seen) == 1


async def test_blank_400_is_repolled_three_times(make_client: MakeClient) -> None:
    seen: list[dict[str, Any]] = []
    async with make_client(futures_server([(400, None)] * 3 + [{"ok": 1}], seen)) as http:
        assert await poll_future(http, "r") == {"ok": 1}
    seen.clear()
    async with make_client(futures_server([(400, None)] * 4, seen)) as http:
        with pytest.raises(APIStatusError):
            await poll_future(http, "r")
    assert len(seen) == 4


async def test_connection_errors_back_off_then_recover(make_client: MakeClient, clock: Any) -> None:
    seen: list[dict[str, Any]] = []
    answers = [
        httpx.ConnectError("down"),
        httpx.ReadTimeout("slow"),
        httpx.ConnectError("down"),
        {"ok": 2},
    ]
    async with make_client(futures_server(answers, seen)) as http:
        assert await poll_future(http, "r") == {"ok": 2}
    assert clock.sleeps == [1.0, 2.0, 4.0]


async def test_pending_backs_off(make_client: MakeClient, clock: Any) -> None:
    seen: list[dict[str, Any]] = []
    answers = [
        {"status": "pending"},
        {"status": "pending"},
        {"status": "completed", "result": {"x": 1}},
    ]
    async with make_client(futures_server(answers, seen)) as http:
        assert await poll_future(http, "r") == {"x": 1}
    assert clock.sleeps == [1.0, 2.0]


async def test_timeout_raises_with_request_and_duration(
    make_client: MakeClient, recorder: Any, clock: Any
) -> None:
    seen: list[dict[str, Any]] = []
    answers = [{"type": "try_again", "queue_state": "paused_capacity"}] * 1000
    async with make_client(futures_server(answers, seen, clock, cost=2.0)) as http:
        with pytest.raises(APITimeoutError) as info:
            await poll_future(http, "req-slow", request_type="Sample", timeout=10.0)
    text = str(info.value)
    assert "req-slow" in text
    assert "10s" in text
    assert "Sample" in text
    assert "paused_capacity" in text
    assert info.value.request_id == "req-slow"
    assert recorder.futures[0].outcome == "timed_out"
    assert len(seen) == 4  # 4 × (2 s poll + 1 s wait) > 10 s
    # the last poll's own timeout was cut to the time left
    assert float(seen[-1]["headers"]["x-stainless-read-timeout"]) < 45


async def test_config_future_timeout_is_the_default(make_client: MakeClient, clock: Any) -> None:
    seen: list[dict[str, Any]] = []
    answers = [(500, None)] * 100
    async with make_client(futures_server(answers, seen), future_timeout=20.0) as http:
        with pytest.raises(APITimeoutError, match="timeout 20s") as info:
            await poll_future(http, "r")
    assert isinstance(info.value.__cause__, APIStatusError)
    assert sum(clock.sleeps) <= 20.0


async def test_complete_metadata_reserves_bytes_and_refetches(make_client: MakeClient) -> None:
    seen: list[dict[str, Any]] = []
    limiter = BytesSemaphore(1000)
    answers = [{"status": "complete_metadata", "response_payload_size": 700}, {"big": "payload"}]
    async with make_client(futures_server(answers, seen)) as http:
        resolver = APIFutureResolver(http, "r", response_limiter=limiter)
        assert await resolver == {"big": "payload"}
    assert [s["body"]["allow_metadata_only"] for s in seen] == [True, False]
    assert limiter.budget == 1000


async def test_complete_metadata_when_not_allowed_is_an_error(make_client: MakeClient) -> None:
    seen: list[dict[str, Any]] = []
    answers = [{"status": "complete_metadata", "response_payload_size": 1}]
    async with make_client(futures_server(answers, seen)) as http:
        with pytest.raises(APIResponseValidationError, match="complete_metadata"):
            await poll_future(http, "r", allow_metadata_only=False)


def test_invalid_request_id_is_rejected(make_client: MakeClient) -> None:
    http = make_client(lambda r: httpx.Response(200, json={}))
    with pytest.raises(APIResponseValidationError):
        APIFutureResolver(http, "")


def test_default_reasons() -> None:
    assert (
        default_queue_state_reason("paused_rate_limit")
        == "concurrent training clients rate limit hit"
    )
    assert (
        default_queue_state_reason("paused_rate_limit", "Sample")
        == "concurrent sampler weights limit hit"
    )
    assert "capacity" in default_queue_state_reason("paused_capacity")


def test_queue_state_logger_is_debounced() -> None:
    clock = [0.0]
    log = QueueStateLogger(debounce_s=60.0, clock=lambda: clock[0])

    def ev(state: str, model: str = "m1") -> QueueStateEvent:
        return QueueStateEvent(
            request_id="r", queue_state=state, previous_state=None, reason="why", model_id=model
        )

    with structlog.testing.capture_logs() as logs:
        assert log(ev("paused_capacity"))
        clock[0] = 30.0
        assert not log(ev("paused_capacity"))  # same state within 60 s
        assert not log(ev("active"))  # never logged
        assert log(ev("paused_rate_limit"))  # another state
        assert log(ev("paused_capacity", model="m2"))  # another subject
        clock[0] = 61.0
        assert log(ev("paused_capacity"))
    assert len(logs) == 4
    assert all(entry["log_level"] == "warning" for entry in logs)
    assert "Reason: why" in logs[0]["event"]


async def test_default_observer_logs_through_the_plugin(make_client: MakeClient) -> None:
    seen: list[dict[str, Any]] = []
    answers = [{"type": "try_again", "queue_state": "paused_capacity"}, {"ok": 1}]
    with structlog.testing.capture_logs() as logs:
        async with make_client(futures_server(answers, seen)) as http:
            await poll_future(http, "r", model_id="plugin-model-xyz")
    assert any("plugin-model-xyz" in entry["event"] for entry in logs)


async def test_cancellation_is_reported(make_client: MakeClient, recorder: Any) -> None:
    import asyncio

    started = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")

    async with make_client(handler) as http:
        task = asyncio.create_task(poll_future(http, "r-cancel", request_type="Sample"))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    [event] = recorder.futures
    assert (event.request_id, event.outcome, event.request_type) == (
        "r-cancel",
        "cancelled",
        "Sample",
    )
