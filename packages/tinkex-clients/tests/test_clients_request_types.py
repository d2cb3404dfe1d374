"""Every TrainingClient submit names its request type (x-tinker-request-type), as its
polls do; a loss the wire model cannot carry is refused before anything is sent."""

from __future__ import annotations

import pytest

from tinkex_clients import ServiceClient
from tinkex_clients._training_forward import wire_inputs
from tinkex_types import AdamParams, Datum, ModelInput, SamplingParams, TinkexValidationError

from .conftest import FakeTinker

TINY = "tinkex/tiny-llama-100k"


def _data() -> list[Datum]:
    return [
        Datum(
            model_input=ModelInput.from_ints([1, 2, 3]),
            loss_fn_inputs={"target_tokens": [2, 3, 4], "weights": [1.0, 1.0, 1.0]},
        )
    ]


def test_submits_carry_their_request_type(service: ServiceClient, fake: FakeTinker) -> None:
    tc = service.create_lora_training_client(TINY, rank=4)
    tc.forward(_data(), "cross_entropy").result(10)
    tc.forward_backward(_data(), "cross_entropy").result(10)
    tc.optim_step(AdamParams(learning_rate=0.1)).result(10)
    path = tc.save_state("s1").result(10).path
    tc.load_state(path).result(10)
    tc.save_weights_for_sampler("w1").result(10)
    tc.unload_model().result(10)
    submits = [(p, t) for p, t in fake.request_types if p != "/api/v1/retrieve_future"]
    skip = (
        "/api/v1/client/config",
        "/api/v1/create_session",
        "/api/v1/session_heartbeat",
        "/api/v1/create_model",
    )
    training = [(p, t) for p, t in submits if p not in skip]
    assert training == [
        ("/api/v1/forward", "Forward"),
        ("/api/v1/forward_backward", "ForwardBackward"),
        ("/api/v1/optim_step", "OptimStep"),
        ("/api/v1/save_weights", "SaveWeights"),
        ("/api/v1/load_weights", "LoadWeights"),
        ("/api/v1/save_weights_for_sampler", "SaveWeightsForSampler"),
        ("/api/v1/unload_model", "UnloadModel"),
    ]
    assert ("/api/v1/create_model", "CreateModel") in submits
    polls = [t for p, t in fake.request_types if p == "/api/v1/retrieve_future"]
    assert "UnloadModel" in polls
    assert "ForwardBackward" in polls


def test_a_loss_the_wire_model_cannot_carry_names_loss_fn() -> None:
    with pytest.raises(TinkexValidationError) as info:
        wire_inputs([_data()], "hinge", None)
    assert info.value.field == "loss_fn"
    assert info.value.fix is not None
    assert "cross_entropy" in info.value.fix


def test_sample_submits_carry_their_request_type(service: ServiceClient, fake: FakeTinker) -> None:
    sampler = service.create_sampling_client(base_model=TINY)
    sampler.sample(ModelInput.from_ints([1, 2]), 1, SamplingParams(max_tokens=2)).result(10)
    assert ("/api/v1/asample", "Sample") in fake.request_types
