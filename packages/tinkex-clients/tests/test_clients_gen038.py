"""tinker 0.38's client keywords end to end against the real local server (``local://``):
each reaches the server and has its effect (or is refused, naming the field)."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import httpx
import pytest
import torch

from tinkex_clients import (
    AwaitableConcurrentFuture,
    BackcompatSamplingClientFuture,
    BackcompatTrainingClientFuture,
    RequestOptions,
    RestClient,
    SamplingClient,
    ServiceClient,
    TrainingClient,
)
from tinkex_server._catalog import describe_base_model
from tinkex_types import (
    AdamOptimizerConfig,
    AdamParams,
    BadRequestError,
    Datum,
    DimuonOptimizerConfig,
    DimuonParams,
    ModelInput,
    RequestFailedError,
    SamplingParams,
    TensorData,
    TinkexValidationError,
)

MODEL = "tinkex/tiny-llama-100k"
PROMPT = [1, 17, 93, 4, 250, 31, 8, 77]
GREEDY = SamplingParams(max_tokens=3, temperature=0.0, seed=1)


def _datum() -> Datum:
    tokens = [5, 6, 7, 8, 9, 10]
    return Datum(
        model_input=ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * 5},
    )


def _checkpoints(service: ServiceClient, run_id: str) -> dict[str, Any]:
    listed = service.create_rest_client().list_checkpoints(run_id).result()
    return {c.checkpoint_id: c for c in listed.checkpoints}


def test_save_state_user_metadata_and_overwrite(local_service: ServiceClient) -> None:
    tc = local_service.create_lora_training_client(MODEL, rank=4, seed=1)
    tc.save_state("ckpt", user_metadata={"stage": "warmup"}).result()
    assert _checkpoints(local_service, tc.model_id)["weights/ckpt"].user_metadata == {
        "stage": "warmup"
    }

    with pytest.raises(RequestFailedError) as info:
        tc.save_state("ckpt", user_metadata={"stage": "again"}).result()
    assert "overwrite" in str(info.value)
    assert _checkpoints(local_service, tc.model_id)["weights/ckpt"].user_metadata == {
        "stage": "warmup"
    }

    # The refusal does not stop the model: overwrite=True replaces the checkpoint.
    path = tc.save_state("ckpt", overwrite=True, user_metadata={"stage": "final"}).result().path
    assert path.endswith("/weights/ckpt")
    assert _checkpoints(local_service, tc.model_id)["weights/ckpt"].user_metadata == {
        "stage": "final"
    }

    tc.save_weights_for_sampler("s", user_metadata={"note": "x"}).result()
    assert _checkpoints(local_service, tc.model_id)["sampler_weights/s"].user_metadata == {
        "note": "x"
    }
    with pytest.raises(TinkexValidationError) as bad:
        tc.save_state("other", user_metadata={"n": 1})  # type: ignore[dict-item]
    assert bad.value.field == "user_metadata['n']"


def test_optimizer_adamw_and_dimuon_refused(local_service: ServiceClient) -> None:
    tc = local_service.create_lora_training_client(
        MODEL, rank=4, seed=1, optimizer=AdamOptimizerConfig()
    )
    assert tc.get_info().optimizer_config.type == "adamw"
    tc.forward_backward([_datum()], "cross_entropy").result()
    tc.optim_step(AdamParams(learning_rate=1e-3)).result()
    with pytest.raises(BadRequestError) as info:
        tc.optim_step(DimuonParams(learning_rate=0.01)).result()
    assert "optim_params.type" in str(info.value)

    with pytest.raises(BadRequestError) as created:
        local_service.create_lora_training_client(MODEL, rank=4, optimizer=DimuonOptimizerConfig())
    assert "optimizer_config.type" in str(created.value)

    path = tc.save_state("s1").result().path
    again = local_service.create_training_client_from_state(
        path, base_model=MODEL, user_metadata={"from": "s1"}, optimizer=AdamOptimizerConfig()
    )
    assert again.get_info().model_data.model_name == MODEL
    # tinker 0.16's positional order, (path, user_metadata), still works.
    old_style = local_service.create_training_client_from_state(path, {"from": "0.16"})
    run = local_service.create_rest_client().get_training_run(old_style.model_id).result()
    assert run.user_metadata == {"from": "0.16"}
    with pytest.raises(BadRequestError, match=r"optimizer_config\.type"):
        local_service.create_training_client_from_state(path, optimizer=DimuonOptimizerConfig())
    with pytest.raises(TinkexValidationError) as token:
        local_service.create_training_client_from_state(path, weights_access_token="t")
    assert token.value.field == "weights_access_token"


def test_sample_extras_reach_the_engine(local_service: ServiceClient) -> None:
    sc = local_service.create_sampling_client(base_model=MODEL)
    prompt = ModelInput.from_ints(PROMPT)
    full = sc.compute_logprobs(prompt).result()
    last = sc.compute_logprobs(prompt, prompt_logprobs_last_n=3).result()
    assert len(last) == len(PROMPT)
    assert last[:-3] == [None] * (len(PROMPT) - 3)
    assert last[-3:] == pytest.approx(full[-3:], abs=1e-5)

    ids = torch.full((len(PROMPT) - 1, 2), -1, dtype=torch.int64)
    ids[:, 0] = torch.tensor(PROMPT[1:])
    out = sc.sample(
        prompt,
        1,
        GREEDY,
        include_prompt_logprobs=True,
        topk_sample_logprobs=4,
        target_prompt_logprobs=TensorData.from_torch(ids),
        prompt_alt_tokens_k=3,
        prompt_logprobs_last_n=2,
    ).result()
    seq = out.sequences[0]
    assert seq.topk_logprobs is not None
    assert [row[0][0] for row in seq.topk_logprobs if row] == seq.tokens
    assert all(row is not None and len(row) == 4 for row in seq.topk_logprobs)
    assert out.prompt_logprobs is not None
    assert out.prompt_logprobs[:-2] == [None] * (len(PROMPT) - 2)
    assert out.target_prompt_logprobs is not None
    target = out.target_prompt_logprobs.to_torch()
    assert target[:, 0].tolist() == pytest.approx(full[1:], abs=1e-5)
    assert target[:, 1].tolist() == [0.0] * (len(PROMPT) - 1)
    assert out.prompt_alt_tokens is not None
    assert out.prompt_alt_tokens.tokens.shape == [len(PROMPT) - 1, 3]


def test_topk_sample_logprobs_match_a_full_vocabulary_computation(
    local_service: ServiceClient,
) -> None:
    sc = local_service.create_sampling_client(base_model=MODEL)
    seq = (
        sc.sample(ModelInput.from_ints(PROMPT), 1, GREEDY, topk_sample_logprobs=5)
        .result()
        .sequences[0]
    )
    assert seq.topk_logprobs is not None
    # Score every token of the vocabulary after prompt + the first generated token (the
    # last row of target_prompt_logprobs scores the last token of the context given the
    # ones before it): their top 5 are the reported top 5 at the second generated position.
    context = [*PROMPT, *seq.tokens[:2]]
    desc = describe_base_model(MODEL)
    assert desc is not None
    vocab = desc.vocab_size
    ids = torch.full((len(context) - 1, vocab), -1, dtype=torch.int64)
    ids[-1] = torch.arange(vocab)
    scored = sc.sample(
        ModelInput.from_ints(context),
        1,
        SamplingParams(max_tokens=1, temperature=0.0),
        target_prompt_logprobs=TensorData.from_torch(ids),
    ).result()
    assert scored.target_prompt_logprobs is not None
    last = scored.target_prompt_logprobs.to_torch()[-1]
    values, top = torch.topk(last, 5)
    reported = seq.topk_logprobs[1]
    assert reported is not None
    assert [t for t, _ in reported] == top.tolist()
    assert [v for _, v in reported] == pytest.approx(values.tolist(), abs=1e-4)


def test_sample_extras_refused_naming_the_field(local_service: ServiceClient) -> None:
    sc = local_service.create_sampling_client(base_model=MODEL)
    prompt = ModelInput.from_ints(PROMPT)
    with pytest.raises(TinkexValidationError) as no_lp:
        sc.sample(prompt, 1, GREEDY, prompt_logprobs_last_n=2)
    assert no_lp.value.field == "prompt_logprobs_last_n"
    with pytest.raises(BadRequestError, match="prompt_logprobs_last_n"):
        sc.compute_logprobs(prompt, prompt_logprobs_last_n=len(PROMPT)).result()
    with pytest.raises(TinkexValidationError) as bad_target:
        sc.sample(prompt, 1, GREEDY, target_prompt_logprobs=TensorData.from_list([1.0, 2.0]))
    assert bad_target.value.field == "target_prompt_logprobs"
    stable = local_service.create_sampling_client(base_model=MODEL, record_stability_info=True)
    assert stable.record_stability_info is True
    with pytest.raises(BadRequestError, match="record_stability_info"):
        stable.sample(prompt, 1, GREEDY).result()


def test_training_client_sampling_keywords(local_service: ServiceClient) -> None:
    tc = local_service.create_lora_training_client(MODEL, rank=4, seed=1)
    inflight = tc.save_weights_and_get_sampling_client(kind="inflight")
    assert inflight.sample(ModelInput.from_ints(PROMPT), 1, GREEDY).result().sequences
    with pytest.raises(TinkexValidationError) as kind:
        tc.save_weights_and_get_sampling_client(kind="live")  # type: ignore[arg-type]
    assert kind.value.field == "kind"
    path = tc.save_weights_for_sampler("w").result().path
    assert path is not None
    stable = tc.create_sampling_client(path, record_stability_info=True)
    assert stable.record_stability_info is True
    stable2 = tc.save_weights_and_get_sampling_client(record_stability_info=True)
    assert stable2.record_stability_info is True


def test_clients_are_futures_of_themselves(local_service: ServiceClient) -> None:
    tc = local_service.create_lora_training_client(MODEL, rank=4, seed=1).result()
    assert isinstance(tc, TrainingClient)
    sc = local_service.create_sampling_client(base_model=MODEL).result()
    assert sc.future().result() is sc
    assert asyncio.run(_awaited(sc)) is sc

    wrapped = BackcompatSamplingClientFuture(AwaitableConcurrentFuture(sc.future()))
    assert wrapped.result() is sc
    with pytest.warns(FutureWarning, match="call .result"):
        out = wrapped.sample(ModelInput.from_ints(PROMPT), 1, GREEDY).result()
    assert out.sequences
    made = BackcompatSamplingClientFuture(SamplingClient.create(local_service, base_model=MODEL))
    assert isinstance(made.result(), SamplingClient)
    trainer = BackcompatTrainingClientFuture(tc.future())
    with pytest.warns(FutureWarning):
        assert trainer.model_id == tc.model_id
    assert TrainingClient(local_service._session, 0, tc.model_id).model_seq_id == 0


async def _awaited(client: SamplingClient) -> SamplingClient:
    return await client


def test_rest_server_capabilities_and_request_options(local_env: Any, local_hooks: Any) -> None:
    options = RequestOptions(timeout=httpx.Timeout(12.0, connect=3.0), max_retries=2)
    options["headers"] = {"x-team": "a"}
    with ServiceClient(base_url="local://", hooks=local_hooks, request_options=options) as svc:
        assert svc.config.timeout == 12.0
        assert svc.config.connect_timeout == 3.0
        assert svc.config.max_retries == 2
        assert svc.config.default_headers["x-team"] == "a"
        caps = svc.create_rest_client().get_server_capabilities().result()
        assert MODEL in [m.model_name for m in caps.supported_models]
        assert isinstance(svc.create_rest_client(), RestClient)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with ServiceClient(
            base_url="local://", hooks=local_hooks, request_options={"idempotency_key": "k"}
        ):
            pass
    assert any("idempotency_key" in str(w.message) for w in seen)
    with pytest.raises(TinkexValidationError) as bad:
        ServiceClient(base_url="local://", request_options={"retries": 1})
    assert bad.value.field == "request_options"
