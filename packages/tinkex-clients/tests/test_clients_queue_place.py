"""Queue position through the SDK (docs/queue.md), on ``local://`` and over HTTP (the app under
uvicorn on 127.0.0.1): while the engine holds one ``forward_backward``, the next ones of the
same training client report their place in the model's queue (1 and 2 requests ahead) with
the estimate ``round(position * mean(step_times), 3)`` through ``on_queue_state_change``
events, and the default observer logs "... is 2nd in queue, ~N s"."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import tinkex_clients._plugin as clients_plugin
import tinkex_http._plugin as http_plugin
from tinkex_clients import ServiceClient
from tinkex_server._app import create_app
from tinkex_server._config import ServerConfig
from tinkex_server._engine import Engine
from tinkex_server._local import _SERVERS as local_servers
from tinkex_server._local import _SERVERS_LOCK as local_servers_lock
from tinkex_server._local import LocalServer
from tinkex_server.testing import serve_app
from tinkex_types import (
    Datum,
    Hooks,
    ModelInput,
    QueueStateEvent,
    hookimpl,
    make_plugin_manager,
)

from .conftest import FAST_POLLS, TINY

SETTINGS: dict[str, Any] = {"poll_hold_s": 0.05, "enable_test_routes": True}
DATA = [
    Datum(
        model_input=ModelInput.from_ints([5, 6, 7, 8]),
        loss_fn_inputs={"target_tokens": [6, 7, 8, 9], "weights": [1.0] * 4},
    )
]


class HeldEngine(Engine):
    """``forward_backward`` waits at :attr:`gate` (signalling :attr:`entered`)."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def forward_backward(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        self.gate.wait(60)
        return super().forward_backward(*args, **kwargs)


class Recorder:
    def __init__(self) -> None:
        self.events: list[QueueStateEvent] = []

    @hookimpl
    def tinkex_on_queue_state_change(self, event: QueueStateEvent) -> None:
        self.events.append(event)

    def by_request(self) -> dict[str, list[QueueStateEvent]]:
        out: dict[str, list[QueueStateEvent]] = {}
        for event in list(self.events):
            out.setdefault(event.request_id, []).append(event)
        return out


def _serve_http(app: Any) -> Iterator[str]:
    with serve_app(app) as url:
        yield url


@pytest.fixture(params=["local", "http"])
def held(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, HeldEngine, Any]]:
    """(base URL, engine, scheduler of that server)."""
    engine = HeldEngine()
    data_dir = (tmp_path / "data").resolve()
    try:
        if request.param == "local":
            server = LocalServer(
                ServerConfig(data_dir=data_dir, **SETTINGS), engine_factory=lambda: engine
            )
            with local_servers_lock:
                local_servers[data_dir] = server
            try:
                yield f"local://{data_dir}", engine, lambda: server.runtime.scheduler
            finally:
                server.close()
        else:
            app = create_app(
                ServerConfig(data_dir=data_dir, **SETTINGS), engine_factory=lambda: engine
            )
            for url in _serve_http(app):
                yield url, engine, lambda: app.state.tinkex.scheduler
    finally:
        engine.gate.set()


def _wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        threading.Event().wait(0.02)


def test_events_and_log_lines_show_the_place(held: tuple[str, HeldEngine, Any]) -> None:
    url, engine, scheduler = held
    recorder = Recorder()
    hooks = Hooks(
        make_plugin_manager(load_entrypoints=False, plugins=[http_plugin, clients_plugin, recorder])
    )
    service = ServiceClient(base_url=url, api_key="tml-test", hooks=hooks, poll_policy=FAST_POLLS)
    try:
        training = service.create_lora_training_client(TINY, rank=4, seed=1)
        model_id = training.model_id
        training.forward_backward(DATA, "cross_entropy").result()  # one step of history
        times = list(scheduler().step_times(model_id))
        assert len(times) == 1
        recorder.events.clear()
        engine.entered.clear()
        engine.gate.clear()
        with structlog.testing.capture_logs() as logs:
            running = training.forward_backward(DATA, "cross_entropy")
            _wait_for(engine.entered.is_set, "the held step")
            queued = [training.forward_backward(DATA, "cross_entropy") for _ in range(2)]

            def placed() -> set[int]:
                return {e.queue_position for e in recorder.events if e.queue_position is not None}

            _wait_for(lambda: placed() == {1, 2}, "both queued requests to report a place")
            engine.gate.set()
            for future in (running, *queued):
                future.result()
    finally:
        service.close()
    # The three held requests' events.
    seen = {
        rid: evs
        for rid, evs in recorder.by_request().items()
        if evs[0].request_type == "ForwardBackward"
    }
    assert len(seen) == 3
    firsts = sorted(
        (evs[0].queue_position, evs[0].estimated_wait_s)
        for evs in seen.values()
        if evs[0].queue_position is not None
    )
    assert firsts == [(1, round(1 * times[0], 3)), (2, round(2 * times[0], 3))]
    for events in seen.values():
        assert all(e.model_id == model_id for e in events)
        positions = [e.queue_position for e in events if e.queue_position is not None]
        assert positions == sorted(positions, reverse=True)  # only ever moves up
    lines = [entry["event"] for entry in logs if entry.get("queue_position") is not None]
    assert lines, logs
    assert re.fullmatch(
        rf"Request \S+ \(ForwardBackward\) for {re.escape(model_id)} is (2nd|3rd) in queue, "
        r"~\d+ s",
        lines[0],
    )
