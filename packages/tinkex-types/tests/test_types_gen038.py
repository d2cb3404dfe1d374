"""tinker 0.38 models: client config, batch polling, sampler joining, provenance spans,
DmelChunk and RequestErrorCategory's member names."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from tinkex_types import (
    ClientConfigRequest,
    ClientConfigResponse,
    ClientDynamicConfigResponse,
    CreateModelResponse,
    Datum,
    DmelChunk,
    FutureCompletion,
    FutureFailed,
    FutureFinished,
    FutureRetrieveResponse,
    FuturesRetrieveRequest,
    FuturesRetrieveResponse,
    JoinSamplingSessionRequest,
    JoinSamplingSessionResponse,
    ModelInput,
    PromptProvenanceSpan,
    ProvenanceSpan,
    RequestErrorCategory,
    RequestFailedResponse,
    SampledProvenanceSpan,
    SamplingSessionFuturesTarget,
    TinkexValidationError,
    TryAgainResponse,
    tensor_container_shape,
)


def _locs(exc: ValidationError) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in exc.errors()]


def test_client_config_defaults_are_tinkers_and_unknown_flags_ignored() -> None:
    flags = ClientConfigResponse.model_validate({"brand_new_flag": True, "pjwt_auth_enabled": 1})
    assert flags.pjwt_auth_enabled is True
    assert flags.use_pyqwest_transport is True
    assert flags.sample_max_concurrent_requests == 2000
    assert "brand_new_flag" not in flags.to_json_dict()
    dynamic = ClientDynamicConfigResponse()
    assert dynamic.to_json_dict() == {
        "refresh_interval_sec": 300,
        "sample_cancel_enabled": False,
        "sample_cancel_max_batch_size": 64,
    }
    assert ClientConfigRequest.model_validate({}).sdk_version is None
    assert ClientConfigRequest(sdk_version="0.38.0").to_json_dict() == {"sdk_version": "0.38.0"}
    with pytest.raises(ValidationError) as info:
        ClientDynamicConfigResponse.model_validate({"refresh_interval_sec": "soon"})
    assert _locs(info.value) == ["refresh_interval_sec"]


def test_batch_poll_round_trip() -> None:
    req = FuturesRetrieveRequest(
        target=SamplingSessionFuturesTarget(sampling_session_id="s:sample:0", cloned_sampler_id=2),
        prev_cursor=7,
        retrieved_request_ids=["a"],
    )
    body = req.to_json_dict()
    assert body["target"] == {
        "type": "sampling_session",
        "sampling_session_id": "s:sample:0",
        "cloned_sampler_id": 2,
    }
    assert FuturesRetrieveRequest.model_validate(body) == req
    minimal = FuturesRetrieveRequest.model_validate({"target": {"sampling_session_id": "x"}})
    assert (minimal.prev_cursor, minimal.timeout, minimal.retrieved_request_ids) == (0, None, [])
    resp = FuturesRetrieveResponse.model_validate(
        {
            "completions": [
                {"state": "finished", "request_id": "a", "response_payload_uncompressed_size": 9},
                {"state": "failed", "request_id": "b"},
            ],
            "cursor": 3,
        }
    )
    assert [type(c) for c in resp.completions] == [FutureFinished, FutureFailed]
    assert FuturesRetrieveResponse.model_validate_json(resp.to_json()) == resp


@pytest.mark.parametrize(
    ("completion", "loc"),
    [
        ({"request_id": "a"}, ""),
        ({"state": "done", "request_id": "a"}, ""),
        ({"state": "finished"}, "finished.request_id"),
        ({"state": "finished", "request_id": "a", "response_payload_uncompressed_size": -1}, "x"),
    ],
)
def test_bad_completions_are_refused(completion: dict[str, Any], loc: str) -> None:
    with pytest.raises(ValidationError) as info:
        FuturesRetrieveResponse.model_validate({"completions": [completion], "cursor": 0})
    assert all(x.startswith("completions.0") for x in _locs(info.value))
    if loc == "finished.request_id":
        assert _locs(info.value) == ["completions.0.finished.request_id"]


def test_future_completion_and_retrieve_response_are_unions() -> None:
    done = TypeAdapter(FutureCompletion).validate_python({"state": "failed", "request_id": "r"})
    assert done == FutureFailed(request_id="r")
    result = TypeAdapter(FutureRetrieveResponse).validate_python(
        {"type": "try_again", "request_id": "r"}
    )
    assert isinstance(result, TryAgainResponse)
    created = TypeAdapter(FutureRetrieveResponse).validate_python({"model_id": "m"})
    assert isinstance(created, CreateModelResponse | RequestFailedResponse | object)


def test_join_sampling_session() -> None:
    req = JoinSamplingSessionRequest(sampling_session_id="s:sample:0")
    assert req.to_json_dict() == {
        "sampling_session_id": "s:sample:0",
        "type": "join_sampling_session",
    }
    resp = JoinSamplingSessionResponse.model_validate({"client_counter": 4})
    assert resp.client_counter == 4
    with pytest.raises(ValidationError) as info:
        JoinSamplingSessionResponse.model_validate({"client_counter": 1, "type": "sample"})
    assert _locs(info.value) == ["type"]


def _datum() -> Datum:
    return Datum(
        model_input=ModelInput.from_ints([1, 2, 3, 4]),
        loss_fn_inputs={"target_tokens": [2, 3, 4, 5], "weights": [1.0, 1.0, 1.0, 1.0]},
    )


def test_provenance_spans_kinds_and_with_provenance() -> None:
    prompt = PromptProvenanceSpan(sequence_id="s-1", length=3)
    sampled = SampledProvenanceSpan(sequence_id="s-1", offset=0, length=1)
    assert (prompt.source, prompt.offset, sampled.source) == ("prompt", 0, "sampled")
    datum = _datum().with_provenance(
        model_input=[prompt, sampled], loss_fn_inputs=[prompt, sampled]
    )
    assert datum.model_input_spans == [prompt, sampled]
    again = Datum.model_validate_json(datum.to_json())
    assert again.model_input_spans is not None
    assert [type(s) for s in again.model_input_spans] == [
        PromptProvenanceSpan,
        SampledProvenanceSpan,
    ]
    assert again == datum
    # source is written even when it was never set explicitly
    assert datum.to_json_dict(exclude_unset=True)["model_input_spans"][0]["source"] == "prompt"
    # a plain ProvenanceSpan (as decoders build them) becomes its kind
    plain = Datum.model_validate(
        {
            "model_input": {"chunks": [{"tokens": [1]}]},
            "model_input_spans": [ProvenanceSpan(source="sampled", sequence_id="x", length=1)],
            "loss_fn_input_spans": [],
        }
    )
    assert plain.model_input_spans is not None
    assert type(plain.model_input_spans[0]) is SampledProvenanceSpan


def test_with_provenance_checks_the_tiling() -> None:
    with pytest.raises(TinkexValidationError) as info:
        _datum().with_provenance(
            model_input=[PromptProvenanceSpan(sequence_id="s", length=3)],
            loss_fn_inputs=[PromptProvenanceSpan(sequence_id="s", length=4)],
        )
    assert info.value.field == "with_provenance.model_input"
    with pytest.raises(TinkexValidationError) as info:
        _datum().with_provenance(
            model_input=[PromptProvenanceSpan(sequence_id="s", length=4)],
            loss_fn_inputs=[SampledProvenanceSpan(sequence_id="s", length=5)],
        )
    assert info.value.field == "with_provenance.loss_fn_inputs"


@pytest.mark.parametrize(
    ("span", "loc"),
    [
        ({"source": "prompt", "sequence_id": "", "length": 1}, "sequence_id"),
        ({"source": "sampled", "sequence_id": "s", "length": -1}, "length"),
        ({"source": "prompt", "sequence_id": "s", "offset": -2, "length": 1}, "offset"),
        ({"source": "elsewhere", "sequence_id": "s", "length": 1}, "0"),
    ],
)
def test_bad_spans_name_the_field(span: dict[str, Any], loc: str) -> None:
    with pytest.raises(ValidationError) as info:
        Datum.model_validate(
            {"model_input": {"chunks": [{"tokens": [1]}]}, "model_input_spans": [span]}
        )
    assert any(x.startswith("model_input_spans.0") and x.endswith(loc) for x in _locs(info.value))


def _container(shape: tuple[int, ...], dtype: int = 1, constant: bool = False) -> bytes:
    out = bytearray([254] if constant else [])
    out.append(dtype)
    out.append(len(shape))
    for dim in shape:
        while dim >= 0x80:
            out.append((dim & 0x7F) | 0x80)
            dim >>= 7
        out.append(dim)
    return bytes(out) + b"\x00" * 8


def test_dmel_chunk() -> None:
    raw = _container((300, 80))
    assert tensor_container_shape(raw) == (300, 80)
    assert tensor_container_shape(_container((5,), constant=True)) == (5,)
    chunk = DmelChunk(dmel=raw)
    assert chunk.length == 300
    body = chunk.to_json_dict()
    assert body == {"dmel": base64.b64encode(raw).decode(), "type": "dmel"}
    assert DmelChunk.model_validate(body) == chunk
    with pytest.raises(ValidationError) as info:
        DmelChunk.model_validate({"dmel": "not base64!"})
    assert _locs(info.value) == ["dmel"]
    for bad in (b"", bytes([9, 1, 1]), bytes([1, 2, 0x80])):
        with pytest.raises(ValueError, match="TensorContainer"):
            DmelChunk(dmel=bad).length  # noqa: B018


def test_request_error_category_has_tinkers_member_names() -> None:
    assert [m.name for m in RequestErrorCategory] == ["Unknown", "Server", "User"]
    assert RequestErrorCategory.USER is RequestErrorCategory.User
    assert RequestErrorCategory.parse("Server") is RequestErrorCategory.SERVER
    assert RequestErrorCategory("unknown") is RequestErrorCategory.Unknown


def test_image_chunk_has_tinkers_converters() -> None:
    from tinkex_types import ImageChunk

    raw = b"\x89PNG..."
    assert ImageChunk.validate_data(base64.b64encode(raw).decode()) == raw
    assert ImageChunk.validate_data(bytearray(raw)) == raw
    chunk = ImageChunk(data=raw, format="png")
    assert chunk.serialize_data(raw) == base64.b64encode(raw).decode()
    assert chunk.to_json_dict()["data"] == base64.b64encode(raw).decode()


def test_session_finish_reasons_and_statuses() -> None:
    from tinkex_types import (
        ClientFinishedSessionStatusQuery,
        ClientSessionFinished,
        ClientSessionFinishErrored,
        SessionFailed,
        SessionFailedTrainingRunReason,
        SessionStatus,
    )

    finished = ClientSessionFinished.model_validate(
        {"reason": {"type": "errored"}, "detail": "boom"}
    )
    assert isinstance(finished.reason, ClientSessionFinishErrored)
    assert finished.to_json_dict(exclude_unset=True) == {
        "type": "client_finished",
        "reason": {"type": "errored"},
        "detail": "boom",
    }
    status = TypeAdapter(SessionStatus).validate_python(
        {
            "type": "failed",
            "category": "user",
            "reason": {"type": "training_run", "training_run_id": "r"},
            "message": "diverged",
        }
    )
    assert isinstance(status, SessionFailed)
    assert isinstance(status.reason, SessionFailedTrainingRunReason)
    with pytest.raises(ValidationError) as info:
        ClientSessionFinished.model_validate({"reason": {"type": "crashed"}})
    assert _locs(info.value) == ["reason"]
    with pytest.raises(ValidationError) as info:
        ClientFinishedSessionStatusQuery.model_validate({"reasons": []})
    assert _locs(info.value) == ["reasons"]


def test_save_weights_external_models() -> None:
    from tinkex_types import (
        SaveWeightsExternalRequest,
        SaveWeightsExternalResponse,
        SaveWeightsExternalResponseInternal,
    )

    req = SaveWeightsExternalRequest(model_id="m", path="export-1", seq_id=3)
    assert req.to_json_dict() == {
        "model_id": "m",
        "path": "export-1",
        "seq_id": 3,
        "type": "save_weights_external",
    }
    with pytest.raises(ValidationError) as info:
        SaveWeightsExternalRequest.model_validate({"model_id": "m", "path": "p", "seq_id": 1.5})
    assert _locs(info.value) == ["seq_id"]
    resp = SaveWeightsExternalResponse.model_validate(
        {"path": "tinker://r/external_weights/e", "size_bytes": 10, "type": "save_weights_external"}
    )
    assert resp.size_bytes == 10
    assert SaveWeightsExternalResponseInternal.model_validate({}).path is None
