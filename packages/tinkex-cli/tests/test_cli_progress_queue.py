"""The CLI's waiting spinner shows the queue place (docs/queue.md): :class:`QueueWatch`
renders the label from queue-state events, ``waiting(..., hooks=...)`` listens only while it
runs and draws the label on a terminal's stderr; against a real server whose engine is held,
a checkpoint save queued behind a step shows "(2nd in queue, ~N s)"."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tinkex_clients._plugin as clients_plugin
import tinkex_http._plugin as http_plugin
from tinkex_cli._progress import QueueWatch, waiting
from tinkex_clients import ServiceClient
from tinkex_http import PollPolicy
from tinkex_server._config import ServerConfig
from tinkex_server._engine import Engine
from tinkex_server._local import _SERVERS as local_servers
from tinkex_server._local import _SERVERS_LOCK as local_servers_lock
from tinkex_server._local import LocalServer
from tinkex_types import Datum, Hooks, ModelInput, QueueStateEvent, make_plugin_manager


def event(state: str = "active", position: int | None = None, wait: float | None = None) -> Any:
    return QueueStateEvent(
        request_id="r",
        queue_state=state,
        previous_state=None,
        reason="why",
        queue_position=position,
        estimated_wait_s=wait,
    )


def private_hooks() -> Hooks:
    return Hooks(make_plugin_manager(load_entrypoints=False, plugins=[http_plugin, clients_plugin]))


def test_watch_descriptions() -> None:
    seen: list[str] = []
    watch = QueueWatch("Saving checkpoint", seen.append)
    assert watch.description == "Saving checkpoint"
    for e in (
        event(position=2, wait=12.4),
        event(position=0),
        event(),
        event("paused_capacity", position=4, wait=30.0),
        event("paused_rate_limit"),
    ):
        watch.tinkex_on_queue_state_change(e)
    assert seen == [
        "Saving checkpoint (3rd in queue, ~12 s)",
        "Saving checkpoint (1st in queue)",
        "Saving checkpoint",
        "Saving checkpoint (paused: paused_capacity, 5th in queue, ~30 s)",
        "Saving checkpoint (paused: paused_rate_limit)",
    ]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_spinner_listens_while_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    hooks = private_hooks()
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with waiting("Sampling", hooks=hooks) as watch:
        assert watch is not None
        hooks.on_queue_state_change(event(position=1, wait=4.6))
        assert watch.description == "Sampling (2nd in queue, ~5 s)"
    hooks.on_queue_state_change(event(position=7))  # after the block: not listening
    assert watch.description == "Sampling (2nd in queue, ~5 s)"
    assert "Sampling (2nd in queue, ~5 s)" in terminal.getvalue()
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal: no spinner, no watch
    with waiting("Sampling", hooks=hooks) as none:
        assert none is None


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


@pytest.fixture
def held_local(tmp_path: Path) -> Iterator[tuple[str, HeldEngine, LocalServer]]:
    engine = HeldEngine()
    data_dir = (tmp_path / "data").resolve()
    config = ServerConfig(data_dir=data_dir, poll_hold_s=0.05)
    server = LocalServer(config, engine_factory=lambda: engine)
    with local_servers_lock:
        local_servers[data_dir] = server
    try:
        yield f"local://{data_dir}", engine, server
    finally:
        engine.gate.set()
        server.close()


def _until(condition: Any) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        threading.Event().wait(0.02)


def test_a_queued_save_shows_its_place(
    held_local: tuple[str, HeldEngine, LocalServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, engine, server = held_local
    hooks = private_hooks()
    data = [
        Datum(
            model_input=ModelInput.from_ints([5, 6, 7]),
            loss_fn_inputs={"target_tokens": [6, 7, 8], "weights": [1.0] * 3},
        )
    ]
    policy = PollPolicy(backoff_initial=0.01, backoff_max=0.05, paused_delay=0.0)
    service = ServiceClient(base_url=url, hooks=hooks, poll_policy=policy)
    monkeypatch.setattr("sys.stderr", Terminal())
    try:
        training = service.create_lora_training_client("tinkex/tiny-llama-100k", rank=4)
        training.forward_backward(data, "cross_entropy").result()
        times = server.runtime.scheduler.step_times(training.model_id)
        engine.entered.clear()
        engine.gate.clear()
        step = training.forward_backward(data, "cross_entropy")
        _until(engine.entered.is_set)
        with waiting("Saving checkpoint", hooks=hooks) as watch:
            assert watch is not None
            save = training.save_state("queued")
            _until(lambda: "in queue" in watch.description)
            shown = watch.description
            engine.gate.set()
            step.result()
            save.result()
    finally:
        service.close()
    wait = round(1 * (sum(times) / len(times)), 3)
    assert shown == f"Saving checkpoint (2nd in queue, ~{round(wait)} s)"
    assert re.fullmatch(r"Saving checkpoint \(2nd in queue, ~\d+ s\)", shown)
