"""ServiceClient announces its session through ``tinkex_on_session``: ``start`` once after
the session exists on the server, ``end`` once on the first close, whichever way it closes;
``get_telemetry()`` hands out what a plugin returned on start. Real local server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tinkex_clients import ServiceClient
from tinkex_server import LocalServer, ServerConfig, get_local_server
from tinkex_types import BadRequestError, Hooks, SessionEvent, hookimpl, make_plugin_manager


class Handle:
    """Stands in for a telemetry handle (tinkex-telemetry returns a BackendReporter)."""


class Recorder:
    def __init__(self, server: LocalServer | None = None) -> None:
        self.server = server
        self.handle = Handle()
        self.seen: list[SessionEvent] = []
        self.known_to_server: list[bool] = []
        self.threads: list[int] = []

    @hookimpl
    def tinkex_on_session(self, event: SessionEvent) -> Any:
        self.seen.append(event)
        self.threads.append(threading.get_ident())
        if self.server is not None and event.phase == "start":
            sid = event.session_id
            row = self.server.call(lambda rt: rt.store.get_session(sid))
            self.known_to_server.append(row is not None)
        return self.handle if event.phase == "start" else None

    def phases(self) -> list[str]:
        return [e.phase for e in self.seen]


class Exploding:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def tinkex_on_session(self, event: SessionEvent) -> Any:
        self.calls += 1
        raise RuntimeError("observer bug")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    directory = tmp_path_factory.mktemp("tinkex-session-hook")
    srv = get_local_server(config=ServerConfig(data_dir=directory))
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def local(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> LocalServer:
    """``local://`` resolves to the module's server for this test."""
    monkeypatch.setenv("TINKEX_DATA_DIR", str(Path(server.config.data_dir)))
    return server


def hooks_with(*plugins: object) -> Hooks:
    """The built-in plugins (http, clients, server...) plus ``plugins``."""
    return Hooks(make_plugin_manager(load_entrypoints=False, plugins=list(plugins)))


def test_start_after_create_session_and_end_once_on_close(local: LocalServer) -> None:
    recorder = Recorder(local)
    svc = ServiceClient(base_url="local://", hooks=hooks_with(recorder))
    try:
        assert recorder.phases() == ["start"]
        start = recorder.seen[0]
        assert start.session_id == svc.session_id
        assert start.session_id
        assert recorder.known_to_server == [True]  # fired after create_session succeeded
        assert start.base_url == svc.config.base_url
        assert start.config is svc.config
        assert start.sdk_version == svc.config.sdk_version
        assert svc.get_telemetry() is recorder.handle
        assert svc.create_rest_client().get_telemetry() is recorder.handle
        svc.get_server_capabilities()
        assert recorder.phases() == ["start"]  # work on the session fires nothing more
    finally:
        svc.close()
    svc.close()
    with svc:
        pass  # __exit__ closes a third time
    assert recorder.phases() == ["start", "end"]
    end = recorder.seen[1]
    assert end.session_id == start.session_id
    assert end.config is svc.config
    assert end.timestamp >= start.timestamp


def test_context_manager_exit_ends_the_session(local: LocalServer) -> None:
    recorder = Recorder()
    with ServiceClient(base_url="local://", hooks=hooks_with(recorder)) as svc:
        sid = svc.session_id
        assert recorder.phases() == ["start"]
    assert svc.closed
    assert recorder.phases() == ["start", "end"]
    assert {e.session_id for e in recorder.seen} == {sid}


async def test_async_close_ends_once_off_the_running_loop(local: LocalServer) -> None:
    recorder = Recorder()
    svc = await ServiceClient.create_async(base_url="local://", hooks=hooks_with(recorder))
    assert recorder.phases() == ["start"]
    assert svc.get_telemetry() is recorder.handle
    await svc.aclose()
    await svc.aclose()
    svc.close()
    async with svc:
        pass
    assert recorder.phases() == ["start", "end"]
    # The end observer may block briefly (a final flush): never on the caller's loop.
    assert recorder.threads[1] != threading.get_ident()


async def test_concurrent_closes_end_once(local: LocalServer) -> None:
    recorder = Recorder()
    svc = ServiceClient(base_url="local://", hooks=hooks_with(recorder))
    await asyncio.gather(svc.aclose(), svc.aclose(), asyncio.to_thread(svc.close))
    assert recorder.phases() == ["start", "end"]


def test_two_clients_two_sessions(local: LocalServer) -> None:
    recorder = Recorder()
    hooks = hooks_with(recorder)
    with ServiceClient(base_url="local://", hooks=hooks) as a:
        with ServiceClient(base_url="local://", hooks=hooks) as b:
            assert a.session_id != b.session_id
        assert [(e.phase, e.session_id) for e in recorder.seen] == [
            ("start", a.session_id),
            ("start", b.session_id),
            ("end", b.session_id),
        ]
    assert recorder.seen[-1].phase == "end"
    assert recorder.seen[-1].session_id == a.session_id


def test_a_raising_observer_breaks_nothing(local: LocalServer) -> None:
    bad, good = Exploding(), Recorder()
    svc = ServiceClient(base_url="local://", hooks=hooks_with(bad, good))
    try:
        assert svc.get_telemetry() is good.handle
        assert svc.get_server_capabilities().supported_models
    finally:
        svc.close()
    assert bad.calls == 2
    assert good.phases() == ["start", "end"]
    assert svc.closed


def test_without_a_session_plugin_there_is_no_telemetry(local: LocalServer) -> None:
    with ServiceClient(base_url="local://", hooks=hooks_with()) as svc:
        assert svc.get_telemetry() is None
        assert svc.create_rest_client().get_telemetry() is None


def test_a_failed_create_session_announces_nothing() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"detail": "bad session request"})

    recorder = Recorder()
    with pytest.raises(BadRequestError):
        ServiceClient(
            api_key="tml-test-key",
            base_url="http://fake.test",
            transport=httpx.MockTransport(refuse),
            hooks=hooks_with(recorder),
        )
    assert recorder.seen == []
