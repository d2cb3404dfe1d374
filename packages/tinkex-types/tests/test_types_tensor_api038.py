"""TensorData as SDK 0.38 has it (positional arguments, numpy data, sparse CSR tensors,
``pad_value``), and the bulk checks of large inputs: lists and numpy arrays pass the same
rules, with the same errors naming the element, as element-by-element checking did."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from tinkex_types import (
    PROTOBUF_MEDIA_TYPE,
    Datum,
    ForwardBackwardInput,
    ForwardBackwardRequest,
    ModelInput,
    TensorData,
    codec_for,
)
from tinkex_types._numbers import all_finite, first_non_finite, plain_int_list
from tinkex_types._tensor import ArrayList
from tinkex_types.proto import tinker_public_pb2 as pb
from tinkex_types.proto._arrays import tensor_from_proto, tensor_to_proto

CODEC = codec_for(PROTOBUF_MEDIA_TYPE)


def _sparse() -> tuple[torch.Tensor, TensorData]:
    dense = torch.zeros(4, 6, dtype=torch.int64)
    dense[0, 2] = 7
    dense[3, 5] = -3
    return dense, TensorData.from_torch_sparse(dense)


# -- constructor -------------------------------------------------------------------------


def test_the_constructor_takes_038_arguments() -> None:
    params = inspect.signature(TensorData).parameters
    assert list(params)[:5] == [
        "data",
        "dtype",
        "shape",
        "sparse_crow_indices",
        "sparse_col_indices",
    ]
    assert all(p.default is None for p in list(params.values())[:5])
    assert TensorData([1, 2], "int64").data == [1, 2]
    assert TensorData([1, 2, 3, 4], "float32", [2, 2]).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert TensorData(dtype="int64").data == []
    with pytest.raises(ValidationError, match="dtype"):
        TensorData([1, 2])


def test_the_constructor_takes_numpy_data() -> None:
    td = TensorData(np.arange(6, dtype=np.int32).reshape(2, 3), "float32")
    assert td.dtype == "float32"
    assert td.shape == [2, 3]
    assert td.data == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert TensorData(np.array([2.0, -1.0]), "int64").data == [2, -1]
    with pytest.raises(ValidationError, match=r"data\[1\] is 1.5"):
        TensorData(np.array([2.0, 1.5]), "int64")  # never rounded
    assert TensorData(np.arange(4), "int64", [2, 2]).shape == [2, 2]


def test_a_dense_tensor_reads_and_writes_as_before() -> None:
    td = TensorData(data=[1.5, 2.0], dtype="float32")
    assert td.to_json_dict() == {"data": [1.5, 2.0], "dtype": "float32"}
    assert "sparse" not in repr(td)


# -- sparse CSR --------------------------------------------------------------------------


def test_from_torch_sparse_lists_what_is_not_pad() -> None:
    dense, td = _sparse()
    assert td.is_sparse
    assert td.data == [7, -3]
    assert td.shape == [4, 6]
    assert td.sparse_crow_indices == [0, 1, 1, 1, 2]
    assert td.sparse_col_indices == [2, 5]
    assert td.size == 24
    assert td.tolist() == dense.tolist()
    assert torch.equal(td.to_torch(), dense)
    padded = td.to_numpy(pad_value=-1)
    assert padded[0].tolist() == [-1, -1, 7, -1, -1, -1]
    assert td.tolist(pad_value=9)[1] == [9] * 6


def test_from_torch_sparse_with_a_pad_value_and_floats() -> None:
    dense = torch.full((3, 5), -1.0)
    dense[1, 4] = 0.25
    dense[2, 0] = float("nan")  # not equal to the pad: listed
    td = TensorData.from_torch_sparse(dense, pad_value=-1)
    assert td.dtype == "float32"
    assert td.sparse_col_indices == [4, 0]
    back = td.to_torch(pad_value=-1)
    assert torch.equal(back.nan_to_num(7.0), dense.nan_to_num(7.0))


def test_from_torch_sparse_falls_back_to_dense() -> None:
    assert not TensorData.from_torch_sparse(torch.ones(3, 3)).is_sparse  # nothing saved
    assert not TensorData.from_torch_sparse(torch.zeros(8)).is_sparse  # not 2-D
    with pytest.raises(TypeError, match="pad_value must be an integer"):
        TensorData.from_torch_sparse(torch.zeros(3, 3), pad_value=0.5)  # type: ignore[arg-type]
    _, td = _sparse()
    with pytest.raises(TypeError, match="pad_value must be an integer, got bool"):
        td.to_numpy(pad_value=True)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sparse_crow_indices": [0, 1, 1]}, "come together"),
        ({"sparse_crow_indices": [0, 1], "sparse_col_indices": [0]}, "3 row offsets"),
        ({"sparse_crow_indices": [0, 1, 1], "sparse_col_indices": [2]}, r"in \[0, 2\)"),
        ({"sparse_crow_indices": [0, 1, 1], "sparse_col_indices": [0, 1]}, "one column per"),
        ({"sparse_crow_indices": [0, 1, 1], "sparse_col_indices": [1], "shape": [2]}, "2-D"),
    ],
)
def test_a_bad_csr_layout_is_refused(fields: dict[str, object], message: str) -> None:
    raw = {"data": [5], "dtype": "int64", "shape": [2, 2], **fields}
    with pytest.raises(ValidationError, match=message):
        TensorData.model_validate(raw)


def test_sparse_round_trips_through_json_and_protobuf() -> None:
    _, td = _sparse()
    again = TensorData.model_validate(td.to_json_dict())
    assert again == td
    assert CODEC is not None
    msg = tensor_to_proto(td, "t")
    assert msg.WhichOneof("encoding") == "sparse_csr"
    assert np.frombuffer(msg.sparse_csr.crow_indices, "<i8").tolist() == [0, 1, 1, 1, 2]
    kept = CODEC.decode(TensorData, CODEC.encode(td))
    assert kept == td
    densified = tensor_from_proto(pb.Tensor.FromString(msg.SerializeToString()), "t")
    assert not densified.is_sparse
    assert densified.tolist() == td.tolist()


def test_datum_densifies_sparse_loss_inputs() -> None:
    dense, td = _sparse()
    datum = Datum(
        model_input=ModelInput.from_ints([1, 2, 3, 4]),
        loss_fn_inputs={"target_tokens": td, "weights": TensorData.from_torch_sparse(dense * 0.5)},
    )
    assert datum.loss_fn_inputs["target_tokens"].tolist() == dense.tolist()
    assert datum.loss_fn_inputs["weights"].to_numpy().tolist() == (dense * 0.5).tolist()


# -- bulk checks keep every rule ---------------------------------------------------------


def test_plain_int_list_is_a_detector_never_a_verdict() -> None:
    assert plain_int_list([0, -5, 2**53 - 1])
    assert plain_int_list([])
    for bad in ([True], [1.0], [None], ["1"], [[1]], [2**53], [np.int64(1)], [1, {}]):
        assert not plain_int_list(bad), bad


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ([1, True], r"tokens\[1\].*bool"),
        ([1, 2.0], r"tokens\[1\].*must be an integer"),
        ([2**63], r"tokens\[0\].*out of range"),
        (np.array([1, 2**64 - 1], dtype=np.uint64), r"tokens\[1\].*out of range"),
        (np.array([0.0, 1.0]), r"tokens\[0\].*must be an integer"),
        (np.array([True]), r"tokens\[0\].*bool"),
    ],
)
def test_token_ids_keep_their_errors(tokens: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelInput.from_ints(tokens)  # type: ignore[arg-type]


def test_token_arrays_are_kept_whole() -> None:
    arr = np.array([3, 2**40, 7], dtype=np.int64)
    chunk = ModelInput.from_ints(arr).chunks[0]
    assert chunk.tokens == [3, 2**40, 7]
    assert isinstance(chunk.tokens, ArrayList)
    arr[0] = 99  # the caller's array is theirs: the chunk keeps a copy
    assert chunk.tokens.array[0] == 3
    assert ModelInput.from_ints([2**60]).to_ints() == [2**60]  # beyond 53 bits: still valid


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0, math.nan], r"data\[1\] is nan"),
        ([1.0, 2.0, math.inf], r"data\[2\] is inf"),
        ([3.5e38], r"data\[0\] is 3.5e\+38"),
        ([1.0, True], r"bool"),
        (np.array([1.0, np.nan], dtype=np.float32), r"data\[1\] is nan"),
        (np.array([1e39]), r"data\[0\] is inf"),
    ],
)
def test_loss_inputs_keep_their_errors(weights: object, message: str) -> None:
    with pytest.raises(ValidationError, match=r"loss_fn_inputs\.weights") as info:
        Datum(model_input=ModelInput.from_ints([1, 2]), loss_fn_inputs={"weights": weights})
    assert info.match(message)


def test_checked_float_lists_are_flagged_finite() -> None:
    td = TensorData.from_list([0.5, 1, 2.0], "float32")
    assert td.data == [0.5, 1.0, 2.0]
    assert isinstance(td.data, ArrayList)
    assert td.data.finite
    assert first_non_finite(td.data) is None
    assert all_finite(td.data)
    assert not all_finite([1.0, math.nan])
    assert all_finite([1e308, 1e308])  # the sum overflows; the values are finite
    raw = TensorData.from_list([math.nan], "float32")  # NaN is a valid TensorData value
    assert math.isnan(raw.data[0])


def test_numpy_and_list_requests_encode_to_the_same_bytes() -> None:
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 5000, 64)
    targets = rng.integers(0, 5000, 64)
    weights = rng.random(64, dtype=np.float32)

    def request(t: object, g: object, w: object) -> ForwardBackwardRequest:
        datum = Datum(
            model_input=ModelInput.from_ints(t),  # type: ignore[arg-type]
            loss_fn_inputs={"target_tokens": g, "weights": w},
        )
        batch = ForwardBackwardInput(data=[datum], loss_fn="cross_entropy")
        return ForwardBackwardRequest(forward_backward_input=batch, model_id="m", seq_id=1)

    arrays = request(tokens, targets, weights)
    lists = request(tokens.tolist(), targets.tolist(), weights.tolist())
    assert CODEC is not None
    assert CODEC.encode(arrays) == CODEC.encode(lists)
    assert arrays.to_json_dict() == lists.to_json_dict()
    decoded = CODEC.decode(ForwardBackwardRequest, CODEC.encode(arrays))
    got = decoded.forward_backward_input.data[0].loss_fn_inputs["weights"]
    assert got.to_numpy().tobytes() == weights.tobytes()
