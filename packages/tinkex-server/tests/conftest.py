"""Fixtures of the tinkex-server API tests: an in-process server per test (real engine,
tiniest built-in model) reached through the ``local://`` transport, and a small helper that
speaks the wire protocol the way the official 0.16.1 client does (no ``type`` keys,
explicit nulls)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tinkex_server._config import ServerConfig
from tinkex_server._engine import Engine
from tinkex_server._local import LocalServer, LocalTransport

MODEL = "tinkex/tiny-llama-100k"


@pytest.fixture(autouse=True)
def _torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class GatedEngine(Engine):
    """An engine whose ``forward`` can be held at a gate (to queue work behind it) and
    which records the size of every sampling batch."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batch_sizes: list[int] = []

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        self.gate.wait(30)
        return super().forward(*args, **kwargs)

    def sample_batch(self, requests: Any, **kwargs: Any) -> Any:
        self.batch_sizes.append(len(requests))
        return super().sample_batch(requests, **kwargs)


class Api:
    """Speaks to one server like the 0.16.1 client (plus polling helpers)."""

    def __init__(self, client: httpx.AsyncClient, server: LocalServer) -> None:
        self.c = client
        self.server = server

    @property
    def store(self) -> Any:
        return self.server.runtime.store

    async def post(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        return await self.c.post(f"/api/v1/{path}", json=body, **kw)

    async def ok(self, path: str, body: Any, **kw: Any) -> dict[str, Any]:
        r = await self.post(path, body, **kw)
        assert r.status_code == 200, (path, r.status_code, r.text)
        out: dict[str, Any] = r.json()
        return out

    async def poll(self, request_id: str, *, max_polls: int = 200) -> tuple[int, dict[str, Any]]:
        """Poll until not 408; returns (status, body)."""
        for _ in range(max_polls):
            r = await self.post(
                "retrieve_future", {"request_id": request_id, "allow_metadata_only": True}
            )
            if r.status_code != 408:
                return r.status_code, r.json()
        raise AssertionError(f"future {request_id} never completed")

    async def result(self, future: dict[str, Any]) -> dict[str, Any]:
        status, body = await self.poll(future["request_id"])
        assert status == 200, body
        assert "error" not in body, body
        return body

    async def session(self) -> str:
        body = await self.ok(
            "create_session",
            {"tags": [], "user_metadata": {}, "sdk_version": "0.16.1", "project_id": None},
        )
        return str(body["session_id"])

    async def model(self, session_id: str, seq: int = 0, *, rank: int = 4, seed: int = 7) -> str:
        fut = await self.ok(
            "create_model",
            {
                "session_id": session_id,
                "model_seq_id": seq,
                "base_model": MODEL,
                "user_metadata": None,
                "lora_config": {
                    "rank": rank,
                    "seed": seed,
                    "train_unembed": True,
                    "train_mlp": True,
                    "train_attn": True,
                },
            },
        )
        body = await self.result(fut)
        # tinker 0.38 CreateModelResponse: the model id and its type discriminator
        assert body == {"model_id": fut["model_id"], "type": "create_model"}
        return str(body["model_id"])

    @staticmethod
    def datum(tokens: list[int], weights: list[float] | None = None) -> dict[str, Any]:
        n = len(tokens) - 1
        w = weights if weights is not None else [1.0] * n
        return {
            "model_input": {"chunks": [{"tokens": tokens[:-1]}]},
            "loss_fn_inputs": {
                "target_tokens": {"data": tokens[1:], "dtype": "int64", "shape": [n]},
                "weights": {"data": w, "dtype": "float32", "shape": [n]},
            },
        }

    def fb_body(self, model_id: str, seq: int, data: list[dict[str, Any]] | None = None) -> Any:
        return {
            "forward_backward_input": {
                "data": data or [self.datum([5, 6, 7, 8, 9])],
                "loss_fn": "cross_entropy",
                "loss_fn_config": None,
            },
            "model_id": model_id,
            "seq_id": seq,
        }

    def fwd_body(self, model_id: str, seq: int, data: list[dict[str, Any]] | None = None) -> Any:
        return {
            "forward_input": {
                "data": data or [self.datum([5, 6, 7, 8, 9])],
                "loss_fn": "cross_entropy",
                "loss_fn_config": None,
            },
            "model_id": model_id,
            "seq_id": seq,
        }

    def applied(self, target: str) -> list[tuple[int | None, str]]:
        return [(s.seq_id, s.request_type) for s in self.store.applied_steps(target)]


ServerFactory = Callable[..., LocalServer]


@pytest.fixture
def gated_engine() -> Iterator[GatedEngine]:
    engine = GatedEngine()
    yield engine
    engine.gate.set()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Build in-process servers (closed at teardown); keyword args go to ServerConfig."""
    made: list[LocalServer] = []

    def make(
        *, engine: Engine | None = None, data_dir: Path | None = None, **cfg: Any
    ) -> LocalServer:
        cfg.setdefault("poll_hold_s", 5.0)
        config = ServerConfig(data_dir=data_dir or tmp_path / "data", **cfg)
        factory = (lambda: engine) if engine is not None else (lambda: Engine(seed=0))
        server = LocalServer(config, engine_factory=factory)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


@pytest.fixture
async def api(make_server: ServerFactory) -> AsyncIterator[Api]:
    server = make_server()
    async with httpx.AsyncClient(
        transport=LocalTransport(server), base_url="local://", timeout=60
    ) as client:
        yield Api(client, server)


@pytest.fixture
def api_for() -> Callable[[LocalServer], Any]:
    """``async with api_for(server) as api`` for tests that build their own server."""
    import contextlib

    @contextlib.asynccontextmanager
    async def open_api(server: LocalServer) -> AsyncIterator[Api]:
        async with httpx.AsyncClient(
            transport=LocalTransport(server), base_url="local://", timeout=60
        ) as client:
            yield Api(client, server)

    return open_api
