"""tinker 0.38's request fields on tinkex serve: checkpoint user_metadata and overwrite,
optimizer_config (AdamW only), sampler-save kind, and the sampling extras."""

from __future__ import annotations

from typing import Any

import pytest

MODEL = "tinkex/tiny-llama-100k"
PROMPT = [1, 17, 93, 4, 250, 31, 8]


def _sample_body(sampler: str, **extra: Any) -> dict[str, Any]:
    return {
        "sampling_session_id": sampler,
        "seq_id": 0,
        "num_samples": 1,
        "prompt": {"chunks": [{"tokens": PROMPT}]},
        "sampling_params": {"max_tokens": 3, "temperature": 0.0, "seed": 1},
        **extra,
    }


async def _listed(api: Any, mid: str) -> dict[str, Any]:
    body = (await api.c.get(f"/api/v1/training_runs/{mid}/checkpoints")).json()
    return {c["checkpoint_id"]: c for c in body["checkpoints"]}


async def test_user_metadata_and_overwrite(api: Any) -> None:
    sid = await api.session()
    mid = await api.model(sid)

    async def save(seq: int, **extra: Any) -> tuple[int, dict[str, Any]]:
        body = {"model_id": mid, "path": "ckpt", "seq_id": seq, **extra}
        return await api.poll((await api.ok("save_weights", body))["request_id"])

    status, first = await save(1, user_metadata={"stage": "warmup", "step": "1"})
    assert status == 200
    assert first["path"] == f"tinker://{mid}/weights/ckpt"
    listed = await _listed(api, mid)
    assert listed["weights/ckpt"]["user_metadata"] == {"stage": "warmup", "step": "1"}

    # The same name again: the future fails (user error) naming overwrite and the fix.
    status, refused = await save(2, user_metadata={"stage": "other"})
    assert status == 200
    assert refused["category"] == "user"
    assert "overwrite" in refused["error"]
    assert "already exists" in refused["error"]
    assert (await _listed(api, mid))["weights/ckpt"]["user_metadata"] == {
        "stage": "warmup",
        "step": "1",
    }

    # overwrite=True replaces it, metadata included (none given: none kept).
    status, replaced = await save(3, overwrite=True)
    assert status == 200
    assert replaced["path"] == first["path"]
    assert (await _listed(api, mid))["weights/ckpt"].get("user_metadata") is None

    # Sampler weights have no overwrite flag: a name is replaced; metadata is listed.
    for seq, note in ((4, "a"), (5, "b")):
        await api.result(
            await api.ok(
                "save_weights_for_sampler",
                {"model_id": mid, "path": "s", "seq_id": seq, "user_metadata": {"note": note}},
            )
        )
    assert (await _listed(api, mid))["sampler_weights/s"]["user_metadata"] == {"note": "b"}


async def test_optimizer_config_adamw_only(api: Any) -> None:
    sid = await api.session()
    lora = {"rank": 4, "seed": 1, "train_unembed": True, "train_mlp": True, "train_attn": True}
    base = {"session_id": sid, "base_model": MODEL, "user_metadata": None, "lora_config": lora}
    r = await api.post(
        "create_model", {**base, "model_seq_id": 0, "optimizer_config": {"type": "dimuon"}}
    )
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "optimizer_config.type" in detail
    assert "adamw" in detail

    fut = await api.ok(
        "create_model", {**base, "model_seq_id": 1, "optimizer_config": {"type": "adamw"}}
    )
    mid = (await api.result(fut))["model_id"]
    info = await api.ok("get_info", {"model_id": mid})
    assert info["optimizer_config"] == {"type": "adamw"}

    # Dimuon step parameters on an AdamW model: 400 naming optim_params.type.
    r = await api.post(
        "optim_step",
        {
            "model_id": mid,
            "seq_id": 1,
            "optimizer_params": {"type": "dimuon", "learning_rate": 0.01},
        },
    )
    assert r.status_code == 400
    assert "optim_params.type" in r.json()["detail"]

    # The refused seq_id 1 was given up (not waited for): seq_id 2 runs at once.
    await api.result(
        await api.ok(
            "optim_step", {"model_id": mid, "seq_id": 2, "adam_params": {"learning_rate": 0.01}}
        )
    )
    await api.result(await api.ok("save_weights", {"model_id": mid, "path": "opt", "seq_id": 3}))
    winfo = await api.ok("weights_info", {"tinker_path": f"tinker://{mid}/weights/opt"})
    assert winfo["optimizer_config"] == {"type": "adamw"}


async def test_inflight_samplers_adopt_later_inflight_saves(api: Any) -> None:
    sid = await api.session()
    mid = await api.model(sid)

    async def save(seq: int, sampler_seq: int, kind: str) -> str:
        body = {
            "model_id": mid,
            "sampling_session_seq_id": sampler_seq,
            "seq_id": seq,
            "kind": kind,
        }
        return str(
            (await api.result(await api.ok("save_weights_for_sampler", body)))[
                "sampling_session_id"
            ]
        )

    async def logprobs(sampler: str) -> list[float]:
        out = await api.result(await api.ok("asample", _sample_body(sampler, prompt_logprobs=True)))
        return list(out["prompt_logprobs"][1:])

    first = await save(1, 0, "inflight")
    snapshot = await save(2, 1, "snapshot")
    before = await logprobs(first)
    assert await logprobs(snapshot) == pytest.approx(before, abs=1e-6)
    # Train, then publish the new weights inflight: the first inflight sampler adopts them,
    # the snapshot keeps the weights it was made with.
    data = [api.datum(PROMPT)] * 4
    for seq in (3, 5):
        await api.result(await api.ok("forward_backward", api.fb_body(mid, seq, data)))
        await api.result(
            await api.ok(
                "optim_step",
                {"adam_params": {"learning_rate": 0.05}, "model_id": mid, "seq_id": seq + 1},
            )
        )
    second = await save(7, 2, "inflight")
    after = await logprobs(second)
    assert after != pytest.approx(before, abs=1e-3)
    assert await logprobs(first) == pytest.approx(after, abs=1e-6)
    assert await logprobs(snapshot) == pytest.approx(before, abs=1e-6)


async def test_sampling_extras(api: Any) -> None:
    sid = await api.session()
    await api.ok(
        "create_sampling_session",
        {"session_id": sid, "sampling_session_seq_id": 0, "base_model": MODEL},
    )
    sampler = f"{sid}:sample:0"
    full = await api.result(await api.ok("asample", _sample_body(sampler, prompt_logprobs=True)))
    ids = [[PROMPT[i + 1], -1] for i in range(len(PROMPT) - 1)]
    out = await api.result(
        await api.ok(
            "asample",
            _sample_body(
                sampler,
                prompt_logprobs=True,
                prompt_logprobs_last_n=2,
                topk_sample_logprobs=3,
                prompt_alt_tokens_k=2,
                target_prompt_logprobs={
                    "data": [t for row in ids for t in row],
                    "dtype": "int64",
                    "shape": [len(PROMPT) - 1, 2],
                },
            ),
        )
    )
    lps = out["prompt_logprobs"]
    assert lps[:-2] == [None] * (len(PROMPT) - 2)
    assert lps[-2:] == pytest.approx(full["prompt_logprobs"][-2:], abs=1e-5)
    seq = out["sequences"][0]
    assert len(seq["topk_logprobs"]) == len(seq["tokens"])
    # Greedy: the top-1 of each position is the chosen token.
    assert [pos[0][0] for pos in seq["topk_logprobs"]] == seq["tokens"]
    target = out["target_prompt_logprobs"]
    assert target["shape"] == [len(PROMPT) - 1, 2]
    # Column 0 names the actual next prompt token: its logprob is the prompt logprob.
    assert target["data"][0::2] == pytest.approx(full["prompt_logprobs"][1:], abs=1e-5)
    assert target["data"][1::2] == [0.0] * (len(PROMPT) - 1)
    alt = out["prompt_alt_tokens"]
    assert alt["tokens"]["shape"] == [len(PROMPT) - 1, 2]
    assert alt["logprobs"]["dtype"] == "float32"


async def test_sparse_target_prompt_logprobs_answer_in_the_same_layout(api: Any) -> None:
    sid = await api.session()
    await api.ok(
        "create_sampling_session",
        {"session_id": sid, "sampling_session_seq_id": 0, "base_model": MODEL},
    )
    sampler = f"{sid}:sample:0"
    full = await api.result(await api.ok("asample", _sample_body(sampler, prompt_logprobs=True)))
    rows = len(PROMPT) - 1
    # Two listed cells: row 0 column 0 and row 4 column 1 (the rest is not asked for).
    crow = [0, 1, 1, 1, 1, 2, 2]
    sparse = {
        "data": [PROMPT[1], PROMPT[5]],
        "dtype": "int64",
        "shape": [rows, 2],
        "sparse_crow_indices": crow,
        "sparse_col_indices": [0, 1],
    }
    out = await api.result(
        await api.ok("asample", _sample_body(sampler, target_prompt_logprobs=sparse))
    )
    target = out["target_prompt_logprobs"]
    assert target["shape"] == [rows, 2]
    assert target["sparse_crow_indices"] == crow
    assert target["sparse_col_indices"] == [0, 1]
    want = [full["prompt_logprobs"][1], full["prompt_logprobs"][5]]
    assert target["data"] == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"record_stability_info": True}, "record_stability_info"),
        ({"prompt_logprobs_last_n": 2}, "prompt_logprobs_last_n"),
        ({"prompt_logprobs": True, "prompt_logprobs_last_n": 7}, "prompt_logprobs_last_n"),
        ({"topk_sample_logprobs": 10**6}, "topk_sample_logprobs"),
        (
            {"target_prompt_logprobs": {"data": [1, 2], "dtype": "int64", "shape": [2, 1]}},
            "target_prompt_logprobs",
        ),
        (
            {"target_prompt_logprobs": {"data": [1.0] * 6, "dtype": "float32", "shape": [6, 1]}},
            "target_prompt_logprobs",
        ),
    ],
)
async def test_sampling_extras_refused_naming_the_field(
    api: Any, extra: dict[str, Any], field: str
) -> None:
    sid = await api.session()
    await api.ok(
        "create_sampling_session",
        {"session_id": sid, "sampling_session_seq_id": 0, "base_model": MODEL},
    )
    r = await api.post("asample", _sample_body(f"{sid}:sample:0", **extra))
    assert r.status_code == 400, r.text
    assert field in r.json()["detail"]
