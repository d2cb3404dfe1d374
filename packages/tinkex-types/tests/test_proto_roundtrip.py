"""Round trips through the protobuf codec, the codec registry, the generated code, and the
JSON of the 0.16.1 generation staying exactly as it was."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import descriptor_pool
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import tinkex_types
from tinkex_types import (
    Datum,
    EncodedTextChunk,
    ForwardBackwardInput,
    ForwardBackwardOutput,
    ForwardBackwardRequest,
    ForwardRequest,
    ImageChunk,
    ImageDimensions,
    ModelInput,
    PromptAltTokens,
    ProvenanceSpan,
    SampledSequence,
    SampleResponse,
    TensorData,
    codec_for,
)
from tinkex_types.proto import (
    MASK_LOGPROB,
    ProtobufCodec,
    decode_forward_backward_request,
    encode_forward_backward_request,
    forward_backward_output_to_proto,
    tinker_public_pb2,
)

CODEC = ProtobufCodec()
PROTO_FILE = Path(tinker_public_pb2.__file__).with_name("tinker_public.proto")


def _canon(model: BaseModel) -> str:
    """JSON with sorted keys: equality that holds for NaN and ignores dict order."""
    return json.dumps(json.loads(model.model_dump_json()), sort_keys=True)


# -- strategies ------------------------------------------------------------------------------

f32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
#: Loss inputs (Datum.loss_fn_inputs) must be finite: Datum refuses NaN and infinity.
f32_finite = st.floats(width=32, allow_nan=False, allow_infinity=False)
i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
token = st.integers(min_value=0, max_value=2**31 - 1)


@st.composite
def tensors(draw: st.DrawFn, dtype: str | None = None, finite: bool = False) -> TensorData:
    kind = dtype or draw(st.sampled_from(["float32", "int64"]))
    rows = draw(st.integers(min_value=0, max_value=6))
    cols = draw(st.one_of(st.none(), st.integers(min_value=1, max_value=3)))
    count = rows * (cols or 1)
    floats = f32_finite if finite else f32
    values = draw(st.lists(floats if kind == "float32" else i64, min_size=count, max_size=count))
    shape = [rows] if cols is None else [rows, cols]
    return TensorData(data=values, dtype=kind, shape=shape)  # type: ignore[arg-type]


@st.composite
def chunks(draw: st.DrawFn) -> Any:
    if draw(st.integers(min_value=0, max_value=4)):
        return EncodedTextChunk(tokens=draw(st.lists(token, max_size=8)))
    dims = draw(st.one_of(st.none(), st.tuples(st.integers(0, 4096), st.integers(0, 4096))))
    return ImageChunk(
        data=draw(st.binary(max_size=16)),
        format=draw(st.sampled_from(["png", "jpeg"])),
        expected_tokens=draw(st.one_of(st.none(), st.integers(0, 100))),
        override_dimensions=None
        if dims is None
        else ImageDimensions(width=dims[0], height=dims[1]),
    )


spans = st.builds(
    ProvenanceSpan,
    source=st.sampled_from(["prompt", "sampled"]),
    sequence_id=st.text(min_size=1, max_size=5),
    offset=st.integers(0, 2**40),
    length=st.integers(0, 2**40),
)


@st.composite
def datums(draw: st.DrawFn) -> Datum:
    names = draw(st.lists(st.sampled_from(["target_tokens", "weights", "advantages", "x"]),
                          unique=True, max_size=3))  # fmt: skip
    with_spans = draw(st.booleans())
    return Datum(
        model_input=ModelInput(chunks=draw(st.lists(chunks(), max_size=3))),
        loss_fn_inputs={n: draw(tensors(finite=True)) for n in names},
        model_input_spans=draw(st.lists(spans, min_size=1, max_size=2)) if with_spans else None,
        loss_fn_input_spans=draw(st.lists(spans, min_size=1, max_size=2)) if with_spans else None,
    )


config_numbers = st.dictionaries(
    st.text(max_size=4), st.floats(allow_nan=False, allow_infinity=False), max_size=2
)


@st.composite
def requests(draw: st.DrawFn) -> ForwardBackwardRequest:
    numbers = draw(config_numbers)
    texts = draw(st.dictionaries(st.text(min_size=5, max_size=6), st.text(max_size=4), max_size=2))
    return ForwardBackwardRequest(
        forward_backward_input=ForwardBackwardInput(
            data=draw(st.lists(datums(), max_size=3)),
            loss_fn=draw(
                st.sampled_from(["cross_entropy", "importance_sampling", "ppo", "cispo", "dro"])
            ),
            loss_fn_config=numbers or None,
            loss_fn_config_v2=texts or None,
        ),
        model_id=draw(st.text(max_size=12)),
        seq_id=draw(st.integers(min_value=0, max_value=2**31 - 1)),
        forward_only=draw(st.sampled_from([None, True])),
    )


@st.composite
def outputs(draw: st.DrawFn) -> ForwardBackwardOutput:
    names = draw(st.lists(st.sampled_from(["logprobs", "elementwise_loss", "ids"]),
                          unique=True, max_size=3))  # fmt: skip
    count = draw(st.integers(min_value=0, max_value=4))
    return ForwardBackwardOutput(
        loss_fn_outputs=[{n: draw(tensors()) for n in names} for _ in range(count)],
        metrics=draw(st.dictionaries(st.text(max_size=8), st.floats(allow_nan=False), max_size=3)),
    )


topk_row = st.one_of(
    st.none(),
    st.lists(
        st.tuples(token, st.floats(width=32, min_value=-1e4, max_value=0)),
        min_size=1,
        max_size=3,
    ),
)


@st.composite
def sample_responses(draw: st.DrawFn) -> SampleResponse:
    sequences = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        tokens = draw(st.lists(token, min_size=1, max_size=6))
        logprobs = draw(st.one_of(st.none(), st.lists(f32, min_size=len(tokens),
                                                     max_size=len(tokens))))  # fmt: skip
        topk = draw(st.one_of(st.none(), st.lists(topk_row, min_size=len(tokens),
                                                 max_size=len(tokens))))  # fmt: skip
        if topk is not None and not any(topk):
            topk = None  # all-empty top-k is "not requested" on the wire
        sequences.append(
            SampledSequence(
                stop_reason=draw(st.sampled_from(["stop", "length"])),
                tokens=tokens,
                logprobs=logprobs,
                topk_logprobs=topk,
            )
        )
    prompt = draw(st.integers(min_value=1, max_value=6))
    prompt_logprobs = draw(st.one_of(st.none(), st.lists(
        st.one_of(st.none(), st.floats(width=32, allow_nan=False)), min_size=prompt,
        max_size=prompt)))  # fmt: skip
    topk_prompt = draw(st.one_of(st.none(), st.lists(topk_row, min_size=prompt, max_size=prompt)))
    if topk_prompt is not None and not any(topk_prompt):
        topk_prompt = None
    alt = draw(st.booleans())
    return SampleResponse(
        sequences=sequences,
        prompt_logprobs=prompt_logprobs,
        topk_prompt_logprobs=topk_prompt,
        prompt_cache_hit_tokens=draw(st.one_of(st.none(), st.integers(1, 2**31 - 1))),
        target_prompt_logprobs=draw(st.one_of(st.none(), tensors("float32"))),
        prompt_alt_tokens=PromptAltTokens(
            tokens=TensorData(data=[1, 2], dtype="int64", shape=[1, 2]),
            logprobs=TensorData(data=[-0.5, -1.0], dtype="float32", shape=[1, 2]),
        )
        if alt
        else None,
    )


# -- round trips -----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(request=requests())
def test_requests_round_trip(request: ForwardBackwardRequest) -> None:
    decoded = CODEC.decode(ForwardBackwardRequest, CODEC.encode(request))
    assert _canon(decoded) == _canon(request)


@settings(max_examples=150, deadline=None)
@given(output=outputs())
def test_outputs_round_trip(output: ForwardBackwardOutput) -> None:
    decoded = CODEC.decode(ForwardBackwardOutput, CODEC.encode(output))
    assert _canon(decoded) == _canon(output)


@settings(max_examples=150, deadline=None)
@given(response=sample_responses())
def test_sample_responses_round_trip(response: SampleResponse) -> None:
    decoded = CODEC.decode(SampleResponse, CODEC.encode(response))
    assert _canon(decoded) == _canon(response)


@settings(max_examples=50, deadline=None)
@given(datum=datums(), tensor=tensors())
def test_sub_messages_round_trip(datum: Datum, tensor: TensorData) -> None:
    assert _canon(CODEC.decode(Datum, CODEC.encode(datum))) == _canon(datum)
    assert _canon(CODEC.decode(TensorData, CODEC.encode(tensor))) == _canon(tensor)


def test_float32_bits_survive_including_nan_payloads() -> None:
    bits = np.array([0x7FC00001, 0xFFC12345, 0x7F800000, 0x00000001, 0x80000000], "<u4")
    tensor = TensorData.from_numpy(bits.view("<f4"))
    decoded = CODEC.decode(TensorData, CODEC.encode(tensor))
    assert decoded.to_numpy().view("<u4").tolist() == bits.tolist()


def test_forward_requests_are_forward_only_forward_backward_messages() -> None:
    batch = ForwardBackwardInput(
        data=[Datum(model_input=ModelInput.from_ints([1, 2]), loss_fn_inputs={})],
        loss_fn="cross_entropy",
    )
    body = CODEC.encode(ForwardRequest(forward_input=batch, model_id="m:train:0", seq_id=9))
    as_fb = decode_forward_backward_request(body)
    assert as_fb.forward_only is True
    assert as_fb.seq_id == 9
    forward = CODEC.decode(ForwardRequest, body)
    assert forward.forward_input.data[0].model_input.to_ints() == [1, 2]
    fb = ForwardBackwardRequest(forward_backward_input=batch, model_id="m:train:0", seq_id=9)
    assert decode_forward_backward_request(encode_forward_backward_request(fb)).forward_only is None
    assert decode_forward_backward_request(
        encode_forward_backward_request(fb, forward_only=True)
    ).forward_only


def test_config_numbers_go_to_both_maps_and_text_to_v2_only() -> None:
    batch = ForwardBackwardInput(
        data=[],
        loss_fn="ppo",
        loss_fn_config={"clip_low_threshold": 0.8},
        loss_fn_config_v2={"mode": "token", "kl": 0.5},
    )
    body = CODEC.encode(ForwardBackwardRequest(forward_backward_input=batch, model_id="m"))
    msg = tinker_public_pb2.ForwardBackwardRequest()
    msg.ParseFromString(body)
    assert dict(msg.loss_fn_config) == {"clip_low_threshold": 0.8, "kl": 0.5}
    v2 = {
        k: getattr(v, v.WhichOneof("value") or "number") for k, v in msg.loss_fn_config_v2.items()
    }
    assert v2 == {"clip_low_threshold": 0.8, "kl": 0.5, "mode": "token"}
    decoded = decode_forward_backward_request(body).forward_backward_input
    assert decoded.loss_fn_config == {"clip_low_threshold": 0.8, "kl": 0.5}
    assert decoded.loss_fn_config_v2 == {"mode": "token"}
    # v2 wins over v1 when both carry a number (servers prefer v2).
    msg.loss_fn_config_v2["clip_low_threshold"].number = 0.7
    again = decode_forward_backward_request(msg.SerializeToString()).forward_backward_input
    assert again.loss_fn_config == {"clip_low_threshold": 0.7, "kl": 0.5}


def test_outputs_with_different_trailing_shapes_use_one_record_each() -> None:
    out = ForwardBackwardOutput(
        loss_fn_outputs=[
            {"x": TensorData(data=[1, 2], dtype="int64", shape=[1, 2])},
            {"x": TensorData(data=[3, 4], dtype="int64", shape=[1, 2])},
            {"x": TensorData(data=[5, 6, 7], dtype="int64", shape=[1, 3])},
        ]
    )
    msg = forward_backward_output_to_proto(out)
    assert [r.num_datums for r in msg.loss_fn_outputs] == [2, 1]
    assert [list(r.fields["x"].trailing_shape) for r in msg.loss_fn_outputs] == [[2], [3]]
    assert _canon(CODEC.decode(ForwardBackwardOutput, msg.SerializeToString())) == _canon(out)


def test_top_k_rows_are_padded_with_the_mask() -> None:
    response = SampleResponse(
        sequences=[],
        topk_prompt_logprobs=[None, [(4, -0.5)], [(5, -0.25), (6, -1.0)]],
    )
    msg = tinker_public_pb2.SampleResponse()
    msg.ParseFromString(CODEC.encode(response))
    topk = msg.topk_prompt_logprobs
    assert (topk.k, topk.length) == (2, 3)
    assert np.frombuffer(topk.token_ids, "<i4").tolist() == [0, 0, 4, 0, 5, 6]
    assert np.frombuffer(topk.logprobs, "<f4").tolist() == [MASK_LOGPROB] * 2 + [
        -0.5,
        MASK_LOGPROB,
        -0.25,
        -1.0,
    ]
    assert math.isnan(np.frombuffer(_prompt_logprobs_body([None, -1.0]), "<f4")[0])


def _prompt_logprobs_body(values: list[float | None]) -> bytes:
    msg = tinker_public_pb2.SampleResponse()
    msg.ParseFromString(CODEC.encode(SampleResponse(sequences=[], prompt_logprobs=values)))
    return msg.prompt_logprobs


def test_a_large_batch_decodes_through_numpy() -> None:
    rng = np.random.default_rng(0)
    data = [
        Datum(
            model_input=ModelInput.from_ints(rng.integers(0, 32000, 2048).tolist()),
            loss_fn_inputs={
                "target_tokens": TensorData.from_numpy(rng.integers(0, 32000, 2048)),
                "weights": TensorData.from_numpy(rng.random(2048, dtype=np.float32)),
            },
        )
        for _ in range(64)
    ]
    request = ForwardBackwardRequest(
        forward_backward_input=ForwardBackwardInput(data=data, loss_fn="cross_entropy"),
        model_id="m:train:0",
        seq_id=1,
    )
    body = CODEC.encode(request)
    assert len(body) < 64 * 2048 * (4 + 8 + 4) + 64 * 200  # raw arrays, no per-value framing
    decoded = CODEC.decode(ForwardBackwardRequest, body)
    assert decoded.forward_backward_input.data[63].loss_fn_inputs["weights"].data == (
        data[63].loss_fn_inputs["weights"].data
    )
    assert decoded.forward_backward_input.data[5].model_input.to_ints() == (
        data[5].model_input.to_ints()
    )


# -- JSON of the 0.16.1 generation is unchanged ---------------------------------------------


def test_new_fields_never_appear_in_json_when_unset() -> None:
    datum = Datum(
        model_input=ModelInput(chunks=[ImageChunk(data=b"x", format="png")]), loss_fn_inputs={}
    )
    request = ForwardBackwardRequest(
        forward_backward_input=ForwardBackwardInput(data=[datum], loss_fn="cross_entropy"),
        model_id="m",
        seq_id=1,
    )
    assert request.to_json_dict() == {
        "forward_backward_input": {
            "data": [
                {
                    "model_input": {"chunks": [{"data": "eA==", "format": "png"}]},
                    "loss_fn_inputs": {},
                }
            ],
            "loss_fn": "cross_entropy",
            "loss_fn_config": None,
        },
        "model_id": "m",
        "seq_id": 1,
    }
    sample = SampleResponse(
        sequences=[SampledSequence(stop_reason="stop", tokens=[1], logprobs=[-1.0])],
        prompt_logprobs=[None],
    )
    assert sample.to_json_dict() == {
        "sequences": [{"stop_reason": "stop", "tokens": [1], "logprobs": [-1.0]}],
        "prompt_logprobs": [None],
    }


# -- registry, import cost, generated code ---------------------------------------------------


def test_codec_for_protobuf_is_the_protobuf_codec() -> None:
    codec = codec_for("Application/X-Protobuf; charset=binary")
    assert isinstance(codec, ProtobufCodec)
    assert codec.media_type == "application/x-protobuf"
    carried = {ForwardBackwardRequest, ForwardRequest, ForwardBackwardOutput, SampleResponse}
    assert all(codec.carries(m) for m in carried | {Datum, TensorData})
    assert not codec.carries(tinkex_types.OptimStepRequest)
    assert not codec.carries(tinkex_types.SampleRequest)
    assert "application/x-protobuf" in tinkex_types.registered_codecs()


def test_importing_tinkex_types_does_not_load_protobuf_code() -> None:
    code = (
        "import sys, tinkex_types\n"
        "assert 'tinkex_types.proto' not in sys.modules\n"
        "assert 'numpy' not in sys.modules\n"
        "tinkex_types.codec_for('application/x-protobuf')\n"
        "assert 'tinkex_types.proto' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_generated_code_uses_a_private_pool() -> None:
    # The official tinker client registers the same names in the default pool.
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindMessageTypeByName("tinker_public.ForwardBackwardRequest")
    assert tinker_public_pb2.DESCRIPTOR.pool is tinker_public_pb2.POOL


def test_the_pure_python_protobuf_runtime_keeps_the_pool_private_too() -> None:
    code = (
        "from google.protobuf import descriptor_pool\n"
        "from google.protobuf.internal import api_implementation\n"
        "from tinkex_types import SampleResponse, SampledSequence\n"
        "from tinkex_types.proto import decode_sample_response, encode_sample_response\n"
        "assert api_implementation.Type() == 'python'\n"
        "r = SampleResponse(sequences=[SampledSequence(stop_reason='stop', tokens=[1, 2])])\n"
        "assert decode_sample_response(encode_sample_response(r)) == r\n"
        "try:\n"
        "    descriptor_pool.Default().FindMessageTypeByName('tinker_public.SampleResponse')\n"
        "except KeyError:\n"
        "    print('private')\n"
    )
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    )
    assert run.stdout.strip() == "private"


_FIELD = re.compile(r"^\s*(optional |repeated )?(map<\w+, ?\w+>|\w+) (\w+) = (\d+);", re.MULTILINE)


def _proto_text_fields() -> dict[str, dict[str, tuple[int, str]]]:
    """message -> field -> (number, declared type), read from the .proto text."""
    text = re.sub(r"//[^\n]*", "", PROTO_FILE.read_text())
    out: dict[str, dict[str, tuple[int, str]]] = {}
    for match in re.finditer(r"^message (\w+) \{(.*?)^\}", text, re.MULTILINE | re.DOTALL):
        fields = {m[3]: (int(m[4]), m[2].replace(" ", "")) for m in _FIELD.finditer(match[2])}
        out[match[1]] = fields
    return out


_SCALARS = {1: "double", 3: "int64", 5: "int32", 8: "bool", 9: "string", 12: "bytes", 13: "uint32"}


def test_generated_code_matches_the_proto_file() -> None:
    declared = _proto_text_fields()
    generated = {m.name: m for m in tinker_public_pb2.DESCRIPTOR.message_types_by_name.values()}
    assert set(declared) == set(generated)
    for name, fields in declared.items():
        message = generated[name]
        assert {f.name: f.number for f in message.fields} == {
            f: number for f, (number, _) in fields.items()
        }, name
        for field in message.fields:
            kind = fields[field.name][1]
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                key, value = field.message_type.fields
                value_name = value.message_type.name if value.message_type else _SCALARS[value.type]
                assert kind == f"map<{_SCALARS[key.type]},{value_name}>", (name, field.name)
            elif field.message_type is not None:
                assert kind == field.message_type.name, (name, field.name)
            elif field.enum_type is not None:
                assert kind == field.enum_type.name, (name, field.name)
            else:
                assert kind == _SCALARS[field.type], (name, field.name)
