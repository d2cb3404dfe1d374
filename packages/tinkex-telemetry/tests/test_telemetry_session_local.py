"""Session reporters end to end: a ``ServiceClient(base_url="local://")`` session with the
telemetry plugin gets a backend reporter through the ``tinkex_on_session`` hook, and the
real in-process local server stores its ``SESSION_START`` / ``SESSION_END`` rows (read back
through ``server.runtime.store.telemetry()``); with telemetry disabled it stores none."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

import tinkex_clients._plugin as clients_plugin
import tinkex_http._plugin as http_plugin
import tinkex_server._plugin as server_plugin
import tinkex_types
from tinkex_clients import ServiceClient
from tinkex_server import LocalServer, ServerConfig, get_local_server
from tinkex_telemetry import DEFAULT_FORWARD, BackendReporter, TelemetryPlugin, capture_exceptions
from tinkex_types import NotFoundError, TinkexValidationError

API_KEY = "tml-SECRET-session-0123456789"


@dataclass
class Stack:
    server: LocalServer
    plugin: TelemetryPlugin
    hooks: tinkex_types.Hooks

    def bodies(self, session_id: str | None = None) -> list[dict[str, Any]]:
        rows = self.server.call(lambda rt: rt.store.telemetry(session_id=session_id))
        return [row.body for row in rows]

    def events(self, session_id: str) -> list[dict[str, Any]]:
        return [event for body in self.bodies(session_id) for event in body["events"]]

    def names(self, session_id: str) -> list[str]:
        return [e.get("event_name", e["event"]) for e in self.events(session_id)]


@contextlib.contextmanager
def make_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugin: TelemetryPlugin
) -> Iterator[Stack]:
    data = tmp_path / "data"
    monkeypatch.setenv("TINKEX_DATA_DIR", str(data))
    monkeypatch.delenv("TINKER_TELEMETRY", raising=False)
    server = get_local_server(config=ServerConfig(data_dir=data, api_keys=(API_KEY,)))
    hooks = tinkex_types.Hooks(
        tinkex_types.make_plugin_manager(
            load_entrypoints=False, plugins=[http_plugin, server_plugin, clients_plugin, plugin]
        )
    )
    # Process-wide too: the reporter finds the ``local`` transport through get_hooks().
    old = tinkex_types.set_hooks(hooks)
    try:
        yield Stack(server, plugin, hooks)
    finally:
        tinkex_types.set_hooks(old)
        plugin.close(timeout=5)
        server.close()


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    with make_stack(tmp_path, monkeypatch, TelemetryPlugin(propagate=False)) as s:
        yield s


def check_stream(events: list[dict[str, Any]]) -> None:
    assert [e["event_session_index"] for e in events] == list(range(len(events)))
    assert len({e["event_id"] for e in events}) == len(events)


def test_a_session_stores_start_and_end(stack: Stack) -> None:
    with ServiceClient(base_url="local://", api_key=API_KEY) as svc:
        sid = svc.session_id
        reporter = svc.get_telemetry()
        assert isinstance(reporter, BackendReporter)
        assert reporter.session_id == sid
        assert stack.plugin.session_reporter(sid) is reporter
        assert reporter not in stack.plugin.sinks  # hook events are not forwarded by default
        reporter.log("checkpoint_saved", {"step": 1})
        svc.get_server_capabilities()
    assert reporter.closed
    assert stack.plugin.session_reporter(sid) is None
    events = stack.events(sid)
    check_stream(events)
    assert stack.names(sid) == ["SESSION_START", "checkpoint_saved", "SESSION_END"]
    assert events[1]["event_data"] == {"step": 1}
    assert events[0]["timestamp"] <= events[-1]["timestamp"]
    assert events[-1]["duration"].count(":") == 2
    for body in stack.bodies(sid):
        assert body["session_id"] == sid
        assert body["sdk_version"] == svc.config.sdk_version
    assert stack.bodies() == stack.bodies(sid)  # nothing under another session
    assert API_KEY not in repr(stack.bodies())
    stats = reporter.stats
    assert (stats.sent, stats.dropped_after_retries, stats.failed_attempts) == (3, 0, 0)


@pytest.mark.parametrize("how", ["config", "env"])
def test_disabled_telemetry_stores_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    kwargs: dict[str, Any] = {}
    if how == "config":
        kwargs["telemetry_enabled"] = False
    else:
        monkeypatch.setenv("TINKER_TELEMETRY", "0")
    with ServiceClient(base_url="local://", api_key=API_KEY, **kwargs) as svc:
        assert svc.config.telemetry_enabled is False
        assert svc.get_telemetry() is None
        sid = svc.session_id
        assert stack.plugin.session_reporter(sid) is None
        svc.get_server_capabilities()
    assert stack.bodies() == []


def test_session_reporters_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = TelemetryPlugin(propagate=False, session_reporters=False)
    with make_stack(tmp_path, monkeypatch, plugin) as stack:
        with ServiceClient(base_url="local://", api_key=API_KEY) as svc:
            assert svc.get_telemetry() is None
        assert stack.bodies() == []


async def test_an_async_session_stores_start_and_end(stack: Stack) -> None:
    svc = await ServiceClient.create_async(base_url="local://", api_key=API_KEY)
    sid = svc.session_id
    assert isinstance(svc.get_telemetry(), BackendReporter)
    await svc.get_server_capabilities_async()
    await svc.aclose()
    await svc.aclose()
    assert stack.names(sid) == ["SESSION_START", "SESSION_END"]


async def test_concurrent_sessions_each_get_their_own_rows(stack: Stack) -> None:
    def run_one(i: int) -> str:
        with ServiceClient(base_url="local://", api_key=API_KEY) as svc:
            svc.get_telemetry().log("hello", {"i": i})
            return svc.session_id

    sids = await asyncio.gather(*(asyncio.to_thread(run_one, i) for i in range(3)))
    assert len(set(sids)) == 3
    for i, sid in enumerate(sids):
        events = stack.events(sid)
        check_stream(events)
        assert stack.names(sid) == ["SESSION_START", "hello", "SESSION_END"]
        assert events[1]["event_data"] == {"i": i}
    assert len(stack.bodies()) == sum(len(stack.bodies(sid)) for sid in sids)


def test_captured_exceptions_reach_the_session(stack: Stack) -> None:
    with ServiceClient(base_url="local://", api_key=API_KEY) as svc:
        sid = svc.session_id
        rest = svc.create_rest_client()
        with pytest.raises(NotFoundError), capture_exceptions(svc.get_telemetry()):
            rest.get_training_run("no-such-run").result(30)
        with pytest.raises(ZeroDivisionError), capture_exceptions(svc.get_telemetry()):
            _ = 1 / 0
    events = stack.events(sid)
    check_stream(events)
    # The failed attempt (404) is forwarded like the official client's, then the capture.
    assert stack.names(sid) == [
        "SESSION_START",
        "tinkex.http.request.stop",
        "user_error",
        "UNHANDLED_EXCEPTION",
        "SESSION_END",
    ]
    assert events[1]["event_data"]["status_code"] == 404
    assert events[2]["severity"] == "WARNING"
    assert events[2]["event_data"]["status_code"] == 404
    assert events[3]["error_type"] == "ZeroDivisionError"


def test_forwarding_hook_events_is_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = TelemetryPlugin(propagate=False, session_reporter_options={"forward": DEFAULT_FORWARD})
    with make_stack(tmp_path, monkeypatch, plugin) as stack:
        with ServiceClient(base_url="local://", api_key=API_KEY) as svc:
            reporter = svc.get_telemetry()
            assert reporter in plugin.sinks
            svc.get_server_capabilities()
            sid = svc.session_id
        assert reporter not in plugin.sinks
        names = stack.names(sid)
        assert names[0] == "SESSION_START"
        assert names[-1] == "SESSION_END"
        requests = [
            e["event_data"]
            for e in stack.events(sid)
            if e.get("event_name") == "tinkex.http.request.stop"
        ]
        assert any(str(d.get("path", "")).endswith("get_server_capabilities") for d in requests)


def test_closing_the_plugin_ends_open_sessions_once(stack: Stack) -> None:
    svc = ServiceClient(base_url="local://", api_key=API_KEY)
    sid = svc.session_id
    try:
        stack.plugin.close(timeout=5)
        assert stack.plugin.session_reporter(sid) is None
        assert stack.names(sid) == ["SESSION_START", "SESSION_END"]
    finally:
        svc.close()
    assert stack.names(sid) == ["SESSION_START", "SESSION_END"]


def test_a_reporter_that_cannot_be_built_leaves_the_client_working(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reporter looks the ``local`` transport up in the process-wide hooks; when those
    have none, the session runs without telemetry and says why."""
    tinkex_types.set_hooks(
        tinkex_types.Hooks(tinkex_types.make_plugin_manager(load_entrypoints=False, defaults=False))
    )
    with structlog.testing.capture_logs() as logs:
        with ServiceClient(base_url="local://", api_key=API_KEY, hooks=stack.hooks) as svc:
            assert svc.get_telemetry() is None
            assert svc.get_server_capabilities().supported_models
    failed = [e for e in logs if e["event"] == "telemetry_session_reporter_failed"]
    assert len(failed) == 1
    assert "'local'" in failed[0]["error"]
    assert stack.bodies() == []


@pytest.mark.parametrize("bad", [0, -1.0, "5", True, None])
def test_session_close_timeout_is_checked(bad: Any) -> None:
    with pytest.raises(TinkexValidationError) as err:
        TelemetryPlugin(session_close_timeout=bad)
    assert err.value.field == "session_close_timeout"
    assert "session_close_timeout=" in str(err.value)


def test_a_session_forwards_failures_and_queue_states_like_the_official_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failed attempts, queue-state changes and failed futures reach the session's
    reporter (successful requests do not), bounded per event name and minute."""
    from tinkex_types import BadRequestError, FutureEvent, QueueStateEvent

    plugin = TelemetryPlugin(propagate=False, session_forward_per_minute=5)
    with make_stack(tmp_path, monkeypatch, plugin) as stack:
        with ServiceClient(base_url="local://", api_key=API_KEY) as svc:
            sid = svc.session_id
            assert svc.get_telemetry() not in plugin.sinks  # routed, not attached
            svc.get_server_capabilities()  # a success: not forwarded
            with pytest.raises(BadRequestError):
                svc.create_lora_training_client("no/such-model", rank=4)
            states = ["paused_rate_limit", "active", "paused_capacity"] * 3
            for i, state in enumerate(states):
                stack.hooks.on_queue_state_change(
                    QueueStateEvent(f"req-{i}", state, None, "busy", base_url="local://")
                )
            stack.hooks.on_future(FutureEvent("req-x", "timed_out", 3.0, 7))
            stack.hooks.on_future(FutureEvent("req-y", "resolved", 1.0, 1))
        names = stack.names(sid)
        events = stack.events(sid)
        bodies = repr(stack.bodies(sid))
    assert names[0] == "SESSION_START"
    assert names[-1] == "SESSION_END"
    failed = [
        e["event_data"]
        for e in events
        if e.get("event_name") in ("tinkex.http.request.stop", "tinkex.http.request.exception")
    ]
    assert failed, names
    assert all(d["result"] == "error" for d in failed)
    assert any(d["status_code"] == 400 and d["path"].endswith("create_model") for d in failed)
    assert not any(str(d["path"]).endswith("get_server_capabilities") for d in failed)
    assert names.count("tinkex.queue.state_change") == 5  # 9 changes, 5 per minute
    assert plugin.forwarder.dropped == 4
    assert "tinkex.future.timed_out" in names
    assert "tinkex.future.resolved" not in names
    assert API_KEY not in bodies


def test_session_forwarding_can_be_switched_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tinkex_types import QueueStateEvent

    plugin = TelemetryPlugin(propagate=False, session_forward=False)
    with make_stack(tmp_path, monkeypatch, plugin) as stack:
        with ServiceClient(base_url="local://", api_key=API_KEY) as svc:
            sid = svc.session_id
            stack.hooks.on_queue_state_change(
                QueueStateEvent("r", "paused_capacity", None, "busy", base_url="local://")
            )
        assert stack.names(sid) == ["SESSION_START", "SESSION_END"]
