"""The backend reporter against the real local server's ``POST /api/v1/telemetry``.

Every test builds an in-process :class:`tinkex_server.LocalServer` in a temporary data
directory (it requires an API key, so a reporter that forgets it stores nothing) and reads
back what the server stored through its store's ``telemetry()`` accessor: batching, flush
on close and at interpreter exit, the queue bound, retries, and forwarding of hook events
from a ``ServiceClient`` session.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tinkex_types
from tinkex_server import LocalServer, LocalTransport, ServerConfig
from tinkex_telemetry import BackendReporter
from tinkex_types import TinkexValidationError

API_KEY = "tml-SECRET-telemetry-abc123"
#: The host is ignored by LocalTransport (it routes by path into the LocalServer).
BASE_URL = "http://tinkex.local"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    srv = LocalServer(ServerConfig(data_dir=tmp_path / "data", api_keys=(API_KEY,)))
    try:
        yield srv
    finally:
        srv.close()


def stored(server: LocalServer, session_id: str) -> list[dict[str, Any]]:
    """The request bodies the server stored for ``session_id``, oldest first."""
    rows = server.call(lambda rt: rt.store.telemetry(session_id=session_id))
    return [row.body for row in rows]


def events_of(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for body in bodies for event in body["events"]]


class Recording(httpx.BaseTransport):
    """Counts POSTs to ``/api/v1/telemetry``; ``fail_first`` of them get 500 without
    reaching the server."""

    def __init__(self, inner: httpx.BaseTransport, *, fail_first: int = 0) -> None:
        self.inner = inner
        self.fail_first = fail_first
        self.attempts = 0
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.attempts += 1
            fail = self.attempts <= self.fail_first
        if fail:
            return httpx.Response(500, json={"detail": "injected"}, request=request)
        return self.inner.handle_request(request)


def reporter_for(
    server: LocalServer, session_id: str, transport: httpx.BaseTransport | None = None, **kw: Any
) -> BackendReporter:
    kw.setdefault("flush_interval", 600.0)  # only explicit flushes, thresholds and close
    kw.setdefault("flush_threshold", 10_000)
    kw.setdefault("retry_base_delay", 0.01)
    return BackendReporter(
        session_id=session_id,
        base_url=BASE_URL,
        api_key=API_KEY,
        transport=transport if transport is not None else LocalTransport(server),
        sdk_version="0.16.1",
        **kw,
    )


def check_event_stream(events: list[dict[str, Any]]) -> None:
    assert [e["event_session_index"] for e in events] == list(range(len(events)))
    assert len({e["event_id"] for e in events}) == len(events)
    for event in events:
        assert len(event["event_id"]) == 32
        assert event["timestamp"].endswith("Z")


@pytest.mark.parametrize(("logged", "batch"), [(24, 5), (9, 10), (11, 4)])
def test_batches_of_max_batch_size(server: LocalServer, logged: int, batch: int) -> None:
    sid = f"sess-batch-{logged}-{batch}"
    transport = Recording(LocalTransport(server))
    reporter = reporter_for(server, sid, transport, max_batch_size=batch)
    try:
        for i in range(logged):
            reporter.log(f"event-{i}", {"i": i})
        assert reporter.flush(timeout=20)
        queued = logged + 1  # SESSION_START is queued at construction
        bodies = stored(server, sid)
        assert len(bodies) == math.ceil(queued / batch)
        assert transport.attempts == len(bodies)
        assert [len(b["events"]) for b in bodies[:-1]] == [batch] * (len(bodies) - 1)
        for body in bodies:
            assert body["session_id"] == sid
            assert body["sdk_version"] == "0.16.1"
            assert isinstance(body["platform"], str)
            assert body["platform"]
        events = events_of(bodies)
        check_event_stream(events)
        assert events[0]["event"] == "SESSION_START"
        assert [e["event_name"] for e in events[1:]] == [f"event-{i}" for i in range(logged)]
        assert [e["event_data"] for e in events[1:]] == [{"i": i} for i in range(logged)]
        stats = reporter.stats
        assert (stats.sent, stats.batches_sent, stats.queued) == (queued, len(bodies), 0)
        assert stats.failed_attempts == 0
    finally:
        reporter.close(timeout=20)
    # close() adds SESSION_END in one more batch.
    bodies = stored(server, sid)
    assert len(bodies) == math.ceil((logged + 1) / batch) + 1
    assert [e["event"] for e in bodies[-1]["events"]] == ["SESSION_END"]
    check_event_stream(events_of(bodies))


def test_flush_threshold_sends_without_a_flush_call(server: LocalServer) -> None:
    sid = "sess-threshold"
    reporter = reporter_for(server, sid, flush_threshold=6, max_batch_size=4)
    try:
        for i in range(5):  # + SESSION_START = 6 queued: the worker drains on its own
            reporter.log(f"event-{i}")
        done = threading.Event()

        def arrived() -> bool:
            return reporter.stats.sent == 6

        for _ in range(400):
            if arrived():
                done.set()
                break
            threading.Event().wait(0.05)
        assert done.is_set(), reporter.stats
        bodies = stored(server, sid)
        assert [len(b["events"]) for b in bodies] == [4, 2]
    finally:
        reporter.close(timeout=20)


def test_close_sends_everything_queued(server: LocalServer) -> None:
    sid = "sess-close"
    reporter = reporter_for(server, sid, max_batch_size=3)
    for i in range(7):
        reporter.log(f"event-{i}", severity="WARNING")
    assert stored(server, sid) == []  # nothing sent before close
    reporter.close(timeout=20)
    events = events_of(stored(server, sid))
    check_event_stream(events)
    assert [e["event"] for e in events] == [
        "SESSION_START",
        *(["GENERIC_EVENT"] * 7),
        "SESSION_END",
    ]
    assert {e["severity"] for e in events[1:-1]} == {"WARNING"}
    assert events[-1]["duration"].count(":") == 2  # Python timedelta text, H:MM:SS[.ffffff]
    assert reporter.stats.queued == 0
    # Closed: later events are refused, nothing more arrives.
    reporter.log("too-late")
    assert len(events_of(stored(server, sid))) == 9


def test_interpreter_exit_flushes_an_open_reporter(tmp_path: Path) -> None:
    """A ``local://`` session whose reporter (built by the entry-point plugin through the
    ``tinkex_on_session`` hook) is never closed: the exit hook delivers."""
    data = tmp_path / "data"
    script = textwrap.dedent(
        f"""
        from tinkex_clients import ServiceClient
        from tinkex_telemetry import BackendReporter, default_plugin

        default_plugin().session_reporter_options.update(forward=["request"], flush_interval=600.0)
        service = ServiceClient(base_url="local://", api_key={API_KEY!r})
        sink = service.get_telemetry()
        assert isinstance(sink, BackendReporter), sink
        service.get_server_capabilities()
        sink.log("before-exit", {{"n": 1}})
        print("session", service.session_id, flush=True)
        # no flush, no close: the exit hook must deliver the queued events
        """
    )
    env = {**os.environ, "TINKEX_DATA_DIR": str(data)}
    env.pop("TINKEX_DISABLE_PLUGINS", None)
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "telemetry_" not in out.stdout + out.stderr  # no drop, no crash was logged
    assert API_KEY not in out.stdout + out.stderr
    sid = out.stdout.split("session", 1)[1].split()[0]
    server = LocalServer(ServerConfig(data_dir=data, api_keys=(API_KEY,)))
    try:
        events = events_of(stored(server, sid))
    finally:
        server.close()
    check_event_stream(events)
    names = [e.get("event_name", e["event"]) for e in events]
    assert names[0] == "SESSION_START"
    assert names[-2:] == ["before-exit", "SESSION_END"]
    assert "tinkex.http.request.stop" in names


def test_queue_bound_drops_and_counts(server: LocalServer) -> None:
    sid = "sess-bound"
    reporter = reporter_for(server, sid, max_queue_size=10, max_batch_size=100)
    try:
        for i in range(25):
            reporter.log(f"event-{i}")
        stats = reporter.stats
        # SESSION_START + 9 logs fill the queue; the other 16 are dropped and counted.
        assert (stats.queued, stats.enqueued, stats.dropped_queue_full) == (10, 10, 16)
        assert reporter.flush(timeout=20)
    finally:
        reporter.close(timeout=20)
    events = events_of(stored(server, sid))
    check_event_stream(events)
    # SESSION_END is never dropped, even into a full queue.
    assert [e.get("event_name", e["event"]) for e in events] == [
        "SESSION_START",
        *(f"event-{i}" for i in range(9)),
        "SESSION_END",
    ]
    assert reporter.stats.dropped_queue_full == 16
    assert reporter.stats.dropped_after_retries == 0


def test_a_failed_batch_is_retried_and_stored_once(server: LocalServer) -> None:
    sid = "sess-retry"
    transport = Recording(LocalTransport(server), fail_first=1)
    reporter = reporter_for(server, sid, transport, max_batch_size=100)
    try:
        for i in range(4):
            reporter.log(f"event-{i}")
        assert reporter.flush(timeout=20)
        bodies = stored(server, sid)
        assert len(bodies) == 1  # the 500 never reached the server; the retry did, once
        assert transport.attempts == 2
        events = events_of(bodies)
        check_event_stream(events)
        assert len(events) == 5
        stats = reporter.stats
        assert (stats.failed_attempts, stats.batches_sent, stats.sent) == (1, 1, 5)
        assert stats.dropped_after_retries == 0
    finally:
        reporter.close(timeout=20)


def test_a_batch_is_dropped_after_its_retries(server: LocalServer) -> None:
    sid = "sess-give-up"
    transport = Recording(LocalTransport(server), fail_first=3)
    reporter = reporter_for(server, sid, transport, max_retries=2, max_batch_size=100)
    try:
        for i in range(4):
            reporter.log(f"event-{i}")
        assert reporter.flush(timeout=20)
        assert transport.attempts == 3  # one try + two retries
        assert stored(server, sid) == []
        stats = reporter.stats
        assert (stats.failed_attempts, stats.dropped_after_retries, stats.sent) == (3, 5, 0)
    finally:
        reporter.close(timeout=20)
    # The reporter keeps working after a dropped batch: SESSION_END arrives.
    assert [e["event"] for e in events_of(stored(server, sid))] == ["SESSION_END"]


def test_a_refused_key_is_not_retried(server: LocalServer) -> None:
    sid = "sess-401"
    transport = Recording(LocalTransport(server))
    reporter = BackendReporter(
        session_id=sid,
        base_url=BASE_URL,
        api_key="tml-wrong-key-0000",
        transport=transport,
        flush_interval=600.0,
        retry_base_delay=0.01,
    )
    try:
        reporter.log("event-0")
        assert reporter.flush(timeout=20)
        assert transport.attempts == 1  # 401 is final
        stats = reporter.stats
        assert (stats.failed_attempts, stats.dropped_after_retries) == (1, 2)
    finally:
        reporter.close(timeout=20)
    assert stored(server, sid) == []


@pytest.mark.parametrize("url_form", ["local://", "local:///{data}"])
def test_hook_events_of_a_local_session_reach_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url_form: str
) -> None:
    """A backend sink built by the registered factory from a ``local://`` client config
    (no transport given) forwards that client's request and future events to the same
    local server."""
    import tinkex_clients._plugin as clients_plugin
    import tinkex_http._plugin as http_plugin
    import tinkex_server._plugin as server_plugin
    from tinkex_clients import ServiceClient
    from tinkex_server import get_local_server
    from tinkex_telemetry import TelemetryPlugin

    data = tmp_path / "data"
    monkeypatch.setenv("TINKEX_DATA_DIR", str(data))
    local = get_local_server(config=ServerConfig(data_dir=data, api_keys=(API_KEY,)))
    plugin = TelemetryPlugin(propagate=False, session_reporters=False)  # only the sink below
    hooks = tinkex_types.Hooks(
        tinkex_types.make_plugin_manager(
            load_entrypoints=False, plugins=[http_plugin, server_plugin, clients_plugin, plugin]
        )
    )
    old = tinkex_types.set_hooks(hooks)
    try:
        base_url = url_form.format(data=str(data).lstrip("/"))
        with ServiceClient(base_url=base_url, api_key=API_KEY) as service:
            factory: Callable[..., Any] = hooks.telemetry_sinks().get("backend")
            sink = factory(
                session_id=service.session_id, config=service.config, retry_base_delay=0.01
            )
            assert sink in plugin.sinks
            service.get_server_capabilities()
            sink.close(timeout=20)
            assert sink not in plugin.sinks
            sid = service.session_id
        events = events_of(stored(local, sid))
        stats = sink.stats
    finally:
        tinkex_types.set_hooks(old)
        local.close()
    assert stats.failed_attempts == 0, stats
    assert stats.dropped_after_retries == 0, stats
    assert stats.sent == stats.enqueued == len(events), stats
    check_event_stream(events)
    names = [e.get("event_name", e["event"]) for e in events]
    assert names[0] == "SESSION_START"
    assert names[-1] == "SESSION_END"
    requests = [
        e["event_data"] for e in events if e.get("event_name") == "tinkex.http.request.stop"
    ]
    assert any(str(d.get("path", "")).endswith("get_server_capabilities") for d in requests), names
    assert API_KEY not in repr(events)


def test_a_url_httpx_cannot_reach_needs_a_transport() -> None:
    with pytest.raises(TinkexValidationError) as err:
        BackendReporter(session_id="s", base_url="local://")
    assert err.value.field == "base_url"
    assert "from_config" in str(err.value)
    # A disabled reporter sends nothing, so it needs no transport.
    BackendReporter(session_id="s", base_url="local://", enabled=False).close()

    class Cfg:
        base_url = "local://"
        api_key = API_KEY
        telemetry_enabled = True

    class AsyncOnly:
        @tinkex_types.hookimpl
        def tinkex_register_transports(self, register: Callable[[str, Any], None]) -> None:
            register("aonly", lambda **_: httpx.AsyncHTTPTransport())

    hooks = tinkex_types.Hooks(
        tinkex_types.make_plugin_manager(
            load_entrypoints=False, defaults=False, plugins=[AsyncOnly()]
        )
    )
    old = tinkex_types.set_hooks(hooks)
    try:
        with pytest.raises(TinkexValidationError) as err:
            BackendReporter.from_config(Cfg(), session_id="s")
        assert err.value.field == "base_url"
        assert "'local'" in err.value.problem
        assert "aonly" in err.value.problem  # the registered schemes are listed
        cfg = Cfg()
        cfg.base_url = "aonly://somewhere"
        with pytest.raises(TinkexValidationError) as err:
            BackendReporter.from_config(cfg, session_id="s")
        assert "synchronous" in err.value.problem
    finally:
        tinkex_types.set_hooks(old)
