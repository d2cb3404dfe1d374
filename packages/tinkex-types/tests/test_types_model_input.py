"""ModelInput, its chunks (discriminated by type or by keys) and Datum conversions."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from tinkex_types import (
    Datum,
    EncodedTextChunk,
    ImageAssetPointerChunk,
    ImageChunk,
    ModelInput,
    TensorData,
)

PNG = b"\x89PNG\r\n\x1a\n fake image bytes"


def test_chunks_are_recognised_by_keys_without_type() -> None:
    mi = ModelInput.model_validate(
        {
            "chunks": [
                {"tokens": [1, 2]},
                {"data": base64.b64encode(PNG).decode(), "format": "png", "expected_tokens": 4},
                {"location": "s3://bucket/cat.jpeg", "format": "jpeg"},
            ]
        }
    )
    assert [type(c) for c in mi.chunks] == [EncodedTextChunk, ImageChunk, ImageAssetPointerChunk]
    image = mi.chunks[1]
    assert isinstance(image, ImageChunk)
    assert image.data == PNG


def test_chunks_are_recognised_by_type_when_present() -> None:
    mi = ModelInput.model_validate(
        {"chunks": [{"tokens": [151644, 872, 198]}, {"type": "encoded_text", "tokens": [9707, 11]}]}
    )
    assert mi.to_ints() == [151644, 872, 198, 9707, 11]
    with pytest.raises(ValidationError, match="image"):
        # a known type wins over the keys: an image without data is invalid
        ModelInput.model_validate({"chunks": [{"type": "image", "tokens": [1]}]})


def test_unrecognisable_chunk_is_a_clear_error() -> None:
    with pytest.raises(ValidationError) as info:
        ModelInput.model_validate({"chunks": [{"foo": 1}]})
    assert "tokens" in str(info.value)
    assert "chunks.0" in str(info.value)


def test_chunk_type_is_not_written_on_the_wire() -> None:
    mi = ModelInput.from_ints([1, 2, 3]).append(ImageChunk(data=PNG, format="png"))
    wire = mi.to_json_dict()
    assert wire == {
        "chunks": [
            {"tokens": [1, 2, 3]},
            {"data": base64.b64encode(PNG).decode(), "format": "png"},
        ]
    }
    assert ModelInput.model_validate(wire) == mi


def test_image_chunk_data_accepts_bytes_or_base64_and_rejects_garbage() -> None:
    assert ImageChunk(data=PNG, format="png").data == PNG
    assert (
        ImageChunk.model_validate({"data": base64.b64encode(PNG).decode(), "format": "png"}).data
        == PNG
    )
    with pytest.raises(ValidationError, match="base64"):
        ImageChunk.model_validate({"data": "not base64!!", "format": "png"})
    with pytest.raises(ValidationError, match="format"):
        ImageChunk(data=PNG, format="gif")  # type: ignore[arg-type]


def test_builders() -> None:
    empty = ModelInput.empty()
    assert empty.length == 0
    assert empty.to_ints() == []
    mi = ModelInput.from_ints([1, 2]).append_int(3)
    assert len(mi.chunks) == 1
    assert mi.to_ints() == [1, 2, 3]
    assert empty.append_int(5).to_ints() == [5]
    with_image = mi.append(ImageChunk(data=PNG, format="png", expected_tokens=10))
    assert with_image.length == 13
    after = with_image.append_int(9)
    assert len(after.chunks) == 3
    assert after.length == 14
    assert mi.to_ints() == [1, 2, 3]  # builders never change the original
    assert ModelInput.from_ints([1]).extend_ints([2, 3]).to_ints() == [1, 2, 3]


def test_to_ints_and_length_refuse_what_they_cannot_know() -> None:
    mi = ModelInput.from_ints([1]).append(ImageAssetPointerChunk(location="x", format="png"))
    with pytest.raises(ValueError, match="to_ints"):
        mi.to_ints()
    with pytest.raises(ValueError, match="expected_tokens"):
        _ = mi.length


def test_datum_converts_lists_numpy_and_torch() -> None:
    from_lists = Datum(
        model_input=ModelInput.from_ints([10, 11, 12, 13]),
        loss_fn_inputs={"target_tokens": [11, 12, 13, 14], "weights": [0, 0, 1, 1]},  # type: ignore[dict-item]
    )
    from_numpy = Datum(
        model_input=ModelInput.from_ints([10, 11, 12, 13]),
        loss_fn_inputs={
            "target_tokens": np.array([11, 12, 13, 14], dtype=np.int32),  # type: ignore[dict-item]
            "weights": np.array([0, 0, 1, 1], dtype=np.float64),  # type: ignore[dict-item]
        },
    )
    from_torch = Datum(
        model_input=ModelInput.from_ints([10, 11, 12, 13]),
        loss_fn_inputs={
            "target_tokens": torch.tensor([11, 12, 13, 14]),  # type: ignore[dict-item]
            "weights": torch.tensor([0.0, 0.0, 1.0, 1.0]),  # type: ignore[dict-item]
        },
    )
    expected = {
        "model_input": {"chunks": [{"tokens": [10, 11, 12, 13]}]},
        "loss_fn_inputs": {
            "target_tokens": {"data": [11, 12, 13, 14], "dtype": "int64", "shape": [4]},
            "weights": {"data": [0.0, 0.0, 1.0, 1.0], "dtype": "float32", "shape": [4]},
        },
    }
    for datum in (from_lists, from_numpy, from_torch):
        assert datum.to_json_dict() == expected
        assert isinstance(datum.loss_fn_inputs["weights"], TensorData)


def test_datum_lists_under_other_keys_follow_their_values() -> None:
    d = Datum(
        model_input=ModelInput.from_ints([1, 2]),
        loss_fn_inputs={"mask": [1, 0], "scale": [[0.5, 1.0]], "advantages": [1, 2]},  # type: ignore[dict-item]
    )
    assert d.loss_fn_inputs["mask"].dtype == "int64"
    assert (d.loss_fn_inputs["scale"].dtype, d.loss_fn_inputs["scale"].shape) == ("float32", [1, 2])
    assert d.loss_fn_inputs["advantages"].dtype == "float32"  # known key wins over values


def test_datum_keeps_tensor_data_and_validates_dicts() -> None:
    td = TensorData(data=[1, 2], dtype="int64")
    d = Datum(model_input=ModelInput.from_ints([1, 2]), loss_fn_inputs={"target_tokens": td})
    assert d.loss_fn_inputs["target_tokens"] is td
    with pytest.raises(ValidationError, match=r"loss_fn_inputs\.weights"):
        Datum.model_validate(
            {
                "model_input": {"chunks": []},
                "loss_fn_inputs": {"weights": {"data": [1], "dtype": "f"}},
            }
        )
