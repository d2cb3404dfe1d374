"""Chunking of training batches and the reduction of per-chunk metrics."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinkex_clients import (
    chunk_data,
    combine_forward_backward_outputs,
    reduce_metrics,
)
from tinkex_http import ByteEstimator
from tinkex_types import Datum, ForwardBackwardOutput, ModelInput, TensorData, TinkexValidationError


def _datum(n: int) -> Datum:
    return Datum(
        model_input=ModelInput.from_ints(list(range(n))),
        loss_fn_inputs={"target_tokens": list(range(1, n + 1)), "weights": [1.0] * n},
    )


def test_chunk_by_count_and_bytes() -> None:
    data = [_datum(3) for _ in range(5)]
    assert [len(c) for c in chunk_data(data, max_items=2)] == [2, 2, 1]
    per = ByteEstimator.datum_bytes(data[0])
    assert per == 3 * 10 + 6 * 10
    assert [len(c) for c in chunk_data(data, max_bytes=2 * per)] == [2, 2, 1]
    assert [len(c) for c in chunk_data(data, max_bytes=2 * per - 1)] == [1, 1, 1, 1, 1]


def test_oversized_datum_gets_its_own_chunk_never_an_empty_one() -> None:
    data = [_datum(50), _datum(1)]
    chunks = chunk_data(data, max_bytes=10)
    assert [len(c) for c in chunks] == [1, 1]


def test_chunk_limits_validated() -> None:
    with pytest.raises(TinkexValidationError, match="max_items"):
        chunk_data([_datum(1)], max_items=0)
    with pytest.raises(TinkexValidationError, match="max_bytes"):
        chunk_data([_datum(1)], max_bytes=0)


@settings(deadline=None, max_examples=50)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=30),
    max_items=st.integers(min_value=1, max_value=8),
    max_bytes=st.integers(min_value=1, max_value=2000),
)
def test_chunking_preserves_order_and_respects_limits(
    sizes: list[int], max_items: int, max_bytes: int
) -> None:
    data = [_datum(n) for n in sizes]
    chunks = chunk_data(data, max_items=max_items, max_bytes=max_bytes)
    assert [d for c in chunks for d in c] == data
    for chunk in chunks:
        assert 1 <= len(chunk) <= max_items
        if len(chunk) > 1:
            assert ByteEstimator.data_bytes(chunk) <= max_bytes


def test_reduce_metrics_by_suffix() -> None:
    metrics = [
        {
            "loss:sum": 1.0,
            "acc:mean": 0.5,
            "lr:max": 1.0,
            "m:min": 3.0,
            "s:slack": 1.0,
            "u:unique": 1.0,
            "plain": 2.0,
        },
        {
            "loss:sum": 2.0,
            "acc:mean": 1.0,
            "lr:max": 3.0,
            "m:min": 2.0,
            "s:slack": 4.0,
            "u:unique": 5.0,
            "plain": 5.0,
        },
    ]
    out = reduce_metrics(metrics, [1, 3])
    assert out["loss:sum"] == 3.0
    assert out["acc:mean"] == pytest.approx((0.5 * 1 + 1.0 * 3) / 4)
    assert out["lr:max"] == 3.0
    assert out["m:min"] == 2.0
    assert out["s:slack"] == pytest.approx(4.0 - (1.0 + 12.0) / 4)
    assert out["u:unique"] == 1.0
    assert out["u:unique_2"] == 5.0
    assert out["plain"] == pytest.approx((2.0 + 15.0) / 4)


def test_reduce_metrics_edge_cases() -> None:
    assert reduce_metrics([], []) == {}
    # only keys of the first chunk; chunks missing a key are skipped for it
    out = reduce_metrics([{"a:sum": 1.0}, {"a:sum": 2.0, "b:sum": 9.0}, {"c:sum": 1.0}], [1, 1, 1])
    assert out == {"a:sum": 3.0}
    # zero total weight -> weighted reductions give 0.0
    assert reduce_metrics([{"x:mean": 4.0}, {"x:mean": 2.0}], [0, 0]) == {"x:mean": 0.0}
    h1 = reduce_metrics([{"h:hash_unordered": 1.0}, {"h:hash_unordered": 2.0}], [1, 1])
    h2 = reduce_metrics([{"h:hash_unordered": 2.0}, {"h:hash_unordered": 1.0}], [1, 1])
    assert h1 == h2


def test_combine_outputs() -> None:
    lp = {"logprobs": TensorData(data=[-1.0], dtype="float32", shape=[1])}
    a = ForwardBackwardOutput(loss_fn_outputs=[lp, lp], metrics={"loss:sum": 1.0})
    b = ForwardBackwardOutput(loss_fn_outputs=[lp], metrics={"loss:sum": 2.5})
    out = combine_forward_backward_outputs([a, b])
    assert len(out.loss_fn_outputs) == 3
    assert out.metrics == {"loss:sum": 3.5}
    assert combine_forward_backward_outputs([a]) is a
    assert combine_forward_backward_outputs([]).loss_fn_outputs == []


def test_non_finite_loss_inputs_are_refused_naming_the_field() -> None:
    import pytest
    from pydantic import ValidationError

    from tinkex_clients._validate import check_loss_inputs
    from tinkex_types import Datum, ModelInput, TensorData, TinkexValidationError

    def datum(advantage: float) -> Datum:
        return Datum(
            model_input=ModelInput.from_ints([1, 2, 3]),
            loss_fn_inputs={
                "target_tokens": [2, 3, 4],
                "logprobs": [-1.0, -2.0, -0.5],
                "advantages": [1.0, advantage, -1.0],
            },
        )

    check_loss_inputs([datum(0.0)], "importance_sampling")
    for bad_value in (float("nan"), float("inf"), float("-inf")):
        # Datum itself refuses them now (tinkex_types numeric validation, issue 17)...
        with pytest.raises(ValidationError, match=r"loss_fn_inputs\.advantages"):
            datum(bad_value)
        # ...and the client check still catches a datum changed after validation.
        changed = datum(0.0)
        changed.loss_fn_inputs["advantages"] = TensorData.model_construct(
            data=[1.0, bad_value, -1.0], dtype="float32", shape=[3]
        )
        with pytest.raises(TinkexValidationError, match="NaN or infinite") as info:
            check_loss_inputs([datum(0.0), changed], "importance_sampling")
        assert info.value.field == "data[1].loss_fn_inputs.advantages"
