"""TensorData: validation, numpy and torch conversion (bit-exact), tolist, from_list."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import ValidationError

from tinkex_types import TensorData

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)


def _bits32(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).view(np.uint32).tobytes()


@SETTINGS
@given(bits=hnp.arrays(np.uint32, shapes))
def test_float32_numpy_round_trip_is_bit_exact(bits: np.ndarray) -> None:
    # every uint32 pattern viewed as float32: NaN payloads, signalling NaNs, inf, -0, denormals
    arr = bits.view(np.float32)
    td = TensorData.from_numpy(arr)
    assert td.dtype == "float32"
    assert td.shape == list(arr.shape)
    back = td.to_numpy()
    assert back.dtype == np.float32
    assert back.shape == arr.shape
    assert _bits32(back) == _bits32(arr)
    # also through the python-mode dump/validate cycle
    again = TensorData.model_validate(td.model_dump()).to_numpy()
    assert _bits32(again) == _bits32(arr)


@SETTINGS
@given(arr=hnp.arrays(np.int64, shapes))
def test_int64_numpy_round_trip_is_exact(arr: np.ndarray) -> None:
    td = TensorData.from_numpy(arr)
    assert td.dtype == "int64"
    back = td.to_numpy()
    assert back.dtype == np.int64
    assert back.shape == arr.shape
    assert np.array_equal(back, arr)
    via_json = TensorData.model_validate_json(td.to_json()).to_numpy()
    assert np.array_equal(via_json, arr)


@SETTINGS
@given(arr=hnp.arrays(np.float32, shapes, elements=st.floats(width=32, allow_nan=False)))
def test_float32_json_round_trip_keeps_values_including_infinity(arr: np.ndarray) -> None:
    td = TensorData.from_numpy(arr)
    back = TensorData.model_validate_json(td.to_json()).to_numpy()
    assert _bits32(back) == _bits32(arr)


def test_nan_survives_json_as_a_constant() -> None:
    td = TensorData(data=[float("nan"), float("inf"), -float("inf")], dtype="float32")
    text = td.to_json()
    assert "NaN" in text
    assert "Infinity" in text
    assert "null" not in text
    back = TensorData.model_validate_json(text).to_numpy()
    assert np.isnan(back[0])
    assert back[1] == np.inf
    assert back[2] == -np.inf


@pytest.mark.parametrize(
    ("np_dtype", "expected"),
    [
        (np.float16, "float32"),
        (np.float64, "float32"),
        (np.int8, "int64"),
        (np.int32, "int64"),
        (np.uint16, "int64"),
        (np.bool_, "int64"),
    ],
)
def test_other_numpy_dtypes_are_converted(np_dtype: type, expected: str) -> None:
    arr = np.array([[0, 1], [1, 0]]).astype(np_dtype)
    td = TensorData.from_numpy(arr)
    assert td.dtype == expected
    assert td.shape == [2, 2]
    assert td.tolist() == [[0, 1], [1, 0]]


def test_uint64_overflow_and_complex_are_refused() -> None:
    with pytest.raises(ValueError, match="int64"):
        TensorData.from_numpy(np.array([2**63], dtype=np.uint64))
    with pytest.raises(TypeError, match="complex"):
        TensorData.from_numpy(np.array([1 + 2j]))


@SETTINGS
@given(bits=hnp.arrays(np.uint32, shapes))
def test_torch_float32_round_trip_is_bit_exact(bits: np.ndarray) -> None:
    t = torch.from_numpy(bits.view(np.float32).copy())
    td = TensorData.from_torch(t)
    back = td.to_torch()
    assert back.dtype == torch.float32
    assert tuple(back.shape) == tuple(t.shape)
    assert _bits32(back.numpy()) == _bits32(t.numpy())


@SETTINGS
@given(arr=hnp.arrays(np.int64, shapes))
def test_torch_int64_round_trip(arr: np.ndarray) -> None:
    t = torch.from_numpy(arr.copy())
    back = TensorData.from_torch(t).to_torch()
    assert back.dtype == torch.int64
    assert torch.equal(back, t)


def test_torch_conversions_widen_and_detach() -> None:
    x = torch.tensor([1.5, -2.25], dtype=torch.bfloat16, requires_grad=True)
    td = TensorData.from_torch(x * 2)
    assert td.dtype == "float32"
    assert td.data == [3.0, -4.5]
    half = TensorData.from_torch(torch.tensor([0.5], dtype=torch.float16))
    assert half.data == [0.5]
    ints = TensorData.from_torch(torch.tensor([[1, 2, 3]], dtype=torch.int32))
    assert (ints.dtype, ints.shape, ints.data) == ("int64", [1, 3], [1, 2, 3])
    flags = TensorData.from_torch(torch.tensor([True, False]))
    assert (flags.dtype, flags.data) == ("int64", [1, 0])
    scalar = TensorData.from_torch(torch.tensor(7.0))
    assert scalar.shape == []
    assert scalar.tolist() == 7.0
    assert scalar.to_torch().shape == ()


def test_shape_none_means_1d() -> None:
    td = TensorData(data=[1, 2, 3], dtype="int64")
    assert td.effective_shape == [3]
    assert td.to_numpy().shape == (3,)
    assert td.tolist() == [1, 2, 3]
    assert "shape" not in td.to_json_dict()


def test_tolist_nested_and_empty() -> None:
    td = TensorData(data=list(range(24)), dtype="int64", shape=[2, 3, 4])
    assert td.tolist() == np.arange(24).reshape(2, 3, 4).tolist()
    assert TensorData(data=[], dtype="float32", shape=[2, 0]).tolist() == [[], []]
    assert TensorData(data=[], dtype="float32", shape=[0, 3]).tolist() == []


def test_from_list_infers_dtype_and_shape() -> None:
    assert TensorData.from_list([[1, 2], [3, 4]]).model_dump() == {
        "data": [1, 2, 3, 4],
        "dtype": "int64",
        "shape": [2, 2],
    }
    mixed = TensorData.from_list([1, 2.5])
    assert (mixed.dtype, mixed.data) == ("float32", [1.0, 2.5])
    assert TensorData.from_list([1, 2], "float32").data == [1.0, 2.0]
    with pytest.raises(ValueError, match="ragged"):
        TensorData.from_list([[1, 2], [3]])
    with pytest.raises(ValueError, match="numbers"):  # a ValueError: pydantic reports it
        TensorData.from_list(["a"])


def test_int64_data_is_normalised_from_integral_floats() -> None:
    assert TensorData(data=[1.0, 2.0], dtype="int64").data == [1, 2]
    assert TensorData(data=[1, 2], dtype="float32").data == [1.0, 2.0]


@pytest.mark.parametrize(
    ("kwargs", "field_text"),
    [
        ({"data": [1.0], "dtype": "float64"}, "dtype"),
        ({"data": [1, 2, 3], "dtype": "int64", "shape": [2, 2]}, "shape"),
        ({"data": [1.5], "dtype": "int64"}, "int64"),
        ({"data": [1.0], "dtype": "float32", "shape": [-1]}, "shape"),
        ({"data": ["x"], "dtype": "float32"}, "data"),
        ({"data": [1.0], "dtype": "float32", "extra": 1}, "extra"),
    ],
)
def test_invalid_tensor_data_names_the_field(kwargs: dict[str, object], field_text: str) -> None:
    with pytest.raises(ValidationError) as info:
        TensorData.model_validate(kwargs)
    assert field_text in str(info.value)


def test_tensor_data_forbids_extra_keys_on_the_wire() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TensorData.model_validate_json('{"data": [1], "dtype": "int64", "shape": [1], "x": 0}')


def test_numpy_scalars_in_lists_are_numbers_but_bools_are_not() -> None:
    td = TensorData(data=[np.int32(3), np.float32(1.5), 2], dtype="float32")  # type: ignore[list-item]
    assert td.data == [3.0, 1.5, 2.0]
    assert all(type(v) is float for v in td.data)
    assert TensorData(data=[np.int64(3), 2], dtype="int64").data == [3, 2]  # type: ignore[list-item]
    for bad in ([True], [np.bool_(True)], ["1"], [None]):
        with pytest.raises(ValidationError, match="data must hold numbers"):
            TensorData(data=bad, dtype="int64")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="int64"):
        TensorData(data=[2**63], dtype="int64")
    with pytest.raises(ValidationError, match="flat list"):
        TensorData(data=5, dtype="int64")  # type: ignore[arg-type]
    assert TensorData(data=(1, 2), dtype="int64").data == [1, 2]  # type: ignore[arg-type]
