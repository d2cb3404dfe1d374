"""The backend telemetry reporter against a loopback receiver (and MockTransport)."""

from __future__ import annotations

import re
import threading
from datetime import datetime
from typing import Any

import httpx
import pytest

from tinkex_telemetry import (
    BackendReporter,
    ReporterSettings,
    TelemetryPlugin,
    capture_exceptions,
    telemetry_enabled_from_env,
)
from tinkex_types import (
    APIConnectionError,
    Backoff,
    BadRequestError,
    FutureEvent,
    InternalServerError,
    QueueStateEvent,
    RateLimitError,
    RequestErrorCategory,
    RequestEvent,
    RequestFailedError,
    TinkexValidationError,
)

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _events(receiver: Any) -> list[dict[str, Any]]:
    return [e for r in receiver.requests for e in r.json()["events"]]


def _reporter(receiver: Any, **kw: Any) -> BackendReporter:
    kw.setdefault("flush_interval", 60.0)
    kw.setdefault("retry_base_delay", 0.01)
    return BackendReporter(session_id="sess-1", base_url=receiver.url, **kw)


def test_wire_format_and_session_lifecycle(receiver: Any, secrets: Any) -> None:
    key = secrets[0]
    rep = _reporter(receiver, api_key=key, sdk_version="0.16.1")
    rep.log(
        "checkpoint_saved",
        {"path": "tinker://x/weights/1", "api_key": key, "note": f"key {key}"},
        "info",
    )
    rep.log_exception(BadRequestError("bad datum", status_code=400, body={"detail": "x"}))
    rep.log_exception(RuntimeError(f"engine exploded with {key}"))
    rep.close(timeout=10)

    assert len(receiver.requests) == 1, "one batch: threshold not reached, sent at close"
    req = receiver.requests[0]
    assert req.path == "/api/v1/telemetry"
    assert req.headers["x-api-key"] == key
    body = req.json()
    assert body["session_id"] == "sess-1"
    assert body["sdk_version"] == "0.16.1"
    assert isinstance(body["platform"], str)
    assert body["platform"]
    events = body["events"]
    assert [e["event"] for e in events] == [
        "SESSION_START", "GENERIC_EVENT", "GENERIC_EVENT", "UNHANDLED_EXCEPTION", "SESSION_END",
    ]  # fmt: skip
    assert [e["event_session_index"] for e in events] == [0, 1, 2, 3, 4]
    for e in events:
        assert HEX32.match(e["event_id"])
        assert e["timestamp"].endswith("Z")
        datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
        assert e["severity"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    generic, user_error, crash, end = events[1], events[2], events[3], events[4]
    assert generic["event_name"] == "checkpoint_saved"
    assert generic["severity"] == "INFO"
    assert generic["event_data"]["api_key"] == "[REDACTED]"
    assert generic["event_data"]["path"] == "tinker://x/weights/1"
    assert user_error["event_name"] == "user_error"
    assert user_error["severity"] == "WARNING"
    assert user_error["event_data"]["status_code"] == 400
    assert user_error["event_data"]["error_type"] == "BadRequestError"
    assert crash["error_type"] == "RuntimeError"
    assert crash["severity"] == "ERROR"
    assert "traceback" in crash
    assert re.match(r"^\d+:\d\d:\d\d(\.\d{6})?$", end["duration"])
    assert key not in req.body.decode()


def test_batching_by_threshold_and_batch_size(receiver: Any) -> None:
    rep = _reporter(receiver, flush_threshold=10, max_batch_size=4)
    for i in range(9):  # + SESSION_START = 10 → flush
        rep.log("e", {"i": i})
    assert receiver.wait_for(3), "10 queued events go out as 4 + 4 + 2"
    assert [len(r.json()["events"]) for r in receiver.requests] == [4, 4, 2]
    rep.close(timeout=10)
    assert [e["event_session_index"] for e in _events(receiver)] == list(range(11))
    assert rep.stats.sent == 11
    assert rep.stats.batches_sent == 4


def test_flush_interval(receiver: Any) -> None:
    rep = _reporter(receiver, flush_interval=0.05)
    rep.log("tick")
    with receiver.got_request:
        assert receiver.got_request.wait_for(lambda: len(_events(receiver)) >= 2, 10)
    assert [e["event"] for e in _events(receiver)] == ["SESSION_START", "GENERIC_EVENT"]
    assert rep.stats.queued == 0, "sent by the timer alone: no flush, no close"
    rep.close(timeout=10)


def test_explicit_flush_waits_until_delivered(receiver: Any) -> None:
    rep = _reporter(receiver)
    rep.log("a")
    assert rep.flush(timeout=10)
    assert len(_events(receiver)) == 2
    assert rep.flush(timeout=10), "nothing queued: immediately true"
    rep.close(timeout=10)
    rep.close(timeout=10)  # idempotent
    assert _events(receiver)[-1]["event"] == "SESSION_END"
    rep.log("after close")
    assert rep.stats.enqueued == 3


def test_queue_bound_drops_newest_and_counts(receiver: Any) -> None:
    receiver.hold = threading.Event()
    rep = _reporter(receiver, max_queue_size=5, flush_threshold=1, max_batch_size=1)
    assert receiver.entered.wait(10), "the worker is stuck sending SESSION_START"
    for i in range(12):
        rep.log("e", {"i": i})
    stats = rep.stats
    assert stats.queued == 5
    assert stats.dropped_queue_full == 7
    receiver.hold.set()
    rep.close(timeout=10)
    kept = [e["event_data"]["i"] for e in _events(receiver) if e["event"] == "GENERIC_EVENT"]
    assert kept == [0, 1, 2, 3, 4], "the oldest are kept, the newest dropped"
    assert _events(receiver)[-1]["event"] == "SESSION_END", "SESSION_END is never dropped"
    assert rep.stats.sent == 1 + 5 + 1


def test_retry_500_then_200(receiver: Any) -> None:
    receiver.statuses = [500, 503]
    rep = _reporter(receiver, max_retries=3)
    rep.log("x")
    assert rep.flush(timeout=10)
    assert [len(r.json()["events"]) for r in receiver.requests] == [2, 2, 2]
    stats = rep.stats
    assert stats.failed_attempts == 2
    assert stats.sent == 2
    assert stats.dropped_after_retries == 0
    rep.close(timeout=10)


def test_retries_are_bounded_then_the_batch_is_dropped(receiver: Any) -> None:
    receiver.default_status = 500
    rep = _reporter(receiver, max_retries=2)
    assert rep.flush(timeout=10), "processed (dropped) in time"
    assert len(receiver.requests) == 3
    assert rep.stats.dropped_after_retries == 1
    assert rep.stats.sent == 0
    receiver.default_status = 200
    rep.log("later")
    rep.close(timeout=10)
    assert [e["event"] for e in receiver.requests[-1].json()["events"]] == [
        "GENERIC_EVENT",
        "SESSION_END",
    ]


def test_client_errors_are_not_retried(receiver: Any) -> None:
    receiver.statuses = [404]
    rep = _reporter(receiver, max_retries=3)
    assert rep.flush(timeout=10)
    assert len(receiver.requests) == 1
    assert rep.stats.dropped_after_retries == 1
    rep.close(timeout=10)


def test_unreachable_backend_never_blocks_logging() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    rep = BackendReporter(
        session_id="s", base_url="http://tinker.test", transport=httpx.MockTransport(refuse),
        retry_base_delay=0.01, max_retries=1, flush_threshold=5,
    )  # fmt: skip
    for i in range(200):
        rep.log("e", {"i": i})
    assert rep.flush(timeout=10)
    rep.close(timeout=10)
    stats = rep.stats
    assert stats.sent == 0
    assert stats.dropped_after_retries == stats.enqueued == 202


def test_close_timeout_abandons_retries() -> None:
    calls: list[int] = []

    def fail(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503)

    rep = BackendReporter(
        session_id="s", endpoint="http://tinker.test/custom/telemetry", transport=httpx.MockTransport(fail),
        retry_base_delay=30.0, max_retries=5,
    )  # fmt: skip
    rep.close(timeout=0.2)
    assert rep.closed
    assert not rep._thread or not rep._thread.is_alive()
    assert rep.stats.dropped_after_retries == 2
    assert len(calls) == 1, "the 30 s backoff was cut short"


def test_hook_events_are_forwarded_through_the_plugin(
    receiver: Any, otel: Any, fake_config: Any
) -> None:
    fake_config.base_url = receiver.url
    factory = otel.hooks.telemetry_sinks().get("backend")
    rep = factory(session_id="sess-9", config=fake_config, flush_interval=60.0)
    assert isinstance(rep, BackendReporter)
    assert rep in otel.plugin.sinks
    hooks = otel.hooks
    hooks.on_request(
        RequestEvent(
            "POST", "/api/v1/forward_backward", 0, 0.1, status_code=200, base_url=receiver.url
        )
    )
    hooks.on_request(
        RequestEvent(
            "POST", "/api/v1/forward_backward", 0, 0.1, error="ConnectError", base_url=receiver.url
        )
    )
    hooks.on_request(
        RequestEvent("POST", "/api/v1/x", 0, 0.1, status_code=200, base_url="http://other.test")
    )
    hooks.on_queue_state_change(
        QueueStateEvent("r", "paused_capacity", "active", "busy", base_url=receiver.url)
    )
    hooks.on_future(FutureEvent("r", "failed", 1.0, 3, category="user", error="bad"))
    rep.close(timeout=10)
    assert rep not in otel.plugin.sinks, "closing detaches"
    req = receiver.requests[0]
    assert req.headers["cf-access-client-secret"] == fake_config.cf_access_client_secret
    assert req.headers["x-api-key"] == fake_config.api_key
    events = _events(receiver)
    named = [(e.get("event_name"), e["severity"]) for e in events if e["event"] == "GENERIC_EVENT"]
    assert named == [
        ("tinkex.http.request.stop", "INFO"),
        ("tinkex.http.request.exception", "ERROR"),
        ("tinkex.queue.state_change", "WARNING"),
        ("tinkex.future.failed", "WARNING"),
    ], "the request to another base URL belongs to another session"
    assert events[1]["event_data"]["path"] == "/api/v1/forward_backward"
    assert events[1]["event_data"]["status_code"] == 200


def test_disabled_reporters_send_nothing(
    receiver: Any, fake_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_config.base_url = receiver.url
    fake_config.telemetry_enabled = False
    rep = BackendReporter.from_config(fake_config, session_id="s")
    rep.log("x")
    assert rep.flush(1)
    rep.close(1)
    monkeypatch.setenv("TINKER_TELEMETRY", "off")
    assert telemetry_enabled_from_env() is False
    rep2 = BackendReporter.from_config(None, session_id="s", base_url=receiver.url)
    rep2.log("y")
    rep2.close(1)
    assert rep2.enabled is False
    assert receiver.requests == []
    monkeypatch.setenv("TINKER_TELEMETRY", "1")
    assert telemetry_enabled_from_env() is True


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"session_id": ""}, "session_id"),
        ({"base_url": None}, "base_url"),
        ({"flush_interval": 0}, "flush_interval"),
        ({"max_queue_size": 2.5}, "max_queue_size"),
        ({"max_retries": -1}, "max_retries"),
    ],
)
def test_bad_options_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    options: dict[str, Any] = {"session_id": "s", "base_url": "http://tinker.test", **kwargs}
    with pytest.raises(TinkexValidationError) as info:
        BackendReporter(**options)
    assert info.value.field == field
    assert info.value.fix


def test_fatal_exception_ends_session_and_flushes(receiver: Any) -> None:
    rep = _reporter(receiver)

    @capture_exceptions(rep, fatal=True)
    def train() -> None:
        raise InternalServerError("engine died", status_code=500)

    with pytest.raises(InternalServerError):
        train()
    kinds = [e["event"] for e in _events(receiver)]
    assert kinds == ["SESSION_START", "UNHANDLED_EXCEPTION", "SESSION_END"], (
        "flushed before re-raising"
    )
    assert _events(receiver)[1]["severity"] == "CRITICAL"
    rep.close(timeout=10)
    assert [e["event"] for e in _events(receiver)].count("SESSION_END") == 1


async def test_capture_exceptions_async_and_user_errors(receiver: Any) -> None:
    rep = _reporter(receiver)

    @capture_exceptions(rep)
    async def sample() -> None:
        raise RequestFailedError("bad prompt", category=RequestErrorCategory.USER)

    with pytest.raises(RequestFailedError):
        await sample()
    async with capture_exceptions(rep, severity="WARNING"):
        pass
    with pytest.raises(APIConnectionError), capture_exceptions(rep, severity="WARNING"):
        raise APIConnectionError("down")
    with pytest.raises(ValueError), capture_exceptions(None):
        raise ValueError("no sink: nothing happens")
    rep.close(timeout=10)
    events = _events(receiver)
    assert events[1]["event_name"] == "user_error"
    assert events[2]["event"] == "UNHANDLED_EXCEPTION"
    assert events[2]["severity"] == "WARNING"
    assert events[2]["error_type"] == "APIConnectionError"


def test_rate_limit_is_not_a_user_error(receiver: Any) -> None:
    rep = _reporter(receiver)
    rep.log_exception(RateLimitError("slow down", status_code=429))
    rep.close(timeout=10)
    assert _events(receiver)[1]["event"] == "UNHANDLED_EXCEPTION"


def test_plugin_close_closes_sinks(receiver: Any) -> None:
    plugin = TelemetryPlugin()
    rep = plugin.create_sink("backend", session_id="s", base_url=receiver.url, flush_interval=60.0)
    plugin.tinkex_on_request(
        event=RequestEvent("GET", "/x", 0, 0.1, status_code=200, base_url=receiver.url)
    )
    assert plugin.flush(10)
    assert len(_events(receiver)) == 2
    plugin.close(10)
    assert rep.closed
    assert plugin.sinks == ()
    with pytest.raises(TinkexValidationError):
        plugin.create_sink("backend", base_url=receiver.url)


def test_settings_use_the_shared_backoff() -> None:
    backoff = ReporterSettings(retry_base_delay=0.5).backoff
    assert backoff == Backoff(initial=0.5, maximum=30.0, jitter=0.1, jitter_mode="down")
    assert [backoff.cap(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(2, lambda: 1.0) == pytest.approx(2 * 0.9)
    long = ReporterSettings(retry_base_delay=45.0).backoff
    assert long.cap(3) == 45.0, "a base delay above 30 s is kept, not cut"
    assert ReporterSettings(retry_base_delay=0).backoff.delay(5) == 0.0


def test_reporter_keeps_its_knobs_in_frozen_settings(receiver: Any) -> None:
    rep = _reporter(receiver, max_retries=1, forward=["request"])
    assert rep.settings.max_retries == 1
    assert rep.settings.forward == frozenset({"request"})
    with pytest.raises(AttributeError):
        rep.settings.max_retries = 5  # type: ignore[misc]
    with pytest.raises(TinkexValidationError) as info:
        ReporterSettings(http_timeout=-1)
    assert info.value.field == "http_timeout"
    rep.close(timeout=10)
