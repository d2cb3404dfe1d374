"""Tensors and text chunks built from numpy arrays hold the array and build their list only
when it is read (``tinkex_types._lazy``); every reader sees what a list-built one shows,
and the wire bytes are those of the list-built one."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest
import torch

from tinkex_types import (
    PROTOBUF_MEDIA_TYPE,
    Datum,
    EncodedTextChunk,
    ForwardBackwardInput,
    ForwardBackwardRequest,
    ImageChunk,
    ModelInput,
    PromptProvenanceSpan,
    SampledProvenanceSpan,
    TensorData,
    TinkexValidationError,
    codec_for,
)
from tinkex_types._lazy import ArrayList
from tinkex_types.proto import tinker_public_pb2 as pb
from tinkex_types.proto._arrays import tensor_array
from tinkex_types.proto._request import datum_to_proto, forward_backward_request_to_proto

CODEC = codec_for(PROTOBUF_MEDIA_TYPE)
RNG = np.random.default_rng(7)


def _is_lazy(model: Any, field: str) -> bool:
    return field not in model.__dict__


def _tokens(n: int = 9) -> np.ndarray[Any, Any]:
    return RNG.integers(0, 60_000, n)


def _request(*data: Datum) -> ForwardBackwardRequest:
    batch = ForwardBackwardInput(data=list(data), loss_fn="cross_entropy")
    return ForwardBackwardRequest(forward_backward_input=batch, model_id="m", seq_id=4)


def _datum(tokens: Any, targets: Any, weights: Any) -> Datum:
    return Datum(
        model_input=ModelInput.from_ints(tokens),
        loss_fn_inputs={"target_tokens": targets, "weights": weights},
    )


def test_from_numpy_holds_the_array_until_data_is_read() -> None:
    td = TensorData.from_numpy(np.arange(6, dtype=np.int32).reshape(2, 3))
    assert _is_lazy(td, "data")
    assert (td.size, td.effective_shape, td.shape, td.dtype) == (6, [2, 3], [2, 3], "int64")
    assert _is_lazy(td, "data")  # none of those built the list
    assert td.data == [0, 1, 2, 3, 4, 5]
    assert type(td.data) is ArrayList
    assert td.data.array.dtype == np.dtype("<i8")
    assert list(td.__dict__) == [
        "data",
        "dtype",
        "shape",
        "sparse_crow_indices",
        "sparse_col_indices",
    ]


def test_the_held_array_is_private_and_read_only() -> None:
    source = np.array([1.5, 2.5], dtype=np.float32)
    td = TensorData.from_numpy(source)
    source[0] = 9.0  # the caller's array is not the one held
    arr = tensor_array(td, "x")
    assert arr.tolist() == [1.5, 2.5]
    with pytest.raises(ValueError, match="read-only"):
        arr[0] = 1.0
    out = td.to_numpy()
    out[0] = 7.0  # a copy
    assert td.data == [1.5, 2.5]


@pytest.mark.parametrize("reader", ["eq", "pickle", "copy", "deepcopy", "iter", "repr", "dump"])
def test_whole_model_readers_see_the_list(reader: str) -> None:
    values = [0.25, -1.0, 3.0]
    lazy = TensorData.from_numpy(np.array(values, dtype=np.float64))
    plain = TensorData.from_list(values, "float32")
    plain = plain.model_copy(update={"shape": [3]})
    assert _is_lazy(lazy, "data")
    if reader == "eq":
        assert lazy == plain
        assert plain == lazy
        assert lazy != TensorData.from_list([0.25, -1.0, 4.0], "float32")
    elif reader == "pickle":
        assert pickle.loads(pickle.dumps(lazy)) == plain
    elif reader == "copy":
        assert copy.copy(lazy).data == values
    elif reader == "deepcopy":
        assert copy.deepcopy(lazy).data == values
    elif reader == "iter":
        assert dict(lazy)["data"] == values
    elif reader == "repr":
        assert repr(lazy) == "TensorData(data=[0.25, -1.0, 3.0], dtype='float32', shape=[3])"
    else:
        assert lazy.model_dump() == plain.model_dump()
        assert lazy.model_dump_json() == plain.model_dump_json()
        assert lazy.to_json_dict(exclude_unset=True) == {
            "data": values,
            "dtype": "float32",
            "shape": [3],
        }
    assert not _is_lazy(lazy, "data")


def test_a_replaced_list_is_the_only_truth() -> None:
    td = TensorData.from_numpy(np.array([1, 2, 3]))
    changed = td.model_copy(update={"data": [7, 8, 9]})
    assert tensor_array(changed, "x").tolist() == [7, 8, 9]
    td.data = [4, 5, 6]
    assert tensor_array(td, "x").tolist() == [4, 5, 6]
    assert CODEC.decode(TensorData, CODEC.encode(td)).data == [4, 5, 6]


def test_text_chunk_from_numpy_counts_without_its_list() -> None:
    model_input = ModelInput.from_ints(np.array([5, 6, 7], dtype=np.int16))
    chunk = model_input.chunks[0]
    assert isinstance(chunk, EncodedTextChunk)
    assert _is_lazy(chunk, "tokens")
    assert model_input.length == 3
    assert _is_lazy(chunk, "tokens")
    assert model_input.to_ints() == [5, 6, 7]
    assert chunk.tokens == [5, 6, 7]
    assert type(chunk.tokens) is ArrayList
    assert model_input == ModelInput.from_ints([5, 6, 7])


def _parsed(body: bytes) -> pb.ForwardBackwardRequest:
    msg = pb.ForwardBackwardRequest()
    msg.ParseFromString(body)
    return msg


@pytest.mark.parametrize("source", ["numpy", "lists"])
def test_protobuf_bodies_are_the_runtime_message(source: str) -> None:
    tokens = _tokens(50)
    weights = RNG.standard_normal(50).astype(np.float32)
    if source == "numpy":
        datum = _datum(tokens, tokens.reshape(25, 2), weights.reshape(25, 2))
    else:
        datum = Datum(
            model_input=ModelInput.from_ints(tokens.tolist()),
            loss_fn_inputs={
                "target_tokens": TensorData.from_list(tokens.reshape(25, 2).tolist(), "int64"),
                "weights": TensorData.from_list(weights.reshape(25, 2).tolist(), "float32"),
            },
        )
    request = _request(datum, datum)
    assert _parsed(CODEC.encode(request)) == forward_backward_request_to_proto(request)
    assert pb.Datum.FromString(CODEC.encode(datum)) == datum_to_proto(datum)


def test_protobuf_writer_handles_every_part() -> None:
    image = ImageChunk(data=b"\x89PNG....", format="png", expected_tokens=3)
    datum = Datum(
        model_input=ModelInput(
            chunks=[EncodedTextChunk(tokens=[]), image, EncodedTextChunk(tokens=[1, 2**31 - 1])]
        ),
        loss_fn_inputs={
            "target_tokens": TensorData.from_torch_sparse(torch.tensor([[0, 4, 0], [5, 0, 0]])),
            "weights": TensorData.from_list([], "float32"),
            "advantages": TensorData(data=[0.5], dtype="float32", shape=[]),
        },
        model_input_spans=[PromptProvenanceSpan(sequence_id="s", offset=1, length=2)],
        loss_fn_input_spans=[SampledProvenanceSpan(sequence_id="s", length=3)],
    )
    assert pb.Datum.FromString(CODEC.encode(datum)) == datum_to_proto(datum)
    request = _request(datum)
    assert _parsed(CODEC.encode(request)) == forward_backward_request_to_proto(request)
    assert CODEC.decode(Datum, CODEC.encode(datum)).model_input == datum.model_input
    dense = torch.zeros(4, 5)
    dense[1, 2], dense[3, 0] = 1.5, -2.0
    sparse = TensorData.from_torch_sparse(dense)
    assert sparse.is_sparse
    kept = Datum.model_construct(
        model_input=ModelInput.from_ints([1]), loss_fn_inputs={"x": sparse}
    )
    assert pb.Datum.FromString(CODEC.encode(kept)) == datum_to_proto(kept)


@pytest.mark.parametrize("tokens", [np.array([1, 2**31]), [1, 2**31], [-(2**31) - 1]])
def test_token_ids_beyond_int32_name_the_chunk(tokens: Any) -> None:
    request = _request(_datum(tokens, [1] * len(tokens), [1.0] * len(tokens)))
    with pytest.raises(TinkexValidationError, match=r"data\[0\]\.model_input\.chunks\[0\]\.tokens"):
        CODEC.encode(request)


def test_int64_values_that_do_not_fit_name_the_tensor() -> None:
    td = TensorData.model_construct(data=[2**64], dtype="int64")
    datum = Datum.model_construct(
        model_input=ModelInput.from_ints([1]), loss_fn_inputs={"target_tokens": td}
    )
    with pytest.raises(TinkexValidationError, match=r"loss_fn_inputs\.target_tokens"):
        CODEC.encode(_request(datum))


def test_datum_fast_construction_equals_validation() -> None:
    tokens = [3, 4, 5]
    inputs = {"target_tokens": [4, 5, 6], "weights": np.array([0.0, 1.0, 1.0])}
    by_keyword = Datum(model_input=ModelInput.from_ints(tokens), loss_fn_inputs=inputs)
    by_position = Datum(ModelInput.from_ints(tokens), inputs)
    validated = Datum.model_validate(
        {"model_input": {"chunks": [{"tokens": tokens}]}, "loss_fn_inputs": inputs}
    )
    assert by_keyword == by_position == validated
    assert by_keyword.model_fields_set == validated.model_fields_set
    assert by_keyword.to_json_dict(exclude_unset=True) == validated.to_json_dict(exclude_unset=True)
    assert list(by_keyword.__dict__) == list(Datum.model_fields)
    with pytest.raises(TypeError, match="multiple values"):
        Datum(ModelInput.from_ints(tokens), model_input=ModelInput.from_ints(tokens))


def test_datum_fast_construction_reports_refused_inputs() -> None:
    inputs = {"target_tokens": [1, 2], "weights": [1.0, float("nan")]}
    where = r"loss_fn_inputs\.weights\n.*data\[1\] is nan"
    with pytest.raises(ValueError, match=where):
        Datum(ModelInput.from_ints([1, 2]), inputs)
    with pytest.raises(ValueError, match=where):
        Datum(model_input=ModelInput.from_ints([1, 2]), loss_fn_inputs=inputs)


def test_float_masks_share_two_floats_and_keep_every_bit() -> None:
    mask = np.tile(np.array([0.0, 1.0, 1.0], dtype=np.float32), 40)
    values = TensorData.from_numpy(mask).data
    assert values == mask.astype(np.float64).tolist()
    assert len({id(v) for v in values}) == 2
    assert all(type(v) is float for v in values)
    signed = mask.copy()
    signed[4] = -0.0  # not a mask value: the sign is kept
    assert str(TensorData.from_numpy(signed).data[4]) == "-0.0"
    halves = np.full(100, 0.5, dtype=np.float32)
    assert TensorData.from_numpy(halves).data == [0.5] * 100


def test_signalling_nans_survive_the_list_without_a_warning() -> None:
    # Warnings are errors here: the float32 -> float64 cast of a signalling NaN raises
    # "invalid value"; its bits are restored, so it must not warn.
    bits = np.array([0x7F800001, 0xFFBFFFFF, 0x7FC00001, 0x3F800000], dtype=np.uint32)
    td = TensorData.from_numpy(bits.view(np.float32))
    again = TensorData.model_validate(td.model_dump()).to_numpy()
    assert again.view(np.uint32).tolist() == bits.tolist()
