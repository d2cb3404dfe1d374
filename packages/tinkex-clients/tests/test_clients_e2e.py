"""End to end against the real in-process local server (``local://``): no mocks.

Every test uses the smallest built-in model so the whole file stays within a few seconds.
"""

from __future__ import annotations

import math
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch

from tinkex_clients import ServiceClient, TrainingClient
from tinkex_types import (
    AdamParams,
    Datum,
    ModelInput,
    RequestErrorCategory,
    RequestFailedError,
    SamplingParams,
)

MODEL = "tinkex/tiny-llama-100k"
LR = AdamParams(learning_rate=5e-3)


def sft_datum(tokens: list[int], prompt_len: int = 0) -> Datum:
    """Next-token prediction on ``tokens``; the first ``prompt_len`` targets get weight 0."""
    n = len(tokens) - 1
    weights = [0.0 if i < prompt_len else 1.0 for i in range(n)]
    return Datum(
        model_input=ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights},
    )


BATCH = [sft_datum([10 + (i + j) % 7 for j in range(12)]) for i in range(4)]


def logprobs_of(out: Any) -> list[list[float]]:
    return [list(o["logprobs"].data) for o in out.loss_fn_outputs]


def test_sft_loss_falls(local_service: ServiceClient) -> None:
    tc = local_service.create_lora_training_client(MODEL, rank=8, seed=1)
    losses = []
    for _ in range(8):
        out = tc.forward_backward(BATCH, "cross_entropy").result(60)
        tc.optim_step(AdamParams(learning_rate=2e-2)).result(60)
        losses.append(out.metrics["loss:sum"])
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.7 * losses[0], losses
    assert len(out.loss_fn_outputs) == len(BATCH)


def test_rl_step_with_sampler_logprobs(local_service: ServiceClient) -> None:
    tc = local_service.create_lora_training_client(MODEL, rank=8, seed=2)
    sampler = tc.save_weights_and_get_sampling_client()
    prompt = [5, 6, 7, 8]
    response = sampler.sample(
        ModelInput.from_ints(prompt), 3, SamplingParams(max_tokens=6, seed=11, temperature=1.0)
    ).result(60)
    assert len(response.sequences) == 3
    data = []
    for k, seq in enumerate(response.sequences):
        assert seq.logprobs is not None
        assert len(seq.logprobs) == len(seq.tokens)
        full = prompt + seq.tokens
        n = len(full) - 1
        old = [0.0] * (len(prompt) - 1) + list(seq.logprobs)
        adv = [0.0] * (len(prompt) - 1) + [1.0 - k] * len(seq.tokens)
        data.append(
            Datum(
                model_input=ModelInput.from_ints(full[:-1]),
                loss_fn_inputs={"target_tokens": full[1:], "logprobs": old, "advantages": adv},
            )
        )
        assert len(old) == n
    out = tc.forward_backward(data, "importance_sampling").result(60)
    # before any update the learner agrees with the sampler on the sampled tokens
    for datum, seq, lps in zip(data, response.sequences, logprobs_of(out), strict=True):
        tail = lps[len(prompt) - 1 :]
        assert tail == pytest.approx(seq.logprobs, abs=2e-3)
        assert len(lps) == len(datum.loss_fn_inputs["target_tokens"].data)
    assert math.isfinite(out.metrics["loss:sum"])
    tc.optim_step(LR).result(60)


def test_custom_loss_matches_builtin_cross_entropy(local_service: ServiceClient) -> None:
    builtin = local_service.create_lora_training_client(MODEL, rank=4, seed=3)
    custom = local_service.create_lora_training_client(MODEL, rank=4, seed=3)

    def ce(
        data: list[Datum], logprobs: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        total = torch.zeros(())
        for datum, lp in zip(data, logprobs, strict=True):
            total = total - (lp * datum.loss_fn_inputs["weights"].to_torch()).sum()
        return total, {"by_hand:sum": total.detach().item()}

    ref = builtin.forward_backward(BATCH, "cross_entropy").result(60)
    mine = custom.forward_backward_custom(BATCH, ce).result(60)
    assert mine.metrics["by_hand:sum"] == pytest.approx(ref.metrics["loss:sum"], rel=1e-5)
    assert mine.metrics["loss:sum"] == pytest.approx(ref.metrics["loss:sum"], rel=1e-5)
    builtin.optim_step(LR).result(60)
    custom.optim_step(LR).result(60)
    after_ref = builtin.forward(BATCH, "cross_entropy").result(60)
    after_mine = custom.forward(BATCH, "cross_entropy").result(60)
    for a, b in zip(logprobs_of(after_ref), logprobs_of(after_mine), strict=True):
        assert a == pytest.approx(b, abs=1e-5)
    assert after_ref.metrics["loss:sum"] < ref.metrics["loss:sum"]


def test_chunked_batch_gives_the_same_result(local_service: ServiceClient) -> None:
    whole = local_service.create_lora_training_client(MODEL, rank=4, seed=4)
    chunked = local_service.create_lora_training_client(MODEL, rank=4, seed=4)
    chunked.max_chunk_items = 1
    data = [*BATCH, sft_datum([3, 1, 4, 1, 5, 9, 2, 6])]
    first = chunked.next_seq_id
    a = whole.forward_backward(data, "cross_entropy").result(60)
    b = chunked.forward_backward(data, "cross_entropy").result(60)
    assert chunked.next_seq_id == first + len(data)  # one request per datum
    assert b.metrics["loss:sum"] == pytest.approx(a.metrics["loss:sum"], rel=1e-5)
    for x, y in zip(logprobs_of(a), logprobs_of(b), strict=True):
        assert x == pytest.approx(y, abs=1e-5)
    whole.optim_step(LR).result(60)
    chunked.optim_step(LR).result(60)
    a2 = whole.forward(data, "cross_entropy").result(60)
    b2 = chunked.forward(data, "cross_entropy").result(60)
    assert b2.metrics["loss:sum"] == pytest.approx(a2.metrics["loss:sum"], rel=1e-5)


def _step(tc: TrainingClient) -> float:
    out = tc.forward_backward(BATCH, "cross_entropy").result(60)
    tc.optim_step(LR).result(60)
    return out.metrics["loss:sum"]


def test_resume_with_optimizer_continues_identically(local_service: ServiceClient) -> None:
    original = local_service.create_lora_training_client(MODEL, rank=4, seed=5)
    _step(original)
    _step(original)
    path = original.save_state("resume-point").result(60).path
    assert path.endswith("/weights/resume-point")
    continued = [_step(original), _step(original)]
    resumed_client = local_service.create_training_client_from_state_with_optimizer(path)
    assert resumed_client.model_id != original.model_id
    resumed = [_step(resumed_client), _step(resumed_client)]
    # the first step checks the weights, the second the restored Adam state
    assert resumed == pytest.approx(continued, rel=1e-5)
    fresh_optimizer = local_service.create_training_client_from_state(path)
    fresh = [_step(fresh_optimizer), _step(fresh_optimizer)]
    assert fresh[0] == pytest.approx(continued[0], rel=1e-5)
    assert fresh[1] != pytest.approx(continued[1], rel=1e-7)


def test_sampler_weights_same_seed_same_tokens(local_service: ServiceClient) -> None:
    tc = local_service.create_lora_training_client(MODEL, rank=4, seed=6)
    _step(tc)
    saved = tc.save_weights_for_sampler("sampler-a").result(60)
    assert saved.path is not None
    assert "/sampler_weights/sampler-a" in saved.path
    by_path = local_service.create_sampling_client(model_path=saved.path)
    ephemeral = tc.save_weights_and_get_sampling_client()
    prompt = ModelInput.from_ints([1, 20, 30])
    params = SamplingParams(max_tokens=8, seed=123, temperature=1.0)
    one = by_path.sample(prompt, 2, params).result(60)
    two = by_path.sample(prompt, 2, params).result(60)
    three = ephemeral.sample(prompt, 2, params).result(60)
    tokens = [s.tokens for s in one.sequences]
    assert tokens == [s.tokens for s in two.sequences] == [s.tokens for s in three.sequences]
    assert by_path.get_base_model() == MODEL
    lps = by_path.compute_logprobs(ModelInput.from_ints([1, 20, 30, 40])).result(60)
    assert lps[0] is None
    assert len(lps) == 4
    assert all(x is not None and x < 0 for x in lps[1:])


def test_rest_listing_and_checkpoint_download(local_service: ServiceClient, tmp_path: Path) -> None:
    tc = local_service.create_lora_training_client(MODEL, rank=4, seed=7)
    path = tc.save_state("dl-me").result(60).path
    sampler_path = tc.save_weights_for_sampler("dl-sampler").result(60).path
    rest = local_service.create_rest_client()
    listing = rest.list_checkpoints(tc.model_id).result(60)
    assert {c.tinker_path for c in listing.checkpoints} == {path, sampler_path}
    assert path in {
        c.tinker_path for c in rest.list_user_checkpoints(limit=500).result(60).checkpoints
    }
    run = rest.get_training_run(tc.model_id).result(60)
    assert run.base_model == MODEL
    assert run.lora_rank == 4
    assert not run.corrupted
    assert run.last_checkpoint is not None
    assert run.last_checkpoint.tinker_path == path
    runs = rest.list_training_runs(limit=1).result(60)
    assert len(runs.training_runs) == 1
    assert runs.cursor.total_count >= 1
    session = rest.get_session(local_service.session_id).result(60)
    assert tc.model_id in session.training_run_ids
    info = rest.get_weights_info_by_tinker_path(path).result(60)
    assert info.base_model == MODEL
    assert info.lora_rank == 4
    url = rest.get_checkpoint_archive_url_from_tinker_path(path).result(60)
    assert url.url
    progress: list[tuple[int, int | None]] = []
    dest = rest.download_checkpoint(
        path, tmp_path, progress=lambda d, t: progress.append((d, t))
    ).result(60)
    assert dest.is_dir()
    assert (dest / "adapter_config.json").is_file()
    assert (dest / "adapter_model.safetensors").is_file()
    assert (dest / "checkpoint_complete").exists()
    assert progress
    assert progress[-1][0] > 0
    assert not any(p.suffix == ".tar" for p in tmp_path.iterdir())
    with pytest.raises(Exception, match="already exists"):
        rest.download_checkpoint(path, tmp_path).result(60)
    assert tarfile is not None
    rest.set_checkpoint_ttl_from_tinker_path(path, 3600).result(60)
    rest.publish_checkpoint_from_tinker_path(path).result(60)
    rest.unpublish_checkpoint_from_tinker_path(path).result(60)
    rest.delete_checkpoint_from_tinker_path(sampler_path).result(60)
    after = rest.list_checkpoints(tc.model_id).result(60)
    assert {c.tinker_path for c in after.checkpoints} == {path}


def test_pipelined_submissions_complete_in_order(local_service: ServiceClient) -> None:
    sequential = local_service.create_lora_training_client(MODEL, rank=4, seed=8)
    expected = [_step(sequential) for _ in range(3)]
    expected.append(sequential.forward(BATCH, "cross_entropy").result(60).metrics["loss:sum"])

    tc = local_service.create_lora_training_client(MODEL, rank=4, seed=8)
    futures: list[Any] = []
    for _ in range(3):  # submitted back to back, nothing awaited in between
        futures.append(tc.forward_backward(BATCH, "cross_entropy"))
        futures.append(tc.optim_step(LR))
    futures.append(tc.forward(BATCH, "cross_entropy"))
    results = [f.result(60) for f in futures]
    losses = [r.metrics["loss:sum"] for r in results[0::2]]
    # each pass saw exactly the weights of the previous optimizer step
    assert losses == pytest.approx(expected, rel=1e-6)
    assert losses == sorted(losses, reverse=True)
    assert len(set(losses)) == len(losses)
    applied = local_service._session.call(
        local_service._session.get(
            "/api/v1/_test/applied", params={"target": tc.model_id}, retries=False
        )
    )
    seq_ids = [s["seq_id"] for s in applied["steps"] if s["seq_id"] is not None]
    assert seq_ids == list(range(1, 8))


def test_server_side_failure_is_a_user_error(local_service: ServiceClient) -> None:
    tc = local_service.create_lora_training_client(MODEL, rank=4)
    bad = sft_datum([1, 2, 5000])  # token id outside the 1024-token vocabulary
    with pytest.raises(RequestFailedError) as info:
        tc.forward(bad and [bad], "cross_entropy").result(60)
    assert info.value.category is RequestErrorCategory.USER
    assert info.value.request_id
    # the model keeps working afterwards
    assert tc.forward(BATCH, "cross_entropy").result(60).metrics["loss:sum"] > 0
