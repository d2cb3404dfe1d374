"""The JSON of requests and responses matches protocol.md, and 0.16.1 bodies parse."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from tinkex_types import (
    REQUEST_TYPES,
    AdamParams,
    Checkpoint,
    CheckpointsListResponse,
    CreateModelRequest,
    CreateModelResponse,
    CreateSamplingSessionRequest,
    CreateSessionRequest,
    Datum,
    ForwardBackwardInput,
    ForwardBackwardOutput,
    ForwardBackwardRequest,
    FutureCompletedMetadataResponse,
    FuturePendingResponse,
    FutureRetrieveRequest,
    GetInfoResponse,
    GetServerCapabilitiesResponse,
    LoadWeightsRequest,
    LoraConfig,
    ModelInput,
    OptimStepRequest,
    QueueState,
    RequestErrorCategory,
    RequestFailedResponse,
    SampleRequest,
    SampleResponse,
    SamplingParams,
    SaveWeightsForSamplerRequest,
    SaveWeightsForSamplerResponse,
    SaveWeightsRequest,
    SaveWeightsResponse,
    SessionHeartbeatRequest,
    SetCheckpointTtlRequest,
    TelemetryResponse,
    TelemetrySendRequest,
    TrainingRun,
    TrainingRunsResponse,
    TryAgainResponse,
    UntypedAPIFuture,
    WeightsInfoResponse,
    parse_future_response,
)

MODEL_ID = "6f1c:train:0"

DATUM_JSON = {
    "model_input": {"chunks": [{"tokens": [10, 11, 12, 13]}]},
    "loss_fn_inputs": {
        "target_tokens": {"data": [11, 12, 13, 14], "dtype": "int64", "shape": [4]},
        "weights": {"data": [0.0, 0.0, 1.0, 1.0], "dtype": "float32", "shape": [4]},
    },
}


def _datum() -> Datum:
    return Datum(
        model_input=ModelInput.from_ints([10, 11, 12, 13]),
        loss_fn_inputs={"target_tokens": [11, 12, 13, 14], "weights": [0.0, 0.0, 1.0, 1.0]},  # type: ignore[dict-item]
    )


# -- requests: exact JSON ---------------------------------------------------------------


def test_forward_backward_body_matches_spec_example() -> None:
    req = ForwardBackwardRequest(
        forward_backward_input=ForwardBackwardInput(data=[_datum()], loss_fn="cross_entropy"),
        model_id=MODEL_ID,
        seq_id=1,
    )
    expected = {
        "forward_backward_input": {
            "data": [DATUM_JSON],
            "loss_fn": "cross_entropy",
            "loss_fn_config": None,
        },
        "model_id": MODEL_ID,
        "seq_id": 1,
    }
    assert req.to_json_dict() == expected
    assert json.loads(req.to_json()) == expected
    assert ForwardBackwardRequest.model_validate(expected) == req


def test_sample_request_matches_spec_example() -> None:
    req = SampleRequest(
        num_samples=2,
        prompt=ModelInput.from_ints([1, 2, 3]),
        sampling_params=SamplingParams(max_tokens=64, temperature=0.7, stop=["\n"]),
        sampling_session_id="6f1c:sample:0",
        seq_id=0,
        prompt_logprobs=False,
        topk_prompt_logprobs=0,
    )
    spec = {
        "num_samples": 2,
        "prompt": {"chunks": [{"tokens": [1, 2, 3]}]},
        "sampling_params": {"max_tokens": 64, "temperature": 0.7, "stop": ["\n"]},
        "sampling_session_id": "6f1c:sample:0",
        "seq_id": 0,
        "prompt_logprobs": False,
        "topk_prompt_logprobs": 0,
    }
    # 0.16.1 style: only what was set
    assert req.to_json_dict(exclude_unset=True) == spec
    # tinkex style (§2.15): sampling params with defaults filled in
    # tinker 0.38's extras with their defaults, and the type discriminator, as 0.38 sends
    full = dict(
        spec,
        sampling_params={**spec["sampling_params"], "top_k": -1, "top_p": 1.0},
        topk_sample_logprobs=0,
        prompt_alt_tokens_k=0,
        type="sample",
    )
    assert req.to_json_dict() == full
    assert SampleRequest.model_validate(spec) == req


def test_create_session_body() -> None:
    req = CreateSessionRequest(sdk_version="0.16.1")
    assert req.to_json_dict() == {
        "tags": [],
        "user_metadata": {},
        "sdk_version": "0.16.1",
        "project_id": None,
        "type": "create_session",
    }


def test_create_model_body_sends_all_five_lora_keys() -> None:
    req = CreateModelRequest(
        session_id="s", model_seq_id=0, base_model="Qwen/Qwen3-8B", lora_config=LoraConfig(rank=8)
    )
    assert req.to_json_dict() == {
        "session_id": "s",
        "model_seq_id": 0,
        "base_model": "Qwen/Qwen3-8B",
        "user_metadata": None,
        "lora_config": {
            "rank": 8,
            "seed": None,
            "train_mlp": True,
            "train_attn": True,
            "train_unembed": True,
        },
        "optimizer_config": {"type": "adamw"},
        "type": "create_model",
    }


def test_optim_step_body_full_and_0161_style() -> None:
    req = OptimStepRequest(adam_params=AdamParams(learning_rate=1e-4), model_id=MODEL_ID, seq_id=2)
    assert req.to_json_dict(exclude_unset=True) == {
        "adam_params": {"learning_rate": 0.0001},
        "model_id": MODEL_ID,
        "seq_id": 2,
    }
    assert req.to_json_dict()["adam_params"] == {
        "learning_rate": 0.0001,
        "beta1": 0.9,
        "beta2": 0.95,
        "eps": 1e-12,
        "weight_decay": 0.0,
        "grad_clip_norm": 0.0,
    }


def test_weights_bodies() -> None:
    assert SaveWeightsRequest(model_id="m", path="step-1", seq_id=3).to_json_dict() == {
        "model_id": "m",
        "path": "step-1",
        "seq_id": 3,
        "ttl_seconds": None,
        "overwrite": False,
        "type": "save_weights",
    }
    unnamed = SaveWeightsForSamplerRequest(model_id="m", sampling_session_seq_id=0, seq_id=4)
    assert unnamed.to_json_dict() == {
        "model_id": "m",
        "sampling_session_seq_id": 0,
        "kind": "snapshot",
        "seq_id": 4,
        "ttl_seconds": None,
        "type": "save_weights_for_sampler",
    }
    load = LoadWeightsRequest(model_id="m", path="tinker://r/weights/a", optimizer=True, seq_id=1)
    assert load.to_json_dict() == {
        "model_id": "m",
        "path": "tinker://r/weights/a",
        "optimizer": True,
        "seq_id": 1,
        "type": "load_weights",
    }
    assert SetCheckpointTtlRequest().to_json_dict() == {"ttl_seconds": None}


def test_small_bodies() -> None:
    assert CreateSamplingSessionRequest(
        session_id="s", sampling_session_seq_id=0, base_model="b"
    ).to_json_dict() == {
        "session_id": "s",
        "sampling_session_seq_id": 0,
        "base_model": "b",
        "model_path": None,
        "type": "create_sampling_session",
    }
    assert FutureRetrieveRequest(request_id="r", allow_metadata_only=True).to_json_dict() == {
        "request_id": "r",
        "allow_metadata_only": True,
    }
    assert SessionHeartbeatRequest(session_id="s").to_json_dict() == {
        "session_id": "s",
        "type": "session_heartbeat",
    }
    # 0.16.1 style: only what was set, so no type
    assert SessionHeartbeatRequest(session_id="s").to_json_dict(exclude_unset=True) == {
        "session_id": "s"
    }
    assert TelemetryResponse().to_json_dict() == {"status": "accepted"}


# -- requests as 0.16.1 sends them -------------------------------------------------------


def test_0161_bodies_with_nulls_and_without_types_parse() -> None:
    cm = CreateModelRequest.model_validate(
        {
            "session_id": "s",
            "model_seq_id": 0,
            "base_model": "b",
            "user_metadata": None,
            "lora_config": {
                "rank": 32,
                "seed": None,
                "train_unembed": True,
                "train_mlp": True,
                "train_attn": None,
            },
            "type": "create_model",
            "something_new": 1,
        }
    )
    assert cm.lora_config.train_attn is True  # null means default (server rule 1)
    opt = OptimStepRequest.model_validate({"adam_params": {}, "model_id": "m", "seq_id": 1})
    assert opt.adam_params == AdamParams()
    # 0.16.1 cannot send null for a number that has a default (its models refuse None):
    # such a null is refused (test_types_numbers.py); null for an optional one is None.
    sp = SamplingParams.model_validate({"seed": None, "max_tokens": 1})
    assert (sp.temperature, sp.top_k, sp.top_p, sp.max_tokens) == (1.0, -1, 1.0, 1)
    sr = SampleRequest.model_validate(
        {
            "prompt": {"chunks": [{"tokens": [1]}]},
            "sampling_params": {},
            "sampling_session_id": "x",
            "prompt_logprobs": None,
        }
    )
    assert (sr.num_samples, sr.prompt_logprobs, sr.seq_id) == (1, False, None)
    cs = CreateSessionRequest.model_validate(
        {"tags": [], "user_metadata": None, "sdk_version": "0.16.1", "project_id": None}
    )
    assert cs.user_metadata == {}


# -- responses ---------------------------------------------------------------------------


def test_forward_backward_output_example() -> None:
    spec = {
        "loss_fn_output_type": "ArrayRecord",
        "loss_fn_outputs": [
            {"logprobs": {"data": [-7.1, -2.3, -0.4, -1.9], "dtype": "float32", "shape": [4]}}
        ],
        "metrics": {"loss:sum": 2.3},
    }
    out = ForwardBackwardOutput.model_validate(spec)
    assert out.loss_fn_outputs[0]["logprobs"].tolist() == [-7.1, -2.3, -0.4, -1.9]
    assert out.to_json_dict() == spec


def test_sample_response_example_and_topk_forms() -> None:
    spec = {
        "type": "sample",
        "sequences": [
            {"stop_reason": "stop", "tokens": [318, 257, 198], "logprobs": [-0.9, -0.2, -0.01]},
            {"stop_reason": "length", "tokens": [40, 588, 11], "logprobs": [-1.5, -0.7, -2.2]},
        ],
        "prompt_logprobs": None,
    }
    resp = SampleResponse.model_validate(spec)
    assert [s.stop_reason for s in resp.sequences] == ["stop", "length"]
    assert resp.to_json_dict() == {"sequences": spec["sequences"]}
    topk = SampleResponse.model_validate(
        {
            "sequences": [],
            "prompt_logprobs": [None, -1.0],
            "topk_prompt_logprobs": [None, [[5, -0.5], {"token_id": 6, "logprob": -1.5}]],
        }
    )
    assert topk.topk_prompt_logprobs == [None, [(5, -0.5), (6, -1.5)]]
    with pytest.raises(ValidationError, match="stop_reason"):
        SampleResponse.model_validate({"sequences": [{"stop_reason": "eos", "tokens": []}]})


def test_get_info_and_capabilities_and_weights_info() -> None:
    info = GetInfoResponse.model_validate(
        {
            "model_id": MODEL_ID,
            "model_data": {"arch": "qwen3", "model_name": "Qwen/Qwen3-8B", "tokenizer_id": "Q"},
            "is_lora": True,
            "lora_rank": 32,
            "model_name": "Qwen/Qwen3-8B",
        }
    )
    assert info.model_data.arch == "qwen3"
    caps = GetServerCapabilitiesResponse.model_validate(
        {"supported_models": [{"model_name": "Qwen/Qwen3-8B", "arch": "qwen3"}, "tiny"]}
    )
    assert caps.model_names() == ["Qwen/Qwen3-8B", "tiny"]
    assert caps.to_json_dict()["supported_models"][1] == {"model_name": "tiny"}
    wi = WeightsInfoResponse.model_validate({"base_model": "b", "is_lora": True, "lora_rank": 8})
    assert wi.train_mlp is None


def test_unnamed_save_result_has_no_path_key() -> None:
    assert SaveWeightsForSamplerResponse(sampling_session_id="s:sample:1").to_json_dict() == {
        "sampling_session_id": "s:sample:1"
    }


def test_checkpoints_and_runs() -> None:
    ck = {
        "checkpoint_id": "weights/step-1",
        "checkpoint_type": "training",
        "time": "2025-11-27T13:51:33.550745Z",
        "tinker_path": "tinker://run-1/weights/step-1",
        "size_bytes": 1024,
        "public": False,
        "expires_at": None,
    }
    parsed = Checkpoint.model_validate(ck)
    assert parsed.training_run_id == "run-1"
    assert parsed.time == datetime(2025, 11, 27, 13, 51, 33, 550745, tzinfo=UTC)
    assert parsed.parsed_path.name == "step-1"
    assert parsed.to_json_dict()["time"] == "2025-11-27T13:51:33.550745Z"
    listing = CheckpointsListResponse.model_validate({"checkpoints": [ck]})
    assert listing.cursor is None
    runs = TrainingRunsResponse.model_validate(
        {
            "training_runs": [
                {
                    "id": "run-1",
                    "base_model": "b",
                    "model_owner": "me",
                    "is_lora": True,
                    "last_request_time": "2025-11-27T13:51:33Z",
                    "last_checkpoint": ck,
                }
            ],
            "cursor": {"offset": 0, "limit": 20, "total_count": 1},
        }
    )
    run = runs.training_runs[0]
    assert isinstance(run, TrainingRun)
    assert run.training_run_id == "run-1"
    assert run.corrupted is False
    with pytest.raises(ValidationError, match="cursor"):
        TrainingRunsResponse.model_validate({"training_runs": []})


def test_telemetry_example_parses_and_keeps_its_keys() -> None:
    body = {
        "session_id": "6f1c",
        "platform": "Linux",
        "sdk_version": "0.16.1",
        "events": [
            {
                "event": "SESSION_START",
                "event_id": "0b9e",
                "event_session_index": 0,
                "severity": "INFO",
                "timestamp": "2025-11-27T13:51:33.550745Z",
            },
            {
                "event": "GENERIC_EVENT",
                "event_id": "77aa",
                "event_session_index": 1,
                "severity": "WARNING",
                "timestamp": "2025-11-27T13:51:34.001Z",
                "event_name": "user_error",
                "event_data": {"status_code": 404},
            },
            {
                "event": "SESSION_END",
                "event_id": "a3f0",
                "event_session_index": 2,
                "severity": "INFO",
                "timestamp": "2025-11-27T13:52:00Z",
                "duration": "0:00:26.449255",
            },
            {
                "event_id": "ff00",
                "event_session_index": 3,
                "severity": "ERROR",
                "timestamp": "2025-11-27T13:52:00Z",
                "error_type": "ValueError",
                "error_message": "boom",
                "traceback": None,
            },
        ],
    }
    req = TelemetrySendRequest.model_validate(body)
    kinds = [type(e).__name__ for e in req.events]
    assert kinds == [
        "SessionStartEvent",
        "GenericEvent",
        "SessionEndEvent",
        "UnhandledExceptionEvent",
    ]
    out = req.to_json_dict()
    for sent, original in zip(out["events"], body["events"], strict=True):
        assert set(original) <= set(sent)
    assert out["events"][3]["event"] == "UNHANDLED_EXCEPTION"
    assert out["events"][3]["traceback"] is None


# -- futures -----------------------------------------------------------------------------


def test_submit_answer() -> None:
    fut = UntypedAPIFuture.model_validate({"request_id": "r1", "model_id": "m", "x": 1})
    assert (fut.request_id, fut.model_id) == ("r1", "m")


def test_parse_future_response_order_and_forms() -> None:
    ta = parse_future_response(
        {"type": "try_again", "request_id": "r", "queue_state": "Paused_Rate_Limit", "error": "x"}
    )
    assert isinstance(ta, TryAgainResponse)  # try_again wins over an error key
    assert ta.queue_state is QueueState.PAUSED_RATE_LIMIT
    odd = parse_future_response({"type": "try_again", "request_id": "r", "queue_state": "weird"})
    assert isinstance(odd, TryAgainResponse)
    assert odd.queue_state is QueueState.UNKNOWN
    meta = parse_future_response({"status": "complete_metadata", "response_payload_size": 9})
    assert isinstance(meta, FutureCompletedMetadataResponse)
    assert meta.response_payload_size == 9
    failed = parse_future_response({"error": "bad token", "category": "user"}, SaveWeightsResponse)
    assert isinstance(failed, RequestFailedResponse)
    assert failed.category is RequestErrorCategory.USER
    odd_cat = parse_future_response({"error": "x", "category": "cosmic", "status": "failed"})
    assert isinstance(odd_cat, RequestFailedResponse)
    assert odd_cat.category is RequestErrorCategory.UNKNOWN
    no_msg = parse_future_response({"status": "failed"})
    assert isinstance(no_msg, RequestFailedResponse)
    assert no_msg.error
    pending = parse_future_response({"status": "pending", "queue_state": "active"})
    assert isinstance(pending, FuturePendingResponse)
    wrapped = parse_future_response(
        {"status": "completed", "result": {"model_id": "m"}}, CreateModelResponse
    )
    assert wrapped == CreateModelResponse(model_id="m")
    plain = parse_future_response({"path": "tinker://r/weights/a"}, REQUEST_TYPES["SaveWeights"])
    assert plain == SaveWeightsResponse(path="tinker://r/weights/a")
    assert parse_future_response({"metrics": {}}) == {"metrics": {}}
    with pytest.raises(ValidationError):
        parse_future_response({"unexpected": 1}, SaveWeightsResponse)
    with pytest.raises(TypeError):
        parse_future_response([1, 2])


def test_try_again_wire_form_keeps_its_type() -> None:
    body = TryAgainResponse(request_id="r").to_json_dict()
    assert body == {"type": "try_again", "request_id": "r", "queue_state": "active"}
    assert RequestFailedResponse(
        error="e", category=RequestErrorCategory.SERVER
    ).to_json_dict() == {
        "error": "e",
        "category": "server",
    }


# -- validation errors name the field ----------------------------------------------------


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: SamplingParams(max_tokens=-1), "max_tokens"),
        (lambda: SamplingParams(top_p=0.0), "top_p"),
        (lambda: LoraConfig(rank=0), "rank"),
        (lambda: ForwardBackwardInput(data=[], loss_fn="mse"), "loss_fn"),  # type: ignore[arg-type]
        (lambda: AdamParams(beta1=1.0), "beta1"),
        (lambda: AdamParams(eps=0.0), "eps"),
        (lambda: SaveWeightsRequest(model_id="m", path="a/b"), "path"),
        (lambda: LoadWeightsRequest(model_id="m", path="weights/a"), "path"),
        (
            lambda: CreateSamplingSessionRequest(
                session_id="s", sampling_session_seq_id=0, model_path="x"
            ),
            "model_path",
        ),
        (
            lambda: SampleRequest(
                prompt=ModelInput.empty(), num_samples=0, sampling_session_id="s"
            ),
            "num_samples",
        ),
        (lambda: SampleRequest(prompt=ModelInput.empty()), "sampling_session_id"),
        (lambda: LoraConfig(train_mlp=False, train_attn=False, train_unembed=False), "train_mlp"),
        (lambda: SetCheckpointTtlRequest(ttl_seconds=0), "ttl_seconds"),
    ],
)
def test_validation_errors_name_the_field(build: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        build()
    assert field in str(info.value)


def test_loss_fn_names() -> None:
    for name in ["cross_entropy", "importance_sampling", "ppo", "cispo", "dro"]:
        assert ForwardBackwardInput(data=[], loss_fn=name).loss_fn == name  # type: ignore[arg-type]


def test_sample_stream_chunk_event_types() -> None:
    from tinkex_types import SampleStreamChunk

    assert SampleStreamChunk.model_validate({"token": "a", "token_id": 1}).event_type == "token"
    assert SampleStreamChunk(finish_reason="stop", total_tokens=3).event_type == "done"
    assert SampleStreamChunk.model_validate({"error": "boom"}).event_type == "error"
