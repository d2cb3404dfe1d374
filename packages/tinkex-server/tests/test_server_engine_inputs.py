"""Training inputs: lists become the tensors ``torch.tensor`` would build, and a request with
several bad datums is refused for the first one in datum order, whichever check fails."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tinkex_server._engine import Datum, EngineInputError
from tinkex_server._engine.inputs import prepare_data, to_tensor
from tinkex_server._engine.losses import engine_loss_spec
from tinkex_server._engine.registry import load_base_model
from tinkex_types import TensorData

MODEL = "tinkex/tiny-llama-100k"

_scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=2**63, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.booleans(),
)


def _same(got: torch.Tensor, want: torch.Tensor) -> bool:
    if got.dtype != want.dtype or got.shape != want.shape:
        return False
    if got.is_floating_point():
        return bool(torch.equal(got.isnan(), want.isnan())) and bool(
            torch.equal(got.nan_to_num(0.0), want.nan_to_num(0.0))
        )
    return bool(torch.equal(got, want))


@given(st.lists(_scalars, max_size=40))
def test_a_list_becomes_the_tensor_torch_builds(values: list[Any]) -> None:
    try:
        want = torch.tensor(values)
    except (TypeError, ValueError, RuntimeError):
        with pytest.raises(EngineInputError):
            to_tensor(values, "x")
        return
    assert _same(to_tensor(values, "x"), want)
    wire = TensorData.model_construct(data=values, dtype="float32", shape=[len(values)])
    assert _same(to_tensor(wire, "x"), want)


@pytest.mark.parametrize(
    "values",
    [
        [1, 2, 3],
        [1.5, -0.25, 1e-46, 1e300, -1e300],
        [1, 2.5],
        [2.5, 1],
        [True, 2],
        [2, True],
        [[1, 2], [3, 4]],
        [[1.0, 2.0], [3.0, 4.0]],
        [],
        [math.nan, math.inf],
    ],
)
def test_lists_of_every_kind(values: list[Any]) -> None:
    assert _same(to_tensor(values, "x"), torch.tensor(values))


def _datum(n: int, **changes: Any) -> Datum:
    inputs: dict[str, Any] = {"target_tokens": list(range(1, n + 1)), "weights": [1.0] * n}
    inputs.update(changes)
    return Datum(list(range(10, 10 + n)), inputs)


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        # A value error (checked over the whole request) in datum 0 wins over a shape error
        # in datum 1, and the other way round.
        (
            [_datum(3, target_tokens=[1, 2, 10**6]), _datum(3, weights=[1.0])],
            "data[0].loss_fn_inputs.target_tokens",
            "out of range",
        ),
        (
            [_datum(3, weights=[1.0]), _datum(3, target_tokens=[1, 2, 10**6])],
            "data[0].loss_fn_inputs.weights",
            "has shape",
        ),
        (
            [_datum(3), _datum(3, weights=[1.0, math.nan, 1.0])],
            "data[1].loss_fn_inputs.weights",
            "NaN",
        ),
        # Within one datum the checks keep their order: targets' range before the weights.
        (
            [_datum(3, target_tokens=[-1, 2, 3], weights=[1.0])],
            "data[0].loss_fn_inputs.target_tokens",
            "out of range",
        ),
        (
            [Datum([5, 10**6], {"target_tokens": [1, 2], "weights": [1.0, 1.0]})],
            "data[0].model_input",
            "out of range",
        ),
        (
            [_datum(2), Datum([1.5], {"target_tokens": [1], "weights": [1.0]})],
            "data[1].model_input",
            "integer",
        ),
    ],
)
def test_the_first_bad_datum_is_named(data: list[Datum], field: str, problem: str) -> None:
    base = load_base_model(MODEL)
    with pytest.raises(EngineInputError) as info:
        prepare_data(base, data, engine_loss_spec("cross_entropy"))
    assert info.value.field == field
    assert problem in str(info.value)


def test_good_data_is_converted_once() -> None:
    base = load_base_model(MODEL)
    items = prepare_data(base, [_datum(3), _datum(2)], engine_loss_spec("cross_entropy"))
    assert [it.index for it in items] == [0, 1]
    assert items[0].tokens.dtype == torch.long
    assert items[0].tokens.tolist() == [10, 11, 12]
    assert items[1].targets.tolist() == [1, 2]
    assert items[1].inputs["weights"].dtype == torch.float32
