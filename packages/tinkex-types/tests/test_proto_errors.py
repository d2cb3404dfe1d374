"""Bad protobuf input: always a WireDecodeError naming the field, never another exception;
what the messages cannot hold is refused on encoding with a TinkexValidationError."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tinkex_types import (
    Datum,
    ForwardBackwardInput,
    ForwardBackwardOutput,
    ForwardBackwardRequest,
    ImageAssetPointerChunk,
    ModelInput,
    SampleResponse,
    TensorData,
    TinkexValidationError,
    WireDecodeError,
    decode_content,
    encode_content,
)
from tinkex_types.proto import ProtobufCodec
from tinkex_types.proto import tinker_public_pb2 as pb

CODEC = ProtobufCodec()
DATA = Path(__file__).parent / "data" / "proto"


def _request_msg() -> pb.ForwardBackwardRequest:
    msg = pb.ForwardBackwardRequest(model_id="s:train:0", seq_id=1, loss_fn="cross_entropy")
    datum = msg.data.add()
    datum.model_input.add().encoded_text.tokens = np.array([1, 2, 3], "<i4").tobytes()
    tensor = datum.loss_fn_inputs["target_tokens"]
    tensor.dense = np.array([2, 3, 4], "<i8").tobytes()
    tensor.dtype = pb.DTYPE_INT64
    tensor.shape.append(3)
    return msg


def _decode_error(model: type[BaseModel], msg: object) -> WireDecodeError:
    body = msg if isinstance(msg, bytes) else msg.SerializeToString()  # type: ignore[attr-defined]
    with pytest.raises(WireDecodeError) as info:
        CODEC.decode(model, body)
    return info.value


def test_the_reference_request_decodes() -> None:
    request = CODEC.decode(ForwardBackwardRequest, _request_msg().SerializeToString())
    datum = request.forward_backward_input.data[0]
    assert datum.model_input.to_ints() == [1, 2, 3]
    assert datum.loss_fn_inputs["target_tokens"].data == [2, 3, 4]


# -- requests: each mutation of a valid message names its field ----------------------------


def _tensor(msg: pb.ForwardBackwardRequest) -> pb.Tensor:
    return msg.data[0].loss_fn_inputs["target_tokens"]


def _set_dtype(value: int) -> Callable[[pb.ForwardBackwardRequest], None]:
    def mutate(msg: pb.ForwardBackwardRequest) -> None:
        _tensor(msg).dtype = value  # type: ignore[assignment]

    return mutate


def _ragged(msg: pb.ForwardBackwardRequest) -> None:
    _tensor(msg).dense += b"\x00"


def _wrong_shape(msg: pb.ForwardBackwardRequest) -> None:
    _tensor(msg).shape[:] = [2, 2]


def _negative_shape(msg: pb.ForwardBackwardRequest) -> None:
    _tensor(msg).shape[:] = [-3]


def _ragged_tokens(msg: pb.ForwardBackwardRequest) -> None:
    msg.data[0].model_input[0].encoded_text.tokens = b"\x01\x02\x03"


def _dmel(msg: pb.ForwardBackwardRequest) -> None:
    msg.data[0].model_input.add().dmel.dmel = b"audio"


def _empty_chunk(msg: pb.ForwardBackwardRequest) -> None:
    msg.data[0].model_input.add()


def _bad_image_format(msg: pb.ForwardBackwardRequest) -> None:
    image = msg.data[0].model_input.add().image
    image.data = b"GIF89a"
    image.format = "gif"


def _negative_expected_tokens(msg: pb.ForwardBackwardRequest) -> None:
    image = msg.data[0].model_input.add().image
    image.data = b"\x89PNG"
    image.format = "png"
    image.expected_tokens = -1


def _unknown_loss(msg: pb.ForwardBackwardRequest) -> None:
    msg.loss_fn = "no_such_loss"


def _empty_config_value(msg: pb.ForwardBackwardRequest) -> None:
    msg.loss_fn_config_v2["clip"].SetInParent()


def _half_provenance(msg: pb.ForwardBackwardRequest) -> None:
    span = msg.data[0].model_input_spans.add().prompt_tokens
    span.sequence_id = "s"
    span.length = 3


def _empty_sequence_id(msg: pb.ForwardBackwardRequest) -> None:
    for spans in (msg.data[0].model_input_spans, msg.data[0].loss_fn_input_spans):
        spans.add().sampled_tokens.length = 3


def _sparse(
    crow: list[int], col: list[int], values: list[int], shape: list[int]
) -> Callable[[pb.ForwardBackwardRequest], None]:
    def mutate(msg: pb.ForwardBackwardRequest) -> None:
        tensor = _tensor(msg)
        tensor.shape[:] = shape
        tensor.sparse_csr.values = np.array(values, "<i8").tobytes()
        tensor.sparse_csr.crow_indices = np.array(crow, "<i8").tobytes()
        tensor.sparse_csr.col_indices = np.array(col, "<i8").tobytes()

    return mutate


def _unknown_field(msg: pb.ForwardBackwardRequest) -> None:
    # Field 99 of Datum, as a newer client might send: varint 7.
    datum = pb.Datum()
    datum.ParseFromString(msg.data[0].SerializeToString() + b"\x98\x06\x07")
    msg.data[0].CopyFrom(datum)


REQUEST_MUTATIONS = [
    ("dtype_unknown", _set_dtype(9), "data[0].loss_fn_inputs.target_tokens.dtype"),
    ("dtype_unspecified", _set_dtype(0), "data[0].loss_fn_inputs.target_tokens.dtype"),
    ("ragged_buffer", _ragged, "data[0].loss_fn_inputs.target_tokens.dense"),
    ("shape_mismatch", _wrong_shape, "data[0].loss_fn_inputs.target_tokens.shape"),
    ("negative_shape", _negative_shape, "data[0].loss_fn_inputs.target_tokens.shape"),
    ("ragged_tokens", _ragged_tokens, "data[0].model_input[0].encoded_text.tokens"),
    ("dmel_chunk", _dmel, "data[0].model_input[1].dmel"),
    ("empty_chunk", _empty_chunk, "data[0].model_input[1]"),
    ("image_format", _bad_image_format, "data[0].model_input[1].image.format"),
    ("image_tokens", _negative_expected_tokens, "data[0].model_input[1].image.expected_tokens"),
    ("unknown_loss", _unknown_loss, "loss_fn"),
    ("empty_config_value", _empty_config_value, "loss_fn_config_v2.clip"),
    ("half_provenance", _half_provenance, "data[0].model_input_spans"),
    ("empty_sequence_id", _empty_sequence_id, "data[0].model_input_spans[0].sampled_tokens"),
    ("csr_1d", _sparse([0, 1], [0], [5], [3]), "data[0].loss_fn_inputs.target_tokens.shape"),
    (
        "csr_rows",
        _sparse([0, 1], [0], [5], [2, 2]),
        "data[0].loss_fn_inputs.target_tokens.sparse_csr.crow_indices",
    ),
    (
        "csr_column",
        _sparse([0, 1, 1], [7], [5], [2, 2]),
        "data[0].loss_fn_inputs.target_tokens.sparse_csr.col_indices",
    ),
    ("unknown_field", _unknown_field, "data[0]"),
]


@pytest.mark.parametrize(
    ("mutate", "field"), [pytest.param(m, f, id=i) for i, m, f in REQUEST_MUTATIONS]
)
def test_bad_request_fields_are_named(
    mutate: Callable[[pb.ForwardBackwardRequest], None], field: str
) -> None:
    msg = _request_msg()
    mutate(msg)
    error = _decode_error(ForwardBackwardRequest, msg)
    assert error.field.startswith(field), str(error)
    assert str(error).startswith(field)


@pytest.mark.parametrize(
    "body",
    [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x1a\x03\x0a\x01", b"\x0a\x02\xc3\x28", b"\x08"],
    ids=["garbage", "truncated_string", "truncated_datum", "bad_utf8", "truncated_varint"],
)
def test_malformed_bytes_are_refused(body: bytes) -> None:
    for model in (ForwardBackwardRequest, ForwardBackwardOutput, SampleResponse):
        error = _decode_error(model, body)
        assert error.field == "body"
        assert "not a valid protobuf" in error.problem


# -- results -------------------------------------------------------------------------------


def _output_msg() -> pb.ForwardBackwardOutput:
    msg = pb.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord")
    rec = msg.loss_fn_outputs.add(num_datums=2)
    bt = rec.fields["logprobs"]
    bt.data = np.array([-1, -2, -3], "<f4").tobytes()
    bt.offsets = np.array([0, 4, 12], "<i8").tobytes()
    bt.dtype = pb.DTYPE_FLOAT32
    return msg


def test_the_reference_output_decodes() -> None:
    out = CODEC.decode(ForwardBackwardOutput, _output_msg().SerializeToString())
    assert [d["logprobs"].data for d in out.loss_fn_outputs] == [[-1.0], [-2.0, -3.0]]
    assert [d["logprobs"].shape for d in out.loss_fn_outputs] == [[1], [2]]


def _offsets(values: list[int]) -> Callable[[pb.ForwardBackwardOutput], None]:
    def mutate(msg: pb.ForwardBackwardOutput) -> None:
        msg.loss_fn_outputs[0].fields["logprobs"].offsets = np.array(values, "<i8").tobytes()

    return mutate


def _num_datums(msg: pb.ForwardBackwardOutput) -> None:
    msg.loss_fn_outputs[0].num_datums = 3


def _negative_datums(msg: pb.ForwardBackwardOutput) -> None:
    msg.loss_fn_outputs[0].num_datums = -1


def _trailing(msg: pb.ForwardBackwardOutput) -> None:
    msg.loss_fn_outputs[0].fields["logprobs"].trailing_shape.append(2)


def _bt_dtype(msg: pb.ForwardBackwardOutput) -> None:
    msg.loss_fn_outputs[0].fields["logprobs"].dtype = 17  # type: ignore[assignment]


def _field_names(msg: pb.ForwardBackwardOutput) -> None:
    rec = msg.loss_fn_outputs.add(num_datums=1)
    rec.fields["other"].CopyFrom(msg.loss_fn_outputs[0].fields["logprobs"])


OUTPUT_MUTATIONS = [
    ("offsets_past_end", _offsets([0, 4, 16]), "loss_fn_outputs[0].fields.logprobs.offsets"),
    ("offsets_decreasing", _offsets([0, 8, 4]), "loss_fn_outputs[0].fields.logprobs.offsets"),
    ("offsets_unaligned", _offsets([0, 3, 12]), "loss_fn_outputs[0].fields.logprobs.offsets"),
    ("offsets_negative", _offsets([-4, 4, 12]), "loss_fn_outputs[0].fields.logprobs.offsets"),
    ("num_datums", _num_datums, "loss_fn_outputs[0].fields.logprobs.offsets"),
    ("negative_num_datums", _negative_datums, "loss_fn_outputs[0].num_datums"),
    ("trailing_shape", _trailing, "loss_fn_outputs[0].fields.logprobs.trailing_shape"),
    ("dtype", _bt_dtype, "loss_fn_outputs[0].fields.logprobs.dtype"),
    ("field_names", _field_names, "loss_fn_outputs[1].fields"),
]


@pytest.mark.parametrize(
    ("mutate", "field"), [pytest.param(m, f, id=i) for i, m, f in OUTPUT_MUTATIONS]
)
def test_inconsistent_outputs_are_named(
    mutate: Callable[[pb.ForwardBackwardOutput], None], field: str
) -> None:
    msg = _output_msg()
    mutate(msg)
    assert _decode_error(ForwardBackwardOutput, msg).field == field


def _sample_msg() -> pb.SampleResponse:
    msg = pb.SampleResponse()
    seq = msg.sequences.add(stop_reason=pb.STOP_REASON_STOP)
    seq.tokens = np.array([1, 2], "<i4").tobytes()
    return msg


def test_bad_sample_fields_are_named() -> None:
    msg = _sample_msg()
    msg.sequences[0].stop_reason = 5  # type: ignore[assignment]
    assert _decode_error(SampleResponse, msg).field == "sequences[0].stop_reason"
    msg = _sample_msg()
    msg.sequences[0].logprobs = np.array([-1.0], "<f4").tobytes()
    assert _decode_error(SampleResponse, msg).field == "sequences[0].logprobs"
    msg = _sample_msg()
    msg.prompt_logprobs = b"\x00\x00"
    assert _decode_error(SampleResponse, msg).field == "prompt_logprobs"
    msg = _sample_msg()
    topk = msg.sequences[0].topk_sampled_logprobs
    topk.k, topk.length = 2, 2
    topk.token_ids = np.zeros(3, "<i4").tobytes()
    topk.logprobs = np.zeros(4, "<f4").tobytes()
    assert (
        _decode_error(SampleResponse, msg).field == "sequences[0].topk_sampled_logprobs.token_ids"
    )
    msg = _sample_msg()
    msg.target_prompt_logprobs.dense = np.zeros(2, "<f4").tobytes()
    assert _decode_error(SampleResponse, msg).field == "target_prompt_logprobs.dtype"


def test_models_without_a_protobuf_form_are_refused() -> None:
    with pytest.raises(WireDecodeError) as info:
        CODEC.decode(Datum.__base__, b"")  # type: ignore[arg-type]
    assert info.value.field == "Content-Type"
    with pytest.raises(TypeError, match="send it as JSON"):
        CODEC.encode(ModelInput.from_ints([1]))


# -- fuzzing: random and corrupted bytes never raise anything but WireDecodeError ----------


def _golden_bodies() -> list[bytes]:
    return [decode_content(p.read_bytes(), "zstd" if "zstd" in p.name else None)
            for p in sorted(DATA.glob("*.bin"))]  # fmt: skip


GOLDEN = _golden_bodies()


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=64))
def test_random_bytes_decode_or_fail_cleanly(body: bytes) -> None:
    for model in (ForwardBackwardRequest, ForwardBackwardOutput, SampleResponse):
        with contextlib.suppress(WireDecodeError):
            CODEC.decode(model, body)


@settings(max_examples=300, deadline=None)
@given(
    which=st.integers(min_value=0, max_value=len(GOLDEN) - 1),
    at=st.integers(min_value=0, max_value=10_000),
    byte=st.integers(min_value=0, max_value=255),
    cut=st.booleans(),
)
def test_corrupted_official_bytes_decode_or_fail_cleanly(
    which: int, at: int, byte: int, cut: bool
) -> None:
    body = bytearray(GOLDEN[which])
    at %= len(body)
    if cut:
        del body[at:]
    else:
        body[at] = byte
    for model in (ForwardBackwardRequest, ForwardBackwardOutput, SampleResponse):
        with contextlib.suppress(WireDecodeError):
            CODEC.decode(model, bytes(body))


# -- zstd ------------------------------------------------------------------------------------


def test_zstd_round_trip_and_refusals() -> None:
    body = _request_msg().SerializeToString()
    packed = encode_content(body, "zstd")
    assert packed != body
    assert decode_content(packed, "ZSTD") == body
    assert encode_content(body, "identity") is body
    with pytest.raises(WireDecodeError) as info:
        decode_content(b"not zstd at all", "zstd")
    assert info.value.field == "body"
    with pytest.raises(TinkexValidationError) as refused:
        encode_content(body, "br")
    assert refused.value.field == "Content-Encoding"


# -- encoding refusals ---------------------------------------------------------------------


def _request(datum: Datum) -> ForwardBackwardRequest:
    return ForwardBackwardRequest(
        forward_backward_input=ForwardBackwardInput(data=[datum], loss_fn="cross_entropy"),
        model_id="s:train:0",
        seq_id=1,
    )


def test_image_asset_pointers_cannot_be_encoded() -> None:
    pointer = ImageAssetPointerChunk(location="s3://b/cat.png", format="png", expected_tokens=4)
    datum = Datum(model_input=ModelInput(chunks=[pointer]), loss_fn_inputs={})
    with pytest.raises(TinkexValidationError) as info:
        CODEC.encode(_request(datum))
    assert info.value.field == "forward_backward_input.data[0].model_input.chunks[0]"
    assert "image_asset_pointer" in info.value.problem
    assert info.value.fix is not None
    assert "ImageChunk" in info.value.fix


def test_token_ids_beyond_int32_cannot_be_encoded() -> None:
    datum = Datum(model_input=ModelInput.from_ints([1, 2**31]), loss_fn_inputs={})
    with pytest.raises(TinkexValidationError) as info:
        CODEC.encode(_request(datum))
    assert info.value.field == "forward_backward_input.data[0].model_input.chunks[0].tokens"


def test_outputs_with_different_fields_cannot_be_encoded() -> None:
    one = TensorData(data=[1.0], dtype="float32")
    out = ForwardBackwardOutput(loss_fn_outputs=[{"a": one}, {"b": one}])
    with pytest.raises(TinkexValidationError) as info:
        CODEC.encode(out)
    assert info.value.field == "loss_fn_outputs[1]"
