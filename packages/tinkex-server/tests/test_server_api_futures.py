"""The future protocol: seq_id ordering, gaps, de-duplication, long-poll, 404/408/410,
failed futures, sampling batches and back-pressure."""

from __future__ import annotations

import asyncio
import time
from typing import Any

MODEL = "tinkex/tiny-llama-100k"


async def test_out_of_order_arrivals_run_in_seq_order(
    make_server: Any, api_for: Any, gated_engine: Any
) -> None:
    engine = gated_engine
    async with api_for(make_server(engine=engine)) as api:
        sid = await api.session()
        mid = await api.model(sid)
        # seq 3 and 2 arrive before 1: they wait.
        f3 = await api.ok(
            "optim_step", {"adam_params": {"learning_rate": 0.01}, "model_id": mid, "seq_id": 3}
        )
        f2 = await api.ok("forward_backward", api.fb_body(mid, 2))
        f1 = await api.ok("forward", api.fwd_body(mid, 1))
        for fut in (f3, f2, f1):
            await api.result(fut)
        assert api.applied(mid) == [
            (None, "CreateModel"),
            (1, "Forward"),
            (2, "ForwardBackward"),
            (3, "OptimStep"),
        ]
        # The forward_backward queued behind the optimizer step sees the new weights.
        out4 = await api.result(await api.ok("forward", api.fwd_body(mid, 4)))
        out1 = await api.result(f1)
        assert out4["metrics"]["loss:sum"] != out1["metrics"]["loss:sum"]


async def test_missing_seq_id_is_skipped_after_grace(make_server: Any, api_for: Any) -> None:
    async with api_for(make_server(seq_gap_grace_s=0.3)) as api:
        sid = await api.session()
        mid = await api.model(sid)
        f2 = await api.ok("forward", api.fwd_body(mid, 2))  # seq 1 never comes
        status, body = await api.poll(f2["request_id"])
        assert status == 200
        assert "loss_fn_outputs" in body
        assert api.applied(mid)[-1] == (2, "Forward")
        # seq 1 arriving late is refused as a user error, not executed.
        f1 = await api.ok("forward", api.fwd_body(mid, 1))
        status, body = await api.poll(f1["request_id"])
        assert status == 200
        assert body["category"] == "user"
        assert "seq_id" in body["error"]
        assert (1, "Forward") not in api.applied(mid)
        # Later numbers keep flowing.
        await api.result(await api.ok("forward", api.fwd_body(mid, 3)))


async def test_duplicates_return_the_original_future_and_apply_once(api: Any) -> None:
    sid = await api.session()
    mid = await api.model(sid)
    body = api.fb_body(mid, 1)
    first = await api.ok("forward_backward", body, headers={"X-Idempotency-Key": "k-1"})
    # Transport retry: same idempotency key.
    again = await api.ok("forward_backward", body, headers={"X-Idempotency-Key": "k-1"})
    # Higher-level retry: new key, same (model_id, seq_id).
    retry = await api.ok("forward_backward", body, headers={"X-Idempotency-Key": "k-2"})
    assert first == again == retry
    assert first["model_id"] == mid
    result = await api.result(first)
    assert await api.result(retry) == result
    # The same key on another request is still the original future.
    other = await api.ok(
        "optim_step",
        {"adam_params": {}, "model_id": mid, "seq_id": 2},
        headers={"X-Idempotency-Key": "k-1"},
    )
    assert other["request_id"] != first["request_id"]  # keys are scoped per endpoint
    await api.result(other)
    steps = api.applied(mid)
    assert steps.count((1, "ForwardBackward")) == 1
    assert steps.count((2, "OptimStep")) == 1

    # create_model de-duplicates on (session_id, model_seq_id).
    req = {
        "session_id": sid,
        "model_seq_id": 5,
        "base_model": MODEL,
        "user_metadata": None,
        "lora_config": {
            "rank": 2,
            "seed": None,
            "train_unembed": True,
            "train_mlp": True,
            "train_attn": True,
        },
    }
    a = await api.ok("create_model", req)
    b = await api.ok("create_model", req)
    assert a == b
    assert a["model_id"] == f"{sid}:train:5"
    await api.result(a)
    assert api.applied(a["model_id"]) == [(None, "CreateModel")]
    # The chosen seed is recorded (the model can be rebuilt after a restart).
    assert isinstance(api.store.get_model(a["model_id"]).lora_config["seed"], int)

    # create_sampling_session de-duplicates on (session_id, sampling_session_seq_id).
    s_req = {
        "session_id": sid,
        "sampling_session_seq_id": 0,
        "base_model": MODEL,
        "model_path": None,
    }
    assert await api.ok("create_sampling_session", s_req) == await api.ok(
        "create_sampling_session", s_req
    )
    clash = await api.post(
        "create_sampling_session", {**s_req, "base_model": "tinkex/tiny-qwen3-100k"}
    )
    assert clash.status_code == 400
    assert "sampling_session_seq_id" in clash.json()["detail"]

    # create_session caches its answer per idempotency key.
    s_body = {"tags": [], "user_metadata": {}, "sdk_version": "0.16.1", "project_id": None}
    s1 = await api.ok("create_session", s_body, headers={"X-Idempotency-Key": "sess"})
    s2 = await api.ok("create_session", s_body, headers={"X-Idempotency-Key": "sess"})
    s3 = await api.ok("create_session", s_body, headers={"X-Idempotency-Key": "other"})
    assert s1 == s2
    assert s3 != s1

    # Sampling: an idempotency key replay returns the same future.
    sampler = (await api.ok("create_sampling_session", s_req))["sampling_session_id"]
    sample = {
        "num_samples": 1,
        "prompt": {"chunks": [{"tokens": [1, 2]}]},
        "sampling_params": {"max_tokens": 2},
        "sampling_session_id": sampler,
        "seq_id": 0,
        "prompt_logprobs": False,
        "topk_prompt_logprobs": 0,
    }
    x = await api.ok("asample", sample, headers={"X-Idempotency-Key": "smp"})
    y = await api.ok("asample", sample, headers={"X-Idempotency-Key": "smp"})
    assert x == y
    await api.result(x)
    assert len(api.store.applied_steps(sampler)) == 1


async def test_long_poll_408_then_early_answer(make_server: Any, api_for: Any) -> None:
    async with api_for(make_server(poll_hold_s=0.2, seq_gap_grace_s=60)) as api:
        sid = await api.session()
        mid = await api.model(sid)
        f2 = await api.ok("forward", api.fwd_body(mid, 2))  # waits for seq 1
        r = await api.post(
            "retrieve_future", {"request_id": f2["request_id"], "allow_metadata_only": True}
        )
        assert r.status_code == 408
        assert r.json() == {
            "type": "try_again",
            "request_id": f2["request_id"],
            "queue_state": "active",
            "queue_position": 1,  # seq 1 has not arrived (docs/queue.md)
        }
    # A long hold ends as soon as the result exists.
    async with api_for(
        make_server(
            poll_hold_s=20, seq_gap_grace_s=60, data_dir=api.server.config.data_dir.parent / "b"
        )
    ) as api:
        sid = await api.session()
        mid = await api.model(sid)
        f2 = await api.ok("forward", api.fwd_body(mid, 2))
        poll = asyncio.create_task(
            api.post(
                "retrieve_future", {"request_id": f2["request_id"], "allow_metadata_only": True}
            )
        )
        await asyncio.sleep(0.2)
        assert not poll.done()
        started = time.monotonic()
        await api.ok("forward", api.fwd_body(mid, 1))
        r = await poll
        assert r.status_code == 200
        assert "loss_fn_outputs" in r.json()
        assert time.monotonic() - started < 10  # far below the 20 s hold


async def test_unknown_and_failed_futures(api: Any) -> None:
    r = await api.post(
        "retrieve_future", {"request_id": "does-not-exist", "allow_metadata_only": False}
    )
    assert r.status_code == 404
    assert "does-not-exist" in r.json()["detail"]
    sid = await api.session()
    mid = await api.model(sid)
    # A token id outside the vocabulary: the future fails with category "user".
    bad = api.fb_body(mid, 1, [api.datum([5, 6, 99999])])
    status, body = await api.poll((await api.ok("forward_backward", bad))["request_id"])
    assert status == 200
    assert body["category"] == "user"
    assert body["error"]
    # A missing loss input.
    datum = api.datum([5, 6, 7])
    del datum["loss_fn_inputs"]["weights"]
    status, body = await api.poll(
        (await api.ok("forward_backward", api.fb_body(mid, 2, [datum])))["request_id"]
    )
    assert body["category"] == "user"
    assert "weights" in body["error"]
    # Loading a checkpoint that does not exist.
    fut = await api.ok(
        "load_weights",
        {"model_id": mid, "path": f"tinker://{mid}/weights/nope", "optimizer": False, "seq_id": 3},
    )
    status, body = await api.poll(fut["request_id"])
    assert body["category"] == "user"
    assert "nope" in body["error"]
    # The model still trains afterwards (a failed call changes nothing).
    assert "metrics" in await api.result(await api.ok("forward_backward", api.fb_body(mid, 4)))
    outcomes = [(s.seq_id, s.outcome) for s in api.store.applied_steps(mid)]
    assert outcomes == [(None, "ok"), (1, "failed"), (2, "failed"), (3, "failed"), (4, "ok")]


async def test_lost_futures_answer_410_after_restart(
    make_server: Any, api_for: Any, tmp_path: Any
) -> None:
    data = tmp_path / "restart"
    server = make_server(data_dir=data, seq_gap_grace_s=60)
    async with api_for(server) as api:
        sid = await api.session()
        mid = await api.model(sid)
        done = await api.ok("forward", api.fwd_body(mid, 1))
        done_body = await api.result(done)
        pending = await api.ok("forward", api.fwd_body(mid, 3))  # seq 2 missing: stays pending
    server.close()
    async with api_for(make_server(data_dir=data)) as api:
        status, body = await api.poll(done["request_id"])
        assert status == 200
        assert body == done_body
        r = await api.post(
            "retrieve_future", {"request_id": pending["request_id"], "allow_metadata_only": True}
        )
        assert r.status_code == 410
        assert "restart" in r.json()["detail"]
        # Re-sending the lost request returns the original (lost) future: never run twice.
        again = await api.ok("forward", api.fwd_body(mid, 3))
        assert again["request_id"] == pending["request_id"]
        # The model continues after the lost number.
        await api.result(await api.ok("forward", api.fwd_body(mid, 4)))
        assert [s for s, _ in api.applied(mid)] == [None, 1, 4]


async def test_sampling_requests_are_batched(
    make_server: Any, api_for: Any, gated_engine: Any
) -> None:
    engine = gated_engine
    async with api_for(make_server(engine=engine)) as api:
        sid = await api.session()
        mid = await api.model(sid)
        sampler = (
            await api.ok(
                "create_sampling_session",
                {
                    "session_id": sid,
                    "sampling_session_seq_id": 0,
                    "base_model": MODEL,
                    "model_path": None,
                },
            )
        )["sampling_session_id"]
        engine.gate.clear()
        blocker = await api.ok("forward", api.fwd_body(mid, 1))
        await asyncio.to_thread(engine.entered.wait, 10)

        def sample(seq: int) -> dict[str, Any]:
            return {
                "num_samples": 1,
                "prompt": {"chunks": [{"tokens": [1, 2, 3]}]},
                "sampling_params": {"max_tokens": 3, "seed": seq},
                "sampling_session_id": sampler,
                "seq_id": seq,
                "prompt_logprobs": False,
                "topk_prompt_logprobs": 0,
            }

        futures = await asyncio.gather(*(api.ok("asample", sample(i)) for i in range(6)))
        engine.gate.set()
        await api.result(blocker)
        results = [await api.result(f) for f in futures]
        assert all(len(r["sequences"]) == 1 for r in results)
        assert engine.batch_sizes == [6]
        # Same seed alone or in a batch: same tokens.
        alone = await api.result(await api.ok("asample", sample(3)))
        assert alone["sequences"][0]["tokens"] == results[3]["sequences"][0]["tokens"]


async def test_sampling_back_pressure_429(
    make_server: Any, api_for: Any, gated_engine: Any
) -> None:
    engine = gated_engine
    async with api_for(make_server(engine=engine, max_queued_samples=2)) as api:
        sid = await api.session()
        mid = await api.model(sid)
        engine.gate.clear()
        blocker = await api.ok("forward", api.fwd_body(mid, 1))
        await asyncio.to_thread(engine.entered.wait, 10)
        body = {
            "num_samples": 1,
            "prompt": {"chunks": [{"tokens": [1, 2, 3]}]},
            "sampling_params": {"max_tokens": 2},
            "base_model": MODEL,
            "seq_id": 0,
            "prompt_logprobs": False,
            "topk_prompt_logprobs": 0,
        }
        ok = [await api.post("asample", {**body, "seq_id": i}) for i in range(2)]
        assert all(r.status_code == 200 for r in ok)
        r = await api.post(
            "asample", {**body, "seq_id": 2}, headers={"X-Tinker-Sampling-Backpressure": "1"}
        )
        assert r.status_code == 429
        assert r.json()["queue_state"] == "paused_capacity"
        assert r.json()["detail"]
        engine.gate.set()
        await api.result(blocker)
        for resp in ok:
            await api.result(resp.json())
        assert (await api.post("asample", {**body, "seq_id": 3})).status_code == 200


async def test_internal_faults_are_server_category_and_the_queue_survives(
    make_server: Any, api_for: Any
) -> None:
    from tinkex_server._engine import Engine

    class Broken(Engine):
        def optim_step(self, model_id: str, adam_params: Any = None) -> Any:
            raise RuntimeError("simulated engine fault")

        def save_sampler_weights(self, model_id: str, directory: Any) -> Any:
            return None  # "succeeds" without writing: storing the result fails

    async with api_for(make_server(engine=Broken(seed=0))) as api:
        sid = await api.session()
        mid = await api.model(sid)
        status, body = await api.poll(
            (await api.ok("optim_step", {"adam_params": {}, "model_id": mid, "seq_id": 1}))[
                "request_id"
            ]
        )
        assert status == 200
        assert body["category"] == "server"
        assert "simulated engine fault" in body["error"]
        fut = await api.ok("save_weights_for_sampler", {"model_id": mid, "path": "x", "seq_id": 2})
        status, body = await api.poll(fut["request_id"])
        assert status == 200
        assert body["category"] == "server"
        listed = (await api.c.get(f"/api/v1/training_runs/{mid}/checkpoints")).json()
        assert listed["checkpoints"] == []  # no half-written checkpoint row
        assert "loss_fn_outputs" in await api.result(await api.ok("forward", api.fwd_body(mid, 3)))
