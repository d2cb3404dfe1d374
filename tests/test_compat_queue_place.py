"""Compatibility of the queue place (docs/queue.md) with the official tinker 0.16.1 client:
while the server's engine holds one ``forward_backward``, the client's next requests get 408
``try_again`` answers that carry ``queue_position`` and ``estimated_wait_s``; the client still
reads their queue state (``active``, not ``unknown``), keeps polling and gets every result.
The server is the app under uvicorn on 127.0.0.1; its 408 bodies are recorded on the way out."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tinkex_server._app import create_app
from tinkex_server._config import ServerConfig
from tinkex_server._engine import Engine
from tinkex_server.testing import serve_app

pytestmark = [pytest.mark.conformance]

MODEL = "tinkex/tiny-llama-100k"


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


class Recording:
    """ASGI wrapper keeping the JSON bodies of ``retrieve_future``'s 408 answers."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/retrieve_future"):
            await self.app(scope, receive, send)
            return
        status = [0]

        async def keep(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and status[0] == 408:
                self.bodies.append(json.loads(message["body"]))
            await send(message)

        await self.app(scope, receive, keep)


@pytest.fixture
def held_server(tmp_path: Path) -> Iterator[tuple[str, HeldEngine, Recording]]:
    engine = HeldEngine()
    config = ServerConfig(data_dir=tmp_path / "data", poll_hold_s=0.05)
    app = Recording(create_app(config, engine_factory=lambda: engine))
    try:
        with serve_app(app) as url:
            yield url, engine, app
    finally:
        engine.gate.set()


class Observer:
    """What the official client reports to its queue-state observer."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def on_queue_state_change(self, queue_state: Any, queue_state_reason: str | None) -> None:
        self.calls.append((queue_state.value, queue_state_reason))


def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        threading.Event().wait(0.02)


@pytest.mark.timeout(600)
def test_official_0_16_1_client_reads_try_again_with_a_place(
    held_server: tuple[str, HeldEngine, Recording],
) -> None:
    import tinker
    from tinker import types

    url, engine, recording = held_server
    service = tinker.ServiceClient(base_url=url, api_key="tml-compat-queue")
    training = service.create_lora_training_client(base_model=MODEL, rank=4)
    observer = Observer()
    training._queue_state_logger = observer  # the observer its futures report to
    data = [
        types.Datum(
            model_input=types.ModelInput.from_ints([5, 6, 7, 8]),
            loss_fn_inputs={"target_tokens": [6, 7, 8, 9], "weights": [1.0] * 4},
        )
    ]
    training.forward_backward(data, "cross_entropy").result()  # step history
    engine.entered.clear()
    engine.gate.clear()
    futures = [training.forward_backward(data, "cross_entropy")]
    _until(engine.entered.is_set, "the held step")
    futures += [training.forward_backward(data, "cross_entropy") for _ in range(2)]

    def places() -> set[int]:
        return {b["queue_position"] for b in list(recording.bodies) if "queue_position" in b}

    _until(lambda: places() == {1, 2}, "try_again answers with both places")
    engine.gate.set()
    outputs = [f.result() for f in futures]
    assert all(len(out.loss_fn_outputs) == 1 for out in outputs)
    placed = [b for b in recording.bodies if "queue_position" in b]
    assert all(isinstance(b["estimated_wait_s"], float) for b in placed)
    assert observer.calls
    assert set(observer.calls) == {("active", None)}
