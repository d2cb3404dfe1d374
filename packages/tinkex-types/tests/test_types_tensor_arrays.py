"""TensorData built from numpy/torch keeps its array, and the protobuf encoder writes that
buffer without converting the Python list back (the array fast path)."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

from tinkex_types import (
    PROTOBUF_MEDIA_TYPE,
    Datum,
    ForwardBackwardInput,
    ForwardBackwardRequest,
    ModelInput,
    TensorData,
    codec_for,
)
from tinkex_types._tensor import ArrayList
from tinkex_types.proto import _arrays


def _request(weights: TensorData, targets: TensorData) -> ForwardBackwardRequest:
    datum = Datum(
        model_input=ModelInput.from_ints([1, 2, 3]),
        loss_fn_inputs={"weights": weights, "target_tokens": targets},
    )
    batch = ForwardBackwardInput(data=[datum], loss_fn="cross_entropy")
    return ForwardBackwardRequest(forward_backward_input=batch, model_id="m", seq_id=1)


def test_arrays_are_encoded_without_the_list(monkeypatch: pytest.MonkeyPatch) -> None:
    weights = np.array([0.5, -0.0, 1e-45, 3.0e38], dtype=np.float64)
    targets = np.array([5, 6, 7, 2**40], dtype=np.uint64)
    from_arrays = _request(TensorData.from_numpy(weights), TensorData.from_numpy(targets))
    from_lists = _request(
        TensorData.from_list(TensorData.from_numpy(weights).tolist(), "float32"),
        TensorData.from_list([5, 6, 7, 2**40], "int64"),
    )
    codec = codec_for(PROTOBUF_MEDIA_TYPE)
    assert codec is not None
    expected = codec.encode(from_lists)

    def no_lists(_values: object) -> None:
        raise AssertionError("the float list was converted back to an array")

    monkeypatch.setattr(_arrays, "_pylist_to_f32", no_lists)
    assert codec.encode(from_arrays) == expected
    # The JSON form is the same as well (the list is still a list for every reader).
    assert from_arrays.to_json_dict() == from_lists.to_json_dict()


def test_torch_tensors_take_the_same_path() -> None:
    t = torch.tensor([[1.5, -2.0], [0.25, 4.0]], dtype=torch.bfloat16)
    td = TensorData.from_torch(t)
    assert isinstance(td.data, ArrayList)
    assert td.data.array.dtype == np.dtype("<f4")
    assert _arrays.tensor_array(td, "x") is td.data.array
    assert td.to_numpy().tolist() == [[1.5, -2.0], [0.25, 4.0]]
    assert td.to_numpy() is not td.data.array  # a copy: changing it changes nothing here
    ints = TensorData.from_torch(torch.tensor([True, False, True]))
    assert _arrays.tensor_array(ints, "x").tolist() == [1, 0, 1]


def test_the_list_cannot_drift_from_its_array() -> None:
    td = TensorData.from_numpy(np.arange(4, dtype=np.int32))
    assert td.data == [0, 1, 2, 3]
    with pytest.raises(TypeError, match="build a new TensorData"):
        td.data.append(4)
    with pytest.raises(TypeError, match="build a new TensorData"):
        td.data[0] = 9
    # A replaced list is used as given (no stale array); copies and pickles are plain lists.
    changed = td.model_copy(update={"data": [9, 1, 2, 3]})
    assert _arrays.tensor_array(changed, "x").tolist() == [9, 1, 2, 3]
    for clone in (copy.copy(td.data), copy.deepcopy(td.data), pickle.loads(pickle.dumps(td.data))):
        assert type(clone) is list
        assert clone == [0, 1, 2, 3]
    assert pickle.loads(pickle.dumps(td)) == td
    assert TensorData.model_validate(td.to_json_dict()) == td
