"""The short cuts of the sampling hot path (P6) answer exactly what the long way does.

* ``asample`` and ``retrieve_future`` are served by the middleware itself
  (``tinkex_server._routes.direct``): their refusals, crashes and wrong methods answer as
  FastAPI's routing would.
* A sampling batch is stored in one transaction; when storing one of its results fails,
  the batch is stored job by job (that job fails alone, nothing is counted twice).
* A poll held while the result is stored is handed the stored answer: the same body a
  later poll reads back from the store.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from tinkex_server._engine import Engine
from tinkex_server._sampling import SamplingService

MODEL = "tinkex/tiny-llama-100k"


def _sample(seed: int, *, tokens: int = 3) -> dict[str, Any]:
    return {
        "num_samples": 1,
        "prompt": {"chunks": [{"tokens": [1, 2, 3]}]},
        "sampling_params": {"max_tokens": tokens, "seed": seed},
        "base_model": MODEL,
        "seq_id": seed,
        "prompt_logprobs": False,
        "topk_prompt_logprobs": 0,
    }


def _one_bad_result(engine: Any) -> None:
    """Make ``engine`` (the conftest ``GatedEngine``) answer seed 13 with a result that
    cannot be stored (it is not a SampleResult)."""
    inner = engine.sample_batch

    def sample_batch(requests: Any, **kwargs: Any) -> Any:
        out = inner(requests, **kwargs)
        return [object() if r.seed == 13 else o for r, o in zip(requests, out, strict=True)]

    engine.sample_batch = sample_batch


async def test_a_batch_whose_storing_fails_is_stored_job_by_job(
    make_server: Any, api_for: Any, gated_engine: Any
) -> None:
    engine = gated_engine
    _one_bad_result(engine)
    async with api_for(make_server(engine=engine)) as api:
        sid = await api.session()
        mid = await api.model(sid)
        sampler = (
            await api.ok(
                "create_sampling_session",
                {"session_id": sid, "sampling_session_seq_id": 0, "base_model": MODEL},
            )
        )["sampling_session_id"]
        engine.gate.clear()
        blocker = await api.ok("forward", api.fwd_body(mid, 1))
        await asyncio.to_thread(engine.entered.wait, 10)
        futures = [
            await api.ok("asample", {**_sample(seed), "sampling_session_id": sampler})
            for seed in (11, 12, 13, 14)
        ]
        engine.gate.set()
        await api.result(blocker)
        results = [await api.poll(f["request_id"]) for f in futures]
        assert engine.batch_sizes == [4]  # one batch: its transaction failed, then job by job
        assert [status for status, _ in results] == [200] * 4
        bodies = [body for _, body in results]
        assert bodies[2]["category"] == "server"
        for body in (bodies[0], bodies[1], bodies[3]):
            assert len(body["sequences"][0]["tokens"]) == 3
        # Each sample applied (or failed) once: the rolled-back batch left nothing behind.
        outcomes = [(s.request_id, s.outcome) for s in api.store.applied_steps(sampler)]
        ids = [f["request_id"] for f in futures]
        assert sorted(outcomes) == sorted(
            (rid, "failed" if i == 2 else "ok") for i, rid in enumerate(ids)
        )
        usage = (await api.c.get(f"/api/v1/sessions/{sid}/usage")).json()
        assert usage["totals"]["sample_requests"] == 3
        assert usage["totals"]["sampled_tokens"] == 9


async def test_a_held_poll_is_handed_what_a_later_poll_reads(
    make_server: Any, api_for: Any, gated_engine: Any
) -> None:
    engine = gated_engine
    async with api_for(make_server(engine=engine, poll_hold_s=30)) as api:
        sid = await api.session()
        mid = await api.model(sid)
        engine.gate.clear()
        blocker = await api.ok("forward", api.fwd_body(mid, 1))
        await asyncio.to_thread(engine.entered.wait, 10)
        future = await api.ok("asample", _sample(5, tokens=6))
        body = {"request_id": future["request_id"], "allow_metadata_only": True}
        held = asyncio.create_task(api.post("retrieve_future", body))
        for _ in range(3000):  # the poll is held on the server's own loop thread
            if api.server.runtime.hub.held:
                break
            await asyncio.sleep(0.01)
        assert api.server.runtime.hub.held == 1
        engine.gate.set()
        await api.result(blocker)
        first = await held
        again = await api.post("retrieve_future", body)
        assert first.status_code == again.status_code == 200
        assert first.content == again.content
        assert first.headers["content-type"] == again.headers["content-type"]
        assert len(first.json()["sequences"][0]["tokens"]) == 6


async def test_direct_routes_answer_as_the_router_would(make_server: Any, api_for: Any) -> None:
    async with api_for(make_server()) as api:
        # Wrong method: the router's 405 naming the allowed one.
        r = await api.c.get("/api/v1/asample")
        assert r.status_code == 405
        assert r.headers["allow"] == "POST"
        r = await api.c.get("/api/v1/retrieve_future")
        assert r.status_code == 405
        # A refusal (ApiProblem) and a schema mismatch: the app's handlers' bodies.
        r = await api.post("retrieve_future", {"request_id": "nope", "allow_metadata_only": False})
        assert r.status_code == 404
        assert r.json() == {"detail": "unknown request_id 'nope'"}
        r = await api.post("asample", {"num_samples": "many"})
        assert r.status_code == 422
        assert "num_samples" in r.json()["detail"]
        r = await api.c.post(
            "/api/v1/asample", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400
        assert r.json()["detail"].startswith("body: malformed JSON")


class _Crashing(SamplingService):
    def asample(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated fault in asample")


async def test_a_crash_in_a_direct_route_is_the_app_500(make_server: Any, api_for: Any) -> None:
    server = make_server()
    async with api_for(server) as api:
        await api.session()  # starts the runtime
        runtime = server.runtime
        runtime.sampling = _Crashing(runtime.sampling.parts, runtime.sampling.desk)
        r = await api.post("asample", _sample(1))
        assert r.status_code == 500
        assert r.headers["x-should-retry"] == "false"
        assert r.json() == {"detail": "internal server error: RuntimeError"}
        # The server keeps answering.
        assert (await api.c.get("/api/v1/healthz")).status_code == 200


class _GatedSampling(Engine):
    """An engine whose first sampling batch waits at a gate."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batch_sizes: list[int] = []

    def sample_batch(self, requests: Any, **kwargs: Any) -> Any:
        self.batch_sizes.append(len(requests))
        if len(self.batch_sizes) == 1:
            self.entered.set()
            self.gate.wait(30)
        return super().sample_batch(requests, **kwargs)


async def test_samples_queued_behind_a_sampling_batch_run_as_one_batch(
    make_server: Any, api_for: Any
) -> None:
    engine = _GatedSampling()
    async with api_for(make_server(engine=engine)) as api:
        # The first request finds the engine idle: its batch starts from its submission.
        first = await api.ok("asample", _sample(1))
        await asyncio.to_thread(engine.entered.wait, 10)
        queued = [await api.ok("asample", _sample(seed)) for seed in (2, 3, 4)]
        engine.gate.set()
        bodies = [await api.result(f) for f in (first, *queued)]
        assert engine.batch_sizes == [1, 3]
        assert all(len(b["sequences"][0]["tokens"]) == 3 for b in bodies)
        # A request arriving later, to an idle engine, runs alone at once.
        assert len((await api.result(await api.ok("asample", _sample(5))))["sequences"]) == 1
        assert engine.batch_sizes == [1, 3, 1]
