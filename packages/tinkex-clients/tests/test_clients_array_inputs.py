"""The client's input checks and chunking read numpy-built inputs without building their
lists, and name the field of a bad value."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tinkex_clients import chunk_data
from tinkex_clients._validate import check_loss_inputs
from tinkex_types import (
    PROTOBUF_MEDIA_TYPE,
    Datum,
    ForwardBackwardInput,
    ForwardBackwardRequest,
    ModelInput,
    TensorData,
    TinkexValidationError,
    codec_for,
)

CODEC = codec_for(PROTOBUF_MEDIA_TYPE)


def _is_lazy(model: Any, field: str) -> bool:
    return field not in model.__dict__


def _request(*data: Datum) -> ForwardBackwardRequest:
    batch = ForwardBackwardInput(data=list(data), loss_fn="cross_entropy")
    return ForwardBackwardRequest(forward_backward_input=batch, model_id="m", seq_id=4)


def _datum(tokens: Any, targets: Any, weights: Any) -> Datum:
    return Datum(
        model_input=ModelInput.from_ints(tokens),
        loss_fn_inputs={"target_tokens": targets, "weights": weights},
    )


def test_checks_and_protobuf_never_build_the_lists() -> None:
    tokens = np.random.default_rng(3).integers(0, 60_000, 9)
    datum = _datum(tokens, tokens, np.ones(9, dtype=np.float32))
    check_loss_inputs([datum], "cross_entropy")
    chunk_data([datum])
    body = CODEC.encode(_request(datum))
    chunk = datum.model_input.chunks[0]
    assert _is_lazy(chunk, "tokens")
    assert all(_is_lazy(td, "data") for td in datum.loss_fn_inputs.values())
    decoded = CODEC.decode(ForwardBackwardRequest, body)
    listed = _datum(tokens.tolist(), tokens.tolist(), [1.0] * 9)
    assert decoded == _request(listed)


def test_non_finite_array_inputs_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"loss_fn_inputs\.weights[\s\S]*data\[1\] is nan"):
        _datum([1, 2], [1, 2], np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match=r"data\[0\] is inf"):
        _datum([1, 2], [1, 2], np.array([1e39, 1.0]))  # beyond float32: infinity there
    bad = Datum.model_construct(
        model_input=ModelInput.from_ints([1, 2]),
        loss_fn_inputs={
            "target_tokens": TensorData.from_numpy(np.array([1, 2])),
            "weights": TensorData.from_numpy(np.array([np.inf, 1.0], dtype=np.float32)),
        },
    )
    with pytest.raises(TinkexValidationError, match=r"data\[0\]\.loss_fn_inputs\.weights"):
        check_loss_inputs([bad], "cross_entropy")
