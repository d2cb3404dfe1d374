"""SamplingClient against the fake: requests, back-pressure, logprobs, sharing, validation."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

from tinkex_clients import SamplingClient, ServiceClient
from tinkex_http import RetryConfig
from tinkex_types import ModelInput, SamplingParams, TinkexValidationError

from .conftest import FakeTinker


@pytest.fixture
def sc(service: ServiceClient) -> SamplingClient:
    return service.create_sampling_client(base_model="tinkex/tiny-llama-100k")


def test_sample_request_shape_and_result(sc: SamplingClient, fake: FakeTinker) -> None:
    res = sc.sample(
        ModelInput.from_ints([1, 2, 3]), 2, SamplingParams(max_tokens=3, seed=5)
    ).result(5)
    assert len(res.sequences) == 2
    assert all(len(s.tokens) == 3 for s in res.sequences)
    body = fake.bodies("/api/v1/asample")[0]
    assert body["sampling_session_id"] == sc.sampling_session_id == "sess-0:sample:0"
    assert body["seq_id"] == 0
    assert body["num_samples"] == 2
    assert body["prompt_logprobs"] is False
    assert body["topk_prompt_logprobs"] == 0
    assert body["sampling_params"]["max_tokens"] == 3
    assert body["sampling_params"]["seed"] == 5
    assert body["prompt"] == {"chunks": [{"tokens": [1, 2, 3]}]}
    create = fake.bodies("/api/v1/create_sampling_session")[0]
    assert create["base_model"] == "tinkex/tiny-llama-100k"
    assert create["model_path"] is None


def test_429_backs_off_and_resends_with_new_seq_id(
    service: ServiceClient, fake: FakeTinker
) -> None:
    fast = RetryConfig(base_delay=0.01, max_delay=0.02)
    sc = service.create_sampling_client(base_model="m", retry_config=fast)
    sc.dispatch.small_backoff = 0.01
    fake.asample_429 = 2
    res = sc.sample(ModelInput.from_ints([1, 2]), 1, SamplingParams(max_tokens=2)).result(10)
    assert len(res.sequences) == 1
    assert [b["seq_id"] for b in fake.bodies("/api/v1/asample")] == [0, 1, 2]
    assert sc.dispatch.recently_backed_off()


def test_compute_logprobs_and_base_model(sc: SamplingClient, fake: FakeTinker) -> None:
    lps = sc.compute_logprobs(ModelInput.from_ints([3, 4, 5])).result(5)
    assert lps[0] is None
    assert len(lps) == 3
    body = fake.bodies("/api/v1/asample")[0]
    assert body["prompt_logprobs"] is True
    assert body["sampling_params"]["max_tokens"] == 1
    assert sc.get_base_model() == "tinkex/tiny-llama-100k"


def test_get_base_model_asks_the_server(service: ServiceClient, fake: FakeTinker) -> None:
    tc = service.create_lora_training_client("tinkex/tiny-llama-100k")
    path = tc.save_weights_for_sampler("w").result(5).path
    assert path is not None
    sc = service.create_sampling_client(model_path=path)
    fake.samplers[sc.sampling_session_id]["base_model"] = "served/model"
    assert sc.get_base_model() == "served/model"
    assert any(p.startswith("/api/v1/samplers/") for p in fake.paths())


def test_shared_across_threads(sc: SamplingClient, fake: FakeTinker) -> None:
    prompt = ModelInput.from_ints([1, 2, 3])
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [
            pool.submit(lambda: sc.sample(prompt, 1, SamplingParams(max_tokens=2)).result(10))
            for _ in range(32)
        ]
        results = [f.result() for f in futures]
    assert len(results) == 32
    seq_ids = sorted(b["seq_id"] for b in fake.bodies("/api/v1/asample"))
    assert seq_ids == list(range(32))
    assert sc.dispatch.in_flight == 0


async def test_many_coroutines(sc: SamplingClient) -> None:
    prompt = ModelInput.from_ints([1, 2])
    results = await asyncio.gather(
        *(sc.sample_async(prompt, 1, SamplingParams(max_tokens=1, seed=i)) for i in range(20))
    )
    assert len(results) == 20
    assert sc.dispatch.max_in_flight >= 1
    lps = await sc.compute_logprobs_async(prompt)
    assert lps[0] is None
    assert await sc.get_base_model_async() == "tinkex/tiny-llama-100k"


def test_bad_sampling_arguments(sc: SamplingClient, fake: FakeTinker) -> None:
    sent = len(fake.requests)
    prompt = ModelInput.from_ints([1])
    cases = [
        (lambda: sc.sample([1, 2], 1, SamplingParams()), "prompt"),  # type: ignore[arg-type]
        (lambda: sc.sample(ModelInput(chunks=[]), 1, SamplingParams()), "prompt"),
        (lambda: sc.sample(prompt, 0, SamplingParams()), "num_samples"),
        (lambda: sc.sample(prompt, 1, "greedy"), "sampling_params"),  # type: ignore[arg-type]
        (lambda: sc.sample(prompt, 1, {"temperature": -1.0}), "sampling_params"),  # type: ignore[arg-type]
        (
            lambda: sc.sample(prompt, 1, SamplingParams.model_construct(temperature=float("inf"))),
            "sampling_params.temperature",
        ),
        # model_construct: SamplingParams itself refuses these now (tinkex_types numeric
        # validation, issue 17); the client must still catch a model built around it.
        (
            lambda: sc.sample(prompt, 1, SamplingParams.model_construct(max_tokens=0)),
            "sampling_params.max_tokens",
        ),
        (
            lambda: sc.sample(prompt, 1, SamplingParams.model_construct(stop=["", "x"])),
            "sampling_params.stop[0]",
        ),
        (
            lambda: sc.sample(prompt, 1, SamplingParams.model_construct(seed=2**64)),
            "sampling_params.seed",
        ),
        (
            lambda: sc.sample(prompt, 1, SamplingParams(), topk_prompt_logprobs=-1),
            "topk_prompt_logprobs",
        ),
        (
            lambda: sc.sample(prompt, 1, SamplingParams(), include_prompt_logprobs="yes"),
            "include_prompt_logprobs",
        ),  # type: ignore[arg-type]
    ]
    for call, field in cases:
        with pytest.raises(TinkexValidationError) as info:
            call()
        assert info.value.field == field
    assert len(fake.requests) == sent
