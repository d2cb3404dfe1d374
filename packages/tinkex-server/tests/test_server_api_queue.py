"""Queue position in ``try_again`` answers (docs/queue.md), in-process (``local://``) and over
HTTP (the app under uvicorn on 127.0.0.1): ``queue_position`` counts the model's requests
that run before a pending one (the running one, ready ones ahead, missing ``seq_id`` numbers
before a buffered one) and decreases as work proceeds; ``estimated_wait_s`` appears once the
model has step history and equals ``round(position * mean(step_times), 3)``."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tinkex_server._app import create_app
from tinkex_server._config import ServerConfig
from tinkex_server._local import LocalTransport
from tinkex_server._scheduler import STEP_HISTORY

MODEL = "tinkex/tiny-llama-100k"


class Wire:
    """Speaks the JSON wire protocol to one server (local or HTTP)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.c = client
        self.models: list[str] = []

    async def ok(self, path: str, body: Any) -> dict[str, Any]:
        r = await self.c.post(f"/api/v1/{path}", json=body)
        assert r.status_code == 200, (path, r.status_code, r.text)
        out: dict[str, Any] = r.json()
        return out

    async def poll_once(self, future: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        r = await self.c.post(
            "/api/v1/retrieve_future",
            json={"request_id": future["request_id"], "allow_metadata_only": True},
        )
        return r.status_code, r.json()

    async def again(self, future: dict[str, Any]) -> dict[str, Any]:
        """One poll that must answer 408 try_again."""
        status, body = await self.poll_once(future)
        assert status == 408, (status, body)
        assert body["type"] == "try_again", body
        assert body["queue_state"] == "active", body
        return body

    async def result(self, future: dict[str, Any]) -> dict[str, Any]:
        for _ in range(2000):
            status, body = await self.poll_once(future)
            if status != 408:
                assert status == 200, body
                assert "error" not in body, body
                return body
        raise AssertionError(f"future {future} never finished")

    async def step_times(self, model_id: str) -> list[float]:
        r = await self.c.get("/api/v1/_test/step_times", params={"target": model_id})
        assert r.status_code == 200, r.text
        times: list[float] = r.json()["step_times"]
        return times

    async def model(self) -> str:
        session = await self.ok(
            "create_session",
            {"tags": [], "user_metadata": {}, "sdk_version": "0.16.1", "project_id": None},
        )
        lora = {"rank": 4, "seed": 7, "train_unembed": True, "train_mlp": True, "train_attn": True}
        fut = await self.ok(
            "create_model",
            {
                "session_id": session["session_id"],
                "model_seq_id": len(self.models),
                "base_model": MODEL,
                "user_metadata": None,
                "lora_config": lora,
            },
        )
        await self.result(fut)
        self.models.append(str(fut["model_id"]))
        return str(fut["model_id"])

    async def forward(self, model_id: str, seq: int) -> dict[str, Any]:
        datum = {
            "model_input": {"chunks": [{"tokens": [5, 6, 7, 8]}]},
            "loss_fn_inputs": {
                "target_tokens": {"data": [6, 7, 8, 9], "dtype": "int64", "shape": [4]},
                "weights": {"data": [1.0] * 4, "dtype": "float32", "shape": [4]},
            },
        }
        body = {
            "forward_input": {"data": [datum], "loss_fn": "cross_entropy", "loss_fn_config": None},
            "model_id": model_id,
            "seq_id": seq,
        }
        return await self.ok("forward", body)


def expected_wait(times: list[float], position: int) -> float:
    """The documented formula (docs/queue.md)."""
    return round(position * (sum(times) / len(times)), 3)


async def _serve_http(app: Any) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()

    def started() -> bool:
        while not server.started and thread.is_alive():
            threading.Event().wait(0.05)
        return bool(server.started)

    assert await asyncio.to_thread(started)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 30)
        sock.close()


@pytest.fixture(params=["local", "http"])
def wire_for(
    request: pytest.FixtureRequest, make_server: Any, tmp_path: Path
) -> Callable[[Any], Any]:
    """``async with wire_for(engine) as wire``: a server with that engine (0.05 s poll hold,
    10 min seq_id grace, test routes), reached in-process or over 127.0.0.1."""
    import contextlib

    @contextlib.asynccontextmanager
    async def open_wire(engine: Any) -> AsyncIterator[Wire]:
        settings: dict[str, Any] = {
            "poll_hold_s": 0.05,
            "seq_gap_grace_s": 600.0,
            "enable_test_routes": True,
        }
        if request.param == "local":
            server = make_server(engine=engine, **settings)
            transport = LocalTransport(server)
            async with httpx.AsyncClient(
                transport=transport, base_url="local://", timeout=60
            ) as client:
                yield Wire(client)
            return
        config = ServerConfig(data_dir=tmp_path / "http-data", **settings)
        app = create_app(config, engine_factory=lambda: engine)
        async for url in _serve_http(app):
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                yield Wire(client)

    return open_wire


async def test_missing_seq_ids_count_and_positions_decrease(
    wire_for: Any, gated_engine: Any
) -> None:
    async with wire_for(gated_engine) as wire:
        mid = await wire.model()
        # seq 1 and 2 are missing: 3, 4, 5 wait behind them (and behind each other).
        later = [await wire.forward(mid, seq) for seq in (3, 4, 5)]
        bodies = [await wire.again(f) for f in later]
        assert bodies == [
            {
                "type": "try_again",
                "request_id": f["request_id"],
                "queue_state": "active",
                "queue_position": n,
            }
            for f, n in zip(later, (2, 3, 4), strict=True)
        ]
        # seq 1 runs: one step of history, every later request moved up by one.
        await wire.result(await wire.forward(mid, 1))
        times = await wire.step_times(mid)
        assert len(times) == 1
        assert times[0] > 0
        for f, n in zip(later, (1, 2, 3), strict=True):
            body = await wire.again(f)
            assert body["queue_position"] == n
            assert body["estimated_wait_s"] == expected_wait(times, n)
        # seq 2 arrives: everything runs, and the history grows with every step.
        await wire.result(await wire.forward(mid, 2))
        for f in later:
            assert "loss_fn_outputs" in await wire.result(f)
        assert len(await wire.step_times(mid)) == 5


async def test_ready_requests_behind_a_running_one(wire_for: Any, gated_engine: Any) -> None:
    engine = gated_engine
    async with wire_for(engine) as wire:
        mid, other = await wire.model(), await wire.model()
        await wire.result(await wire.forward(mid, 1))
        engine.entered.clear()
        engine.gate.clear()
        running = await wire.forward(mid, 2)
        await asyncio.to_thread(engine.entered.wait, 30)
        queued = [await wire.forward(mid, seq) for seq in (3, 4)]
        elsewhere = await wire.forward(other, 1)
        times = await wire.step_times(mid)
        assert len(times) == 1
        # The running request is not queued: its answer has no position.
        assert await wire.again(running) == {
            "type": "try_again",
            "request_id": running["request_id"],
            "queue_state": "active",
        }
        for f, n in zip(queued, (1, 2), strict=True):
            body = await wire.again(f)
            assert (body["queue_position"], body["estimated_wait_s"]) == (
                n,
                expected_wait(times, n),
            )
        # Another model's queue is its own: nothing of it is ahead, and it has no history.
        body = await wire.again(elsewhere)
        assert body["queue_position"] == 0
        assert "estimated_wait_s" not in body
        engine.gate.set()
        for f in (running, *queued, elsewhere):
            await wire.result(f)
        assert len(await wire.step_times(mid)) == 4
        assert len(await wire.step_times(other)) == 1


async def test_history_keeps_the_last_steps(make_server: Any) -> None:
    server = make_server(poll_hold_s=0.05)
    async with httpx.AsyncClient(
        transport=LocalTransport(server), base_url="local://", timeout=60
    ) as client:
        wire = Wire(client)
        mid = await wire.model()
        for seq in range(1, STEP_HISTORY + 3):
            await wire.result(await wire.forward(mid, seq))
    scheduler = server.runtime.scheduler
    times = scheduler.step_times(mid)
    assert len(times) == STEP_HISTORY
    assert scheduler.estimate_wait(mid, 3) == expected_wait(list(times), 3)
    assert scheduler.estimate_wait(mid, 0) == 0.0
    assert scheduler.estimate_wait("no-such-model", 3) is None
    assert scheduler.queue_place("no-such-request") is None


async def test_a_refused_seq_id_is_not_counted(wire_for: Any, gated_engine: Any) -> None:
    async with wire_for(gated_engine) as wire:
        mid = await wire.model()
        later = await wire.forward(mid, 3)
        assert (await wire.again(later))["queue_position"] == 2  # seq 1 and 2 missing
        refused = await wire.c.post(
            "/api/v1/forward",
            json={
                "forward_input": {"data": [], "loss_fn": "no_such_loss", "loss_fn_config": None},
                "model_id": mid,
                "seq_id": 2,
            },
        )
        assert 400 <= refused.status_code < 500, refused.text
        assert (await wire.again(later))["queue_position"] == 1  # only seq 1 is ahead now
        await wire.result(await wire.forward(mid, 1))
        assert "loss_fn_outputs" in await wire.result(later)
