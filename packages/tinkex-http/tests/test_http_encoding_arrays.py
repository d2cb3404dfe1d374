"""JSON bodies of requests built from numpy arrays and torch tensors are byte for byte
those of the same requests built from Python lists (the arrays are held, not listed, until
the body is written: ``tinkex_types._lazy``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
import torch

from tinkex_http import ByteEstimator, encode_json
from tinkex_types import (
    Datum,
    ForwardBackwardInput,
    ForwardBackwardRequest,
    ModelInput,
    TensorData,
)

RNG = np.random.default_rng(11)


def _tokens(n: int) -> np.ndarray[Any, Any]:
    return RNG.integers(0, 60_000, n)


def _request(*data: Datum) -> ForwardBackwardRequest:
    batch = ForwardBackwardInput(data=list(data), loss_fn="cross_entropy")
    return ForwardBackwardRequest(forward_backward_input=batch, model_id="m", seq_id=4)


def _datum(tokens: Any, targets: Any, weights: Any) -> Datum:
    return Datum(
        model_input=ModelInput.from_ints(tokens),
        loss_fn_inputs={"target_tokens": targets, "weights": weights},
    )


def _plain_body(rows: list[tuple[list[int], list[int], list[float], list[int]]]) -> bytes:
    """What the encoder wrote before arrays were held: orjson of plain lists."""
    data = [
        {
            "model_input": {"chunks": [{"tokens": tokens}]},
            "loss_fn_inputs": {
                "target_tokens": {"data": targets, "dtype": "int64", "shape": shape},
                "weights": {"data": weights, "dtype": "float32", "shape": shape},
            },
        }
        for tokens, targets, weights, shape in rows
    ]
    body = {
        "forward_backward_input": {
            "data": data,
            "loss_fn": "cross_entropy",
            "loss_fn_config": None,
        },
        "model_id": "m",
        "seq_id": 4,
    }
    return orjson.dumps(body)


@pytest.mark.parametrize("int_dtype", ["int64", "int32", "uint16"])
@pytest.mark.parametrize("float_dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("n", [0, 1, 300])
def test_json_bodies_from_arrays_are_byte_identical(
    int_dtype: str, float_dtype: str, n: int
) -> None:
    tokens = _tokens(n).astype(int_dtype)
    weights = RNG.standard_normal(n).astype(float_dtype)
    expected_weights = weights.astype(np.float32).astype(np.float64).tolist()
    datum = _datum(tokens, tokens, weights)
    listed = _datum(tokens.tolist(), tokens.tolist(), expected_weights)
    expected = _plain_body([(tokens.tolist(), tokens.tolist(), expected_weights, [n])])
    assert encode_json(_request(datum).to_json_dict()) == expected
    assert encode_json(_request(listed).to_json_dict()) == expected
    assert encode_json(_request(datum)) == expected


def test_json_bodies_of_2d_tensors_and_torch_match_the_lists() -> None:
    targets = _tokens(6).reshape(3, 2)
    weights = torch.tensor(RNG.standard_normal((3, 2)), dtype=torch.bfloat16)
    datum = Datum(
        model_input=ModelInput.from_ints(_tokens(3)),
        loss_fn_inputs={"target_tokens": targets, "weights": weights},
    )
    listed = Datum(
        model_input=ModelInput.from_ints(datum.model_input.to_ints()),
        loss_fn_inputs={
            "target_tokens": TensorData.from_list(targets.tolist(), "int64"),
            "weights": TensorData.from_list(weights.float().tolist(), "float32"),
        },
    )
    assert encode_json(_request(datum).to_json_dict()) == encode_json(
        _request(listed).to_json_dict()
    )


def test_byte_estimates_of_array_inputs_build_no_lists() -> None:
    datum = _datum(np.array([5, 6, 7], dtype=np.int16), np.array([6, 7, 8]), np.ones(3))
    assert ByteEstimator.datum_bytes(datum) == 90
    assert "tokens" not in datum.model_input.chunks[0].__dict__
    assert all("data" not in td.__dict__ for td in datum.loss_fn_inputs.values())


def test_bodies_written_directly_equal_the_walked_ones() -> None:
    from collections import OrderedDict
    from types import MappingProxyType

    from tinkex_http import to_jsonable
    from tinkex_types import NOT_GIVEN, AdamParams, QueueState
    from tinkex_types._lazy import ArrayList

    bodies: list[Any] = [
        {"a": [1, 2.5, None], "b": {"c": (1, 2)}, 3: "x", "n": None},
        {"model": AdamParams(learning_rate=1e-3), "list": [AdamParams(learning_rate=2.0)]},
        {"skip": NOT_GIVEN, "keep": 1, "deep": [{"skip": NOT_GIVEN, "k": 2}]},
        {"proxy": MappingProxyType({"a": 1})},
        [{"a": np.arange(3)}, np.float32(1.5)],
        {"state": QueueState.ACTIVE, "ordered": OrderedDict(b=1), "flag": True},
        {"kept": TensorData.from_numpy(np.array([0.5, 2.0])).data, "plain": ArrayList([1.5])},
    ]
    for body in bodies:
        walked = orjson.dumps(
            to_jsonable(body), option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
        )
        assert encode_json(body) == walked
    assert encode_json({"skip": NOT_GIVEN, "none": None}, exclude_none=True) == b"{}"


def test_non_finite_values_are_refused_on_the_direct_path() -> None:
    from tinkex_types import TinkexValidationError

    with pytest.raises(TinkexValidationError, match=r"a\[1\]"):
        encode_json({"a": [1.0, float("nan")], "b": None})
    with pytest.raises(TinkexValidationError, match="weights"):
        encode_json({"weights": np.array([1.0, np.inf])})
    with pytest.raises(TypeError, match="not JSON-encodable"):
        encode_json({"a": object()})
