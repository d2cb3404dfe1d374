"""``POST /api/v1/stream_sample``: server-sent events of token chunks and a final chunk
per sample; for a seed the concatenated stream is ``asample``'s result; a client that
closes the response stops generation on the server; refusals are the usual 4xx before any
event; the route is in the OpenAPI document.

The cancellation test serves the app with uvicorn on 127.0.0.1 (httpx's ASGI transport and
``local://`` read whole responses, so they cannot close one half-way)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tinkex_server._app import create_app
from tinkex_server._config import ServerConfig
from tinkex_server._engine import Engine
from tinkex_server.testing import serve_app

MODEL = "tinkex/tiny-llama-100k"
PROMPT = {"chunks": [{"tokens": [5, 6, 7, 8]}]}


def _body(seed: int, max_tokens: int, *, num_samples: int = 2, **params: Any) -> dict[str, Any]:
    return {
        "base_model": MODEL,
        "prompt": PROMPT,
        "num_samples": num_samples,
        "seq_id": 0,
        "sampling_params": {"max_tokens": max_tokens, "seed": seed, "temperature": 1.0, **params},
    }


def _events(text: str) -> list[tuple[str | None, dict[str, Any]]]:
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        event = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        out.append((event, json.loads("\n".join(data))))
    return out


def _collect(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_index: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        seq = by_index.setdefault(chunk["index"], {"tokens": [], "logprobs": []})
        assert "stop_reason" not in seq, "a chunk after the sample's final chunk"
        if "token_id" in chunk:
            seq["tokens"].append(chunk["token_id"])
            seq["logprobs"].append(chunk["logprob"])
        if "finish_reason" in chunk:
            seq["stop_reason"] = chunk["finish_reason"]
            assert chunk["total_tokens"] == len(seq["tokens"])
    return [by_index[i] for i in sorted(by_index)]


async def test_stream_equals_asample_for_the_same_seed(api: Any) -> None:
    for params in ({"max_tokens": 12}, {"max_tokens": 40, "stop": [9, 11, 13]}):
        body = _body(seed=1234, **params)  # type: ignore[arg-type]
        r = await api.c.post("/api/v1/stream_sample", json=body)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.text)
        assert all(event is None for event, _ in events)
        streamed = _collect([data for _, data in events])
        assert set(events[0][1]) == {"index", "token_id", "token", "logprob"}
        sampled = await api.result(await api.ok("asample", body))
        expected = [
            {"tokens": s["tokens"], "logprobs": s["logprobs"], "stop_reason": s["stop_reason"]}
            for s in sampled["sequences"]
        ]
        assert streamed == expected
        assert len(streamed) == 2
        assert streamed[0]["tokens"] != streamed[1]["tokens"]  # two samples, two seeds


async def test_refusals_are_4xx_before_any_event(api: Any) -> None:
    r = await api.c.post("/api/v1/stream_sample", json={**_body(1, 4), "base_model": "nope/x"})
    assert r.status_code in (400, 404), r.text
    assert "base_model" in r.json()["detail"]
    r = await api.c.post("/api/v1/stream_sample", json=_body(1, 4, temperature=-1.0))
    assert r.status_code in (400, 422)
    assert "temperature" in r.json()["detail"]
    r = await api.c.post("/api/v1/stream_sample", json={**_body(1, 4), "num_samples": 0})
    assert r.status_code in (400, 422)
    assert "num_samples" in r.json()["detail"]


async def test_stream_route_is_documented(api: Any) -> None:
    doc = (await api.c.get("/openapi.json")).json()
    op = doc["paths"]["/api/v1/stream_sample"]["post"]
    assert "text/event-stream" in op["responses"]["200"]["content"]
    assert {"400", "404", "422", "429"} <= set(op["responses"])
    assert op["requestBody"]["content"]["application/json"]["schema"]


class PausingEngine(Engine):
    """Holds a stream after its third token until the server says the client is gone
    (the ``on_token`` answer turns ``False``), and records what it generated."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.third = threading.Event()
        self.generated: list[int] = []
        self.stopped_by_client = threading.Event()
        self.returned = threading.Event()

    def sample_stream(self, request: Any, on_token: Any) -> Any:
        def watched(index: int, token: int, logprob: float, stop: str | None) -> bool:
            self.generated.append(token)
            go = bool(on_token(index, token, logprob, stop))
            if go and len(self.generated) == 3:
                self.third.set()
                # The server's relay: set once the client has gone away (60 s at most).
                on_token.cancelled.wait(60)
                go = not on_token.cancelled.is_set()
            if not go:
                self.stopped_by_client.set()
            return go

        try:
            return super().sample_stream(request, watched)
        finally:
            self.returned.set()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, PausingEngine]]:
    engine = PausingEngine()
    app = create_app(ServerConfig(data_dir=tmp_path / "data"), engine_factory=lambda: engine)
    try:
        with serve_app(app) as url:
            yield url, engine
    finally:
        engine.third.set()


async def test_closing_the_stream_stops_generation(served: tuple[str, PausingEngine]) -> None:
    url, engine = served
    max_tokens = 400
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        body = _body(seed=7, max_tokens=max_tokens, num_samples=1)
        async with client.stream("POST", "/api/v1/stream_sample", json=body) as r:
            assert r.status_code == 200
            got = 0
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    got += 1
                if got == 3:
                    break
        # The response is closed: the server must stop the engine's generation.
        assert await asyncio.to_thread(engine.returned.wait, 60)
        assert engine.stopped_by_client.is_set()
        assert len(engine.generated) == 3 < max_tokens
        # The engine is free again: a new stream runs to its end.
        r = await client.post("/api/v1/stream_sample", json=_body(seed=7, max_tokens=2))
        assert r.status_code == 200
        chunks = [d for _, d in _events(r.text)]
        assert [c.get("finish_reason") for c in chunks if "finish_reason" in c] == ["length"] * 2
