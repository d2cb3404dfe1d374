"""tinker 0.38's optimizer families and the 0.38 fields of the training/weights requests."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from pydantic import ValidationError

from tinkex_types import (
    AdamOptimizerConfig,
    AdamParams,
    Checkpoint,
    CreateModelRequest,
    CreateSessionRequest,
    DimuonOptimizerConfig,
    DimuonParams,
    GetInfoResponse,
    GetSessionResponse,
    LoadWeightsRequest,
    LoadWeightsResponse,
    OptimizerConfigBase,
    OptimParamsBase,
    OptimStepRequest,
    SaveWeightsForSamplerRequest,
    SaveWeightsRequest,
    TelemetryBatch,
    TelemetrySendRequest,
    TinkexValidationError,
    UntypedAPIFuture,
    WeightsInfoResponse,
)

CREATE = {"session_id": "s", "model_seq_id": 0, "base_model": "b"}


def _errors(exc: ValidationError) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in exc.errors()]


def test_create_model_defaults_to_adamw_and_writes_it() -> None:
    req = CreateModelRequest.model_validate(CREATE)
    assert req.optimizer_config == AdamOptimizerConfig()
    body = req.to_json_dict()
    assert body["optimizer_config"] == {"type": "adamw"}
    assert body["type"] == "create_model"
    # 0.16.1 style (only what was set) sends neither
    assert "optimizer_config" not in req.to_json_dict(exclude_unset=True)


@pytest.mark.parametrize(
    ("given", "cls", "written"),
    [
        ({"type": "adamw"}, AdamOptimizerConfig, {"type": "adamw"}),
        ({}, AdamOptimizerConfig, {"type": "adamw"}),
        ({"type": "dimuon"}, DimuonOptimizerConfig, {"type": "dimuon", "version": 1}),
        ({"type": "dimuon", "version": 1}, DimuonOptimizerConfig, {"type": "dimuon", "version": 1}),
        ({"type": "lion", "betas": [0.9, 0.99]}, OptimizerConfigBase, None),
    ],
)
def test_optimizer_config_families(given: dict[str, Any], cls: type, written: Any) -> None:
    req = CreateModelRequest.model_validate({**CREATE, "optimizer_config": given})
    assert type(req.optimizer_config) is cls
    out = req.to_json_dict()["optimizer_config"]
    assert out == (written if written is not None else given)
    again = CreateModelRequest.model_validate_json(req.to_json())
    assert again == req


def test_optimizer_config_type_written_even_when_unset() -> None:
    req = CreateModelRequest(**CREATE, optimizer_config=DimuonOptimizerConfig())
    assert req.to_json_dict(exclude_unset=True)["optimizer_config"] == {"type": "dimuon"}
    assert CreateModelRequest.model_validate(req.to_json_dict(exclude_unset=True)) == req


def test_dimuon_version_must_be_1() -> None:
    with pytest.raises(ValidationError) as info:
        CreateModelRequest.model_validate(
            {**CREATE, "optimizer_config": {"type": "dimuon", "version": 2}}
        )
    assert any("optimizer_config" in loc and "version" in loc for loc in _errors(info.value))


def test_optim_step_reads_every_key_and_writes_by_family() -> None:
    for key in ("optim_params", "adam_params"):
        req = OptimStepRequest.model_validate({key: {"learning_rate": 0.5}, "model_id": "m"})
        assert req.optim_params == AdamParams(learning_rate=0.5)
        assert req.adam_params == AdamParams(learning_rate=0.5)
        body = req.to_json_dict()
        assert body["adam_params"]["learning_rate"] == 0.5
        assert "optim_params" not in body
        assert "optimizer_params" not in body
        assert body["type"] == "optim_step"
    dimuon = OptimStepRequest.model_validate(
        {"optimizer_params": {"type": "dimuon", "learning_rate": 0.02}, "model_id": "m"}
    )
    assert dimuon.optim_params == DimuonParams(learning_rate=0.02)
    body = dimuon.to_json_dict()
    assert body["optimizer_params"] == {
        "type": "dimuon",
        "learning_rate": 0.02,
        "grad_clip_norm": 0.0,
        "beta1": 0.9,
    }
    assert "adam_params" not in body
    assert OptimStepRequest.model_validate_json(dimuon.to_json()) == dimuon
    assert json.loads(dimuon.to_json()) == body


def test_optim_step_positional_family_object_and_adam_property() -> None:
    req = OptimStepRequest(optim_params=DimuonParams(learning_rate=0.1), model_id="m")
    with pytest.raises(TinkexValidationError) as info:
        _ = req.adam_params
    assert info.value.field == "optim_params.type"
    assert "dimuon" in str(info.value)
    other = OptimStepRequest.model_validate(
        {"optimizer_params": {"type": "lion", "lr": 1}, "model_id": "m"}
    )
    assert type(other.optim_params) is OptimParamsBase
    assert other.to_json_dict()["optimizer_params"] == {"type": "lion", "lr": 1}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"type": "dimuon"}, "learning_rate"),
        ({"type": "dimuon", "learning_rate": -1.0}, "learning_rate"),
        ({"type": "dimuon", "learning_rate": math.inf}, "learning_rate"),
        ({"type": "dimuon", "learning_rate": 0.1, "beta1": 1.0}, "beta1"),
        ({"type": "dimuon", "learning_rate": 0.1, "grad_clip_norm": math.nan}, "grad_clip_norm"),
        ({"type": ""}, "type"),
    ],
)
def test_bad_optimizer_params_name_the_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        OptimStepRequest.model_validate({"optimizer_params": params, "model_id": "m"})
    assert _errors(info.value) == ["optimizer_params"]
    assert info.value.errors()[0]["msg"].startswith(f"{field}: ")


def test_bad_adam_params_name_the_key_that_was_sent() -> None:
    with pytest.raises(ValidationError) as info:
        OptimStepRequest.model_validate({"adam_params": {"learning_rate": "x"}, "model_id": "m"})
    assert _errors(info.value) == ["adam_params.learning_rate"]


def test_info_responses_carry_the_optimizer() -> None:
    info = GetInfoResponse.model_validate(
        {"model_id": "m", "model_data": {}, "optimizer_config": {"type": "dimuon"}}
    )
    assert info.optimizer_config == DimuonOptimizerConfig()
    assert info.type is None
    assert "type" not in info.to_json_dict()
    assert GetInfoResponse.model_validate({"model_id": "m", "model_data": {}, "type": "get_info"})
    with pytest.raises(ValidationError):
        GetInfoResponse.model_validate({"model_id": "m", "model_data": {}, "type": "sample"})
    weights = WeightsInfoResponse.model_validate({"base_model": "b", "is_lora": True})
    assert weights.optimizer_config == AdamOptimizerConfig()
    assert weights.to_json_dict()["optimizer_config"] == {"type": "adamw"}


def test_save_requests_0_38_fields() -> None:
    save = SaveWeightsRequest(model_id="m", path="p", overwrite=True, user_metadata={"k": "v"})
    body = save.to_json_dict()
    assert (body["overwrite"], body["user_metadata"], body["type"]) == (
        True,
        {"k": "v"},
        "save_weights",
    )
    assert SaveWeightsRequest.model_validate({"model_id": "m"}).overwrite is False
    sampler = SaveWeightsForSamplerRequest.model_validate({"model_id": "m", "kind": "inflight"})
    assert sampler.kind == "inflight"
    assert SaveWeightsForSamplerRequest.model_validate({"model_id": "m"}).kind == "snapshot"
    with pytest.raises(ValidationError) as info:
        SaveWeightsForSamplerRequest.model_validate({"model_id": "m", "kind": "live"})
    assert _errors(info.value) == ["kind"]
    with pytest.raises(ValidationError) as info:
        SaveWeightsRequest.model_validate({"model_id": "m", "user_metadata": {"k": 1}})
    assert _errors(info.value) == ["user_metadata.k"]


def test_load_weights_two_addressings() -> None:
    legacy = LoadWeightsRequest.model_validate(
        {"model_id": "m", "path": "tinker://r/weights/a", "seq_id": 1}
    )
    assert legacy.session_id is None
    assert legacy.optimizer is False
    creating = LoadWeightsRequest.model_validate(
        {
            "session_id": "s",
            "model_seq_id": 0,
            "path": "tinker://r/weights/a",
            "optimizer": True,
            "optimizer_config": {"type": "dimuon"},
            "base_model": "b",
            "user_metadata": {"a": 1},
            "type": "load_weights",
        }
    )
    assert creating.optimizer_config == DimuonOptimizerConfig()
    assert LoadWeightsRequest.model_validate_json(creating.to_json()) == creating
    for bad in (
        {"path": "tinker://r/weights/a"},
        {"model_id": "m", "session_id": "s", "model_seq_id": 0, "path": "tinker://r/weights/a"},
        {"session_id": "s", "path": "tinker://r/weights/a"},
    ):
        with pytest.raises(ValidationError, match="session_id"):
            LoadWeightsRequest.model_validate(bad)


def test_weights_access_token_is_not_shown() -> None:
    req = LoadWeightsRequest(
        model_id="m", path="tinker://r/weights/a", weights_access_token="tok-SECRET"
    )
    assert "SECRET" not in repr(req)
    assert "SECRET" not in str(req)
    assert req.to_json_dict()["weights_access_token"] == "tok-SECRET"


def test_small_0_38_fields() -> None:
    assert LoadWeightsResponse.model_validate({"model_id": "s:train:0"}).model_id == "s:train:0"
    session = CreateSessionRequest(sdk_version="0.38.0", display_name="run 1")
    assert session.to_json_dict()["display_name"] == "run 1"
    got = GetSessionResponse.model_validate(
        {"training_run_ids": [], "sampler_ids": [], "display_name": "x", "user_metadata": {}}
    )
    assert (got.display_name, got.user_metadata) == ("x", {})
    fut = UntypedAPIFuture.model_validate({"request_id": "r", "sample_sequence_ids": ["a", "b"]})
    assert fut.sample_sequence_ids == ["a", "b"]
    assert "sample_sequence_ids" not in UntypedAPIFuture(request_id="r").to_json_dict()
    ck = Checkpoint.model_validate(
        {
            "checkpoint_id": "weights/a",
            "checkpoint_type": "training",
            "time": "2026-01-01T00:00:00Z",
            "tinker_path": "tinker://r/weights/a",
            "user_metadata": {"step": "3"},
        }
    )
    assert ck.user_metadata == {"step": "3"}
    batch = {"session_id": "s", "platform": "linux", "sdk_version": "0.38.0", "events": []}
    sent = TelemetrySendRequest.model_validate({**batch, "process_uuid": "p"})
    assert sent.process_uuid == "p"
    assert TelemetrySendRequest.model_validate(batch).process_uuid is None
    assert TelemetryBatch.model_validate({**batch, "process_uuid": "p"}).process_uuid == "p"
