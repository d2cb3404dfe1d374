"""The fast paths of request encoding give exactly what the pydantic paths give.

``WireModel.to_json_dict`` dumps plain models by reading attributes, ``TensorData.from_list``
skips per-element passes for flat lists that already fit the dtype, nested TensorData
instances are not re-scanned, and ``null`` handling is cached per class. These tests pin
the results to the slow paths (see bench/ P2 for the speed).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import tinkex_types
from tinkex_types import (
    AdamParams,
    CreateModelRequest,
    Datum,
    EncodedTextChunk,
    ForwardBackwardInput,
    ForwardBackwardRequest,
    ForwardRequest,
    ImageChunk,
    LoraConfig,
    ModelInput,
    OptimStepRequest,
    SampleRequest,
    SamplingParams,
    TensorData,
    WireModel,
)

SETTINGS = settings(max_examples=40, deadline=None)

ints = st.lists(st.integers(-(2**63), 2**63 - 1), max_size=40)
floats = st.lists(st.floats(width=32), max_size=40)  # NaN and infinities included


def _pydantic(model: WireModel) -> dict[str, Any]:
    out = model.model_dump(mode="json", by_alias=True)
    assert isinstance(out, dict)
    return out


def _text(value: Any) -> str:
    # NaN != NaN, so compare the JSON text (key order included).
    return json.dumps(value, allow_nan=True)


@st.composite
def datums(draw: st.DrawFn) -> Datum:
    tokens = draw(st.lists(st.integers(0, 2**31), min_size=1, max_size=30))
    n = len(tokens)
    inputs: dict[str, Any] = {
        "target_tokens": draw(st.lists(st.integers(0, 99), min_size=n, max_size=n))
    }
    if draw(st.booleans()):
        # finite: Datum refuses NaN and infinity in loss inputs
        finite = st.floats(width=32, allow_nan=False, allow_infinity=False)
        inputs["weights"] = draw(st.lists(finite, min_size=n, max_size=n))
    if draw(st.booleans()):
        inputs["advantages"] = TensorData(data=[0.5] * n, dtype="float32", shape=[n, 1])
    return Datum(model_input=ModelInput.from_ints(tokens), loss_fn_inputs=inputs)


@given(
    data=st.lists(datums(), min_size=1, max_size=4),
    config=st.none()
    | st.dictionaries(
        st.text(max_size=5), st.floats(allow_nan=False, allow_infinity=False), max_size=3
    ),
    seq_id=st.none() | st.integers(0, 10**6),
    forward_only=st.booleans(),
)
@SETTINGS
def test_fast_to_json_dict_equals_model_dump(
    data: list[Datum], config: dict[str, float] | None, seq_id: int | None, forward_only: bool
) -> None:
    fb = ForwardBackwardInput(data=data, loss_fn="cross_entropy", loss_fn_config=config)
    request: WireModel
    if forward_only:
        request = ForwardRequest(forward_input=fb, model_id="m:train:0", seq_id=seq_id)
    else:
        request = ForwardBackwardRequest(forward_backward_input=fb, model_id="m", seq_id=seq_id)
    assert _text(request.to_json_dict()) == _text(_pydantic(request))
    # The 0.16.1 form (exclude_unset) keeps using pydantic and differs only by defaults.
    assert "loss_fn_config" in request.to_json_dict(exclude_unset=True).get(
        "forward_input" if forward_only else "forward_backward_input", {}
    )


@pytest.mark.parametrize(
    "model",
    [
        AdamParams(learning_rate=1e-3),
        OptimStepRequest(adam_params=AdamParams(), model_id="m", seq_id=3),
        LoraConfig(rank=4),  # seed None is a wire null: kept
        SampleRequest(
            prompt=ModelInput.from_ints([1, 2]),
            sampling_params=SamplingParams(max_tokens=3, stop=["a", "b"], seed=None),
            sampling_session_id="s",
        ),
        SampleRequest(
            prompt=ModelInput.from_ints([1]),
            sampling_params=SamplingParams(stop=[7, 8]),
            base_model="tinkex/tiny-llama-100k",
        ),
        CreateModelRequest(session_id="s", model_seq_id=0, base_model="b", user_metadata=None),
        TensorData(data=[math.nan, math.inf, -0.0], dtype="float32"),
    ],
    ids=lambda m: type(m).__name__,
)
def test_fast_to_json_dict_equals_model_dump_for_request_models(model: WireModel) -> None:
    assert _text(model.to_json_dict()) == _text(_pydantic(model))


def test_models_that_are_not_plain_fall_back_to_pydantic() -> None:
    # ImageChunk serialises bytes as base64: the whole input takes the pydantic path.
    mixed = ModelInput(
        chunks=[
            ImageChunk(data=b"\x89PNG", format="png", expected_tokens=2),
            EncodedTextChunk(tokens=[5]),
        ]
    )
    assert mixed.to_json_dict() == _pydantic(mixed)
    assert mixed.to_json_dict()["chunks"][0]["data"] == "iVBORw=="

    # A subclass instance is dumped by the declared type (pydantic's rule), not its own fields.
    class TaggedChunk(EncodedTextChunk):
        tag: str = "mine"

    tagged = ModelInput(chunks=[TaggedChunk(tokens=[1, 2])])
    assert tagged.to_json_dict() == _pydantic(tagged) == {"chunks": [{"tokens": [1, 2]}]}


def test_fast_dump_of_every_exported_model_with_defaults_matches() -> None:
    checked = 0
    for name in tinkex_types.__all__:
        cls = getattr(tinkex_types, name)
        if not (isinstance(cls, type) and issubclass(cls, WireModel)):
            continue
        try:
            model = cls()
        except ValidationError:
            continue  # has required fields; covered above where it matters
        assert _text(model.to_json_dict()) == _text(_pydantic(model)), name
        checked += 1
    assert checked >= 5


@given(values=ints | floats, dtype=st.sampled_from(["int64", "float32", None]))
@SETTINGS
def test_from_list_fast_path_equals_validation(values: list[Any], dtype: Any) -> None:
    try:
        slow = TensorData(
            data=list(values),
            dtype=dtype if dtype is not None else TensorData.from_list(values).dtype,
            shape=[len(values)],
        )
    except ValidationError:
        with pytest.raises(ValidationError):
            TensorData.from_list(values, dtype)
        return
    fast = TensorData.from_list(values, dtype)
    assert fast.dtype == slow.dtype
    assert fast.shape == slow.shape
    assert [type(v) for v in fast.data] == [type(v) for v in slow.data]
    assert _text(fast.data) == _text(slow.data)
    assert fast.model_fields_set == slow.model_fields_set


def test_from_list_still_refuses_bad_values() -> None:
    with pytest.raises(ValidationError, match="do not fit int64"):
        TensorData.from_list([0, 2**63], "int64")
    with pytest.raises(ValidationError, match="needs integers"):
        TensorData.from_list([0.5], "int64")
    with pytest.raises(ValueError, match="bool"):  # a ValueError: pydantic reports it
        TensorData.from_list([True, 2], "int64")
    assert TensorData.from_list([1, 2], "float32").data == [1.0, 2.0]


def test_nested_tensor_checks_still_apply_to_dicts() -> None:
    with pytest.raises(ValidationError, match="do not fit int64"):
        Datum.model_validate(
            {
                "model_input": {"chunks": [{"tokens": [1]}]},
                "loss_fn_inputs": {"target_tokens": {"data": [2**64], "dtype": "int64"}},
            }
        )
    td = TensorData(data=[1, 2], dtype="int64")
    datum = Datum(model_input=ModelInput.from_ints([1, 2]), loss_fn_inputs={"target_tokens": td})
    assert datum.loss_fn_inputs["target_tokens"] is td


def test_null_means_default_for_factories_and_static_defaults() -> None:
    datum = Datum.model_validate({"model_input": {"chunks": None}, "loss_fn_inputs": None})
    assert datum.loss_fn_inputs == {}
    assert datum.model_input.chunks == []
    req = CreateModelRequest.model_validate(
        {"session_id": "s", "model_seq_id": 0, "base_model": "b", "lora_config": None}
    )
    assert req.lora_config == LoraConfig()
    # A strict number field refuses null instead (see test_types_numbers.py).
    params = SamplingParams.model_validate({"max_tokens": None})
    assert params.temperature == 1.0
    assert params.max_tokens is None
