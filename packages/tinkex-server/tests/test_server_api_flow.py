"""Every endpoint of the JSON generation, driven the way the 0.16.1 client drives it,
against the in-process server (real engine, tiniest built-in model)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import httpx
from safetensors.torch import load as st_load

from tinkex_types import (
    Checkpoint,
    CheckpointsListResponse,
    CreateSessionResponse,
    ForwardBackwardOutput,
    GetInfoResponse,
    GetSamplerResponse,
    GetServerCapabilitiesResponse,
    SampleResponse,
    TrainingRun,
    TrainingRunsResponse,
    WeightsInfoResponse,
)

MODEL = "tinkex/tiny-llama-100k"


async def test_session_heartbeat_capabilities_health(api: Any) -> None:
    body = await api.ok(
        "create_session",
        {"tags": ["a"], "user_metadata": {"k": "v"}, "sdk_version": "0.16.1", "project_id": None},
    )
    CreateSessionResponse.model_validate(body)
    sid = body["session_id"]
    assert ":" not in sid
    assert "/" not in sid
    assert await api.ok("session_heartbeat", {"session_id": sid}) == {"type": "session_heartbeat"}
    r = await api.post("session_heartbeat", {"session_id": "nope"})
    assert r.status_code == 404
    assert "nope" in r.json()["detail"]

    caps = (await api.c.get("/api/v1/get_server_capabilities")).json()
    parsed = GetServerCapabilitiesResponse.model_validate(caps)
    assert MODEL in parsed.model_names()
    assert all(isinstance(m, dict) and m["model_name"] for m in caps["supported_models"])
    assert (await api.c.get("/api/v1/healthz")).json() == {"status": "ok"}

    r = await api.c.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/api/v1/forward_backward" in paths
    assert "/api/v1/retrieve_future" in paths


async def test_training_loop_and_info(api: Any) -> None:
    sid = await api.session()
    mid = await api.model(sid)
    assert mid == f"{sid}:train:0"

    info = GetInfoResponse.model_validate(await api.ok("get_info", {"model_id": mid}))
    assert info.model_id == mid
    assert info.lora_rank == 4
    assert info.is_lora
    assert info.model_data.model_name == MODEL
    # An absolute directory the official client's AutoTokenizer loads offline.
    tok_dir = Path(str(info.model_data.tokenizer_id))
    assert tok_dir.is_absolute()
    assert (tok_dir / "tokenizer.json").is_file()
    assert (tok_dir / "tokenizer_config.json").is_file()
    assert info.model_data.arch == "llama"

    before = ForwardBackwardOutput.model_validate(
        await api.result(await api.ok("forward", api.fwd_body(mid, 1)))
    )
    losses = []
    for step in range(3):
        out = await api.result(await api.ok("forward_backward", api.fb_body(mid, 2 + 2 * step)))
        fb = ForwardBackwardOutput.model_validate(out)
        assert set(out["loss_fn_outputs"][0]["logprobs"]) == {"data", "dtype", "shape"}
        assert fb.loss_fn_outputs[0]["logprobs"].shape == [4]
        losses.append(fb.metrics["loss:sum"])
        opt = await api.result(
            await api.ok(
                "optim_step",
                {"adam_params": {"learning_rate": 0.01}, "model_id": mid, "seq_id": 3 + 2 * step},
            )
        )
        assert all(k.count(":") == 1 for k in opt["metrics"])
    assert abs(losses[0] - before.metrics["loss:sum"]) < 1e-4  # forward does not train
    assert losses[-1] < losses[0]
    assert api.applied(mid) == [
        (None, "CreateModel"),
        (1, "Forward"),
        (2, "ForwardBackward"),
        (3, "OptimStep"),
        (4, "ForwardBackward"),
        (5, "OptimStep"),
        (6, "ForwardBackward"),
        (7, "OptimStep"),
    ]
    # adam_params may be {} (0.16.1 sends only the keys the user set).
    assert "metrics" in await api.result(
        await api.ok("optim_step", {"adam_params": {}, "model_id": mid, "seq_id": 8})
    )


async def test_weights_samplers_and_rest(api: Any) -> None:
    sid = await api.session()
    mid = await api.model(sid)
    await api.result(await api.ok("forward_backward", api.fb_body(mid, 1)))
    await api.result(
        await api.ok(
            "optim_step", {"adam_params": {"learning_rate": 0.05}, "model_id": mid, "seq_id": 2}
        )
    )
    saved = await api.result(
        await api.ok(
            "save_weights", {"model_id": mid, "path": "step-1", "seq_id": 3, "ttl_seconds": None}
        )
    )
    state_path = f"tinker://{mid}/weights/step-1"
    assert saved == {"path": state_path}
    named = await api.result(
        await api.ok(
            "save_weights_for_sampler",
            {"model_id": mid, "path": "s-1", "seq_id": 4, "ttl_seconds": 3600},
        )
    )
    sampler_path = f"tinker://{mid}/sampler_weights/s-1"
    assert named == {"path": sampler_path}
    unnamed = await api.result(
        await api.ok(
            "save_weights_for_sampler",
            {"model_id": mid, "sampling_session_seq_id": 0, "seq_id": 5, "ttl_seconds": None},
        )
    )
    assert unnamed == {"sampling_session_id": f"{sid}:sample:0"}  # no "path" key at all

    # Samplers: the unnamed snapshot, a named checkpoint, a training checkpoint, the base.
    s_path = await api.ok(
        "create_sampling_session",
        {
            "session_id": sid,
            "sampling_session_seq_id": 1,
            "base_model": None,
            "model_path": sampler_path,
        },
    )
    s_state = await api.ok(
        "create_sampling_session",
        {
            "session_id": sid,
            "sampling_session_seq_id": 2,
            "base_model": None,
            "model_path": state_path,
        },
    )
    s_base = await api.ok(
        "create_sampling_session",
        {"session_id": sid, "sampling_session_seq_id": 3, "base_model": MODEL, "model_path": None},
    )
    prompt = {"chunks": [{"tokens": [1, 5, 6]}]}
    results: dict[str, SampleResponse] = {}
    for sampler in (
        unnamed["sampling_session_id"],
        s_path["sampling_session_id"],
        s_state["sampling_session_id"],
        s_base["sampling_session_id"],
    ):
        info = GetSamplerResponse.model_validate(
            (await api.c.get(f"/api/v1/samplers/{sampler}")).json()
        )
        assert info.sampler_id == sampler
        assert info.base_model == MODEL
        fut = await api.ok(
            "asample",
            {
                "num_samples": 2,
                "prompt": prompt,
                "sampling_params": {"max_tokens": 6, "temperature": 0.0},
                "sampling_session_id": sampler,
                "seq_id": 0,
                "prompt_logprobs": True,
                "topk_prompt_logprobs": 2,
            },
        )
        # 0.38: one sequence id per sample, unique.
        assert set(fut) == {"request_id", "sample_sequence_ids"}
        assert len(set(fut["sample_sequence_ids"])) == 2
        body = await api.result(fut)
        res = SampleResponse.model_validate(body)
        assert len(res.sequences) == 2
        for seq in res.sequences:
            assert seq.stop_reason in ("stop", "length")
            assert seq.logprobs is not None
            assert len(seq.logprobs) == len(seq.tokens) <= 6
        assert res.prompt_logprobs is not None
        assert res.prompt_logprobs[0] is None
        assert len(res.prompt_logprobs) == 3
        assert res.topk_prompt_logprobs is not None
        assert len(res.topk_prompt_logprobs[1]) == 2
        results[sampler] = res
    # Trained snapshots agree with each other and differ from the base model.
    lps = [r.prompt_logprobs for r in results.values()]
    assert lps[0] == lps[1] == lps[2]
    assert lps[3] != lps[0]
    assert (await api.c.get(f"/api/v1/samplers/{s_path['sampling_session_id']}")).json()[
        "model_path"
    ] == sampler_path

    # weights_info, then create_training_client_from_state: create_model + load_weights.
    wi = WeightsInfoResponse.model_validate(
        await api.ok("weights_info", {"tinker_path": state_path})
    )
    assert (wi.base_model, wi.is_lora, wi.lora_rank) == (MODEL, True, 4)
    mid2 = await api.model(sid, 1, rank=wi.lora_rank or 0, seed=99)
    loaded = await api.result(
        await api.ok(
            "load_weights", {"model_id": mid2, "path": state_path, "optimizer": True, "seq_id": 1}
        )
    )
    assert loaded == {"path": state_path}
    a = await api.result(await api.ok("forward", api.fwd_body(mid, 6)))
    b = await api.result(await api.ok("forward", api.fwd_body(mid2, 2)))
    assert a["loss_fn_outputs"] == b["loss_fn_outputs"]
    # Sampler weights load too (weights only); with optimizer they are a user error.
    mid3 = await api.model(sid, 2, seed=5)
    bad = await api.ok(
        "load_weights", {"model_id": mid3, "path": sampler_path, "optimizer": True, "seq_id": 1}
    )
    status, failed = await api.poll(bad["request_id"])
    assert status == 200
    assert failed["category"] == "user"
    await api.result(
        await api.ok(
            "load_weights",
            {"model_id": mid3, "path": sampler_path, "optimizer": False, "seq_id": 2},
        )
    )
    c = await api.result(await api.ok("forward", api.fwd_body(mid3, 3)))
    assert c["loss_fn_outputs"] == a["loss_fn_outputs"]

    # REST: runs, checkpoints, publish, TTL, archive, delete, sessions.
    runs = TrainingRunsResponse.model_validate((await api.c.get("/api/v1/training_runs")).json())
    assert {r.training_run_id for r in runs.training_runs} == {mid, mid2, mid3}
    assert runs.cursor.total_count == 3
    run = TrainingRun.model_validate(
        (await api.c.get(f"/api/v1/training_runs/{mid}", params={"access_scope": "owned"})).json()
    )
    assert run.corrupted is False
    assert run.lora_rank == 4
    assert run.last_checkpoint is not None
    assert run.last_checkpoint.tinker_path == state_path
    assert run.last_sampler_checkpoint is not None
    assert run.last_sampler_checkpoint.tinker_path == sampler_path

    listed = CheckpointsListResponse.model_validate(
        (await api.c.get(f"/api/v1/training_runs/{mid}/checkpoints")).json()
    )
    by_id = {c.checkpoint_id: c for c in listed.checkpoints}
    assert set(by_id) == {"weights/step-1", "sampler_weights/s-1"}  # unnamed save not listed
    assert by_id["weights/step-1"].checkpoint_type == "training"
    assert by_id["sampler_weights/s-1"].checkpoint_type == "sampler"
    assert by_id["sampler_weights/s-1"].expires_at is not None
    assert by_id["weights/step-1"].expires_at is None
    assert by_id["weights/step-1"].size_bytes
    mine = (await api.c.get("/api/v1/checkpoints", params={"limit": 100, "offset": 0})).json()
    assert mine["cursor"]["total_count"] == 2
    assert len(mine["checkpoints"]) == 2
    assert (await api.c.get(f"/api/v1/models/{mid}/checkpoints")).json()["checkpoints"]

    base = f"/api/v1/training_runs/{mid}/checkpoints/sampler_weights/s-1"
    assert (await api.c.post(f"{base}/publish")).status_code == 200
    assert (await api.c.post(f"{base}/publish")).status_code == 200  # idempotent, never 409
    assert _ckpt(
        await api.c.get(f"/api/v1/training_runs/{mid}/checkpoints"), "sampler_weights/s-1"
    ).public
    assert (await api.c.delete(f"{base}/publish")).status_code == 200
    assert not _ckpt(
        await api.c.get(f"/api/v1/training_runs/{mid}/checkpoints"), "sampler_weights/s-1"
    ).public
    assert (await api.c.put(f"{base}/ttl", json={"ttl_seconds": None})).status_code == 200
    assert (
        _ckpt(
            await api.c.get(f"/api/v1/training_runs/{mid}/checkpoints"), "sampler_weights/s-1"
        ).expires_at
        is None
    )
    for bad in (0, -5, "x", 1.5):
        r = await api.c.put(f"{base}/ttl", json={"ttl_seconds": bad})
        assert r.status_code == 400
        assert "ttl_seconds" in r.json()["detail"]

    r = await api.c.get(
        f"/api/v1/training_runs/{mid}/checkpoints/weights/step-1/archive",
        headers={"accept": "application/gzip"},
    )
    assert r.status_code == 302
    assert r.headers["location"]
    assert r.headers["expires"].endswith("GMT")
    location = r.headers["location"]
    download = await api.c.get(location)
    assert download.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(download.content), mode="r:") as tar:
        names = tar.getnames()
        assert sorted(names) == [
            "adapter_config.json",
            "adapter_model.safetensors",
            "checkpoint_complete",
            "tinkex_manifest.json",
        ]
        assert all(not n.startswith("/") and ".." not in n for n in names)
        config = json.loads(tar.extractfile("adapter_config.json").read())  # type: ignore[union-attr]
        tensors = st_load(tar.extractfile("adapter_model.safetensors").read())  # type: ignore[union-attr]
        assert tar.getmember("checkpoint_complete").size == 0
    assert config["r"] == 4
    assert config["base_model_name_or_path"] == MODEL
    assert tensors
    assert all(k.startswith("base_model.model.") for k in tensors)
    forged = location.replace("signature=", "signature=0")
    assert (await api.c.get(forged)).status_code == 403

    r = await api.c.delete(f"/api/v1/training_runs/{mid}/checkpoints/sampler_weights/s-1")
    assert r.status_code == 200
    assert (
        await api.c.delete(f"/api/v1/training_runs/{mid}/checkpoints/sampler_weights/s-1")
    ).status_code == 404
    left = (await api.c.get(f"/api/v1/training_runs/{mid}/checkpoints")).json()["checkpoints"]
    assert [c["checkpoint_id"] for c in left] == ["weights/step-1"]

    sessions = (await api.c.get("/api/v1/sessions")).json()
    assert sessions["sessions"] == [sid]
    detail = (await api.c.get(f"/api/v1/sessions/{sid}")).json()
    assert detail["training_run_ids"] == [mid, mid2, mid3]
    assert set(detail["sampler_ids"]) == {f"{sid}:sample:{i}" for i in range(4)}

    # unload_model: a future; afterwards the model refuses work.
    assert await api.result(await api.ok("unload_model", {"model_id": mid2})) == {"model_id": mid2}
    r = await api.post("forward", api.fwd_body(mid2, 3))
    assert r.status_code == 400
    assert "unloaded" in r.json()["detail"]


def _ckpt(response: httpx.Response, checkpoint_id: str) -> Checkpoint:
    for item in response.json()["checkpoints"]:
        if item["checkpoint_id"] == checkpoint_id:
            return Checkpoint.model_validate(item)
    raise AssertionError(f"{checkpoint_id} not listed")


async def test_telemetry_is_stored_and_accepted(api: Any) -> None:
    batch = {
        "session_id": "s-1",
        "platform": "Linux",
        "sdk_version": "0.16.1",
        "events": [
            {
                "event": "SESSION_START",
                "event_id": "e1",
                "event_session_index": 0,
                "severity": "INFO",
                "timestamp": "2025-11-27T13:51:33.550745Z",
            },
            {
                "event": "GENERIC_EVENT",
                "event_id": "e2",
                "event_session_index": 1,
                "severity": "WARNING",
                "timestamp": "2025-11-27T13:51:34Z",
                "event_name": "user_error",
                "event_data": {"status_code": 404},
            },
        ],
    }
    r = await api.post("telemetry", batch)
    assert r.status_code == 200
    assert r.json() == {"status": "accepted"}
    # Unknown shapes are accepted too (0.16.1 would retry a rejection forever).
    assert (await api.post("telemetry", {"something": "else"})).json() == {"status": "accepted"}
    stored = api.store.telemetry()
    assert [row.body for row in stored] == [batch, {"something": "else"}]
    assert stored[0].session_id == "s-1"
    assert [row.body for row in api.store.telemetry(session_id="s-1")] == [batch]


async def test_test_routes_are_opt_in(make_server: Any, api_for: Any, tmp_path: Any) -> None:
    server = make_server(data_dir=tmp_path / "plain")
    async with api_for(server) as api:
        r = await api.post("_test/training_runs/x/corrupted", {"corrupted": True})
        assert r.status_code == 404
    server2 = make_server(data_dir=tmp_path / "testing", enable_test_routes=True)
    async with api_for(server2) as api:
        sid = await api.session()
        mid = await api.model(sid)
        r = await api.post(f"_test/training_runs/{mid}/corrupted", {"corrupted": True})
        assert r.json() == {"training_run_id": mid, "corrupted": True}
        run = (await api.c.get(f"/api/v1/training_runs/{mid}")).json()
        assert run["corrupted"] is True
        assert (await api.post("_test/training_runs/nope/corrupted", {})).status_code == 404
        steps = (await api.c.get("/api/v1/_test/applied", params={"target": mid})).json()
        assert [(s["seq_id"], s["request_type"]) for s in steps["steps"]] == [(None, "CreateModel")]
        await api.post("telemetry", {"session_id": sid, "events": []})
        batches = (await api.c.get("/api/v1/_test/telemetry")).json()["batches"]
        assert batches == [{"session_id": sid, "events": []}]
        assert api.store.set_corrupted(mid, False)
        assert (await api.c.get(f"/api/v1/training_runs/{mid}")).json()["corrupted"] is False
