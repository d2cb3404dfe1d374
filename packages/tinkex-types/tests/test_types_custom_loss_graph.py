"""The custom loss graph models (tinker 0.38 create_custom_loss): shape checks and the
argument encoding."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from tinkex_types import (
    CreateCustomLossRequest,
    CreateCustomLossResponse,
    CustomLossGraph,
    ForwardBackwardInput,
)
from tinkex_types._custom_loss_graph import NodeRef, TorchConstant, decode_arg


def _node(op: str, name: str, target: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"op": op, "name": name, "target": target, "args": list(args), "kwargs": kwargs}


def _graph(*middle: dict[str, Any], out: Any = None) -> dict[str, Any]:
    result = out if out is not None else {"tuple": [{"ref": "sum_1"}, {"dict": {}}]}
    return {
        "nodes": [
            _node("placeholder", "logprobs", "logprobs"),
            _node("placeholder", "weights", "weights"),
            *middle,
            _node("output", "output", "output", result),
        ]
    }


_MUL = _node("call_function", "mul", "operator.mul", {"ref": "logprobs"}, {"ref": "weights"})
_SUM = _node("call_method", "sum_1", "sum", {"ref": "mul"})
_INPUTS = [{"name": "logprobs", "rank": 1}, {"name": "weights", "rank": 1}]


def _request(graph: dict[str, Any], inputs: list[dict[str, Any]] | None = None) -> Any:
    return CreateCustomLossRequest.model_validate(
        {
            "session_id": "s",
            "custom_loss_seq_id": 0,
            "name": "neg_ll",
            "inputs": _INPUTS if inputs is None else inputs,
            "graph": graph,
        }
    )


def test_a_well_formed_request_round_trips_through_json() -> None:
    req = _request(_graph(_MUL, _SUM))
    again = CreateCustomLossRequest.from_json(req.to_json())
    assert again == req
    assert again.type == "create_custom_loss"
    assert again.graph.format == 1
    assert again.graph.placeholders == ["logprobs", "weights"]


def test_the_response_carries_the_loss_id() -> None:
    resp = CreateCustomLossResponse.from_json('{"loss_id": "abc"}')
    assert resp.loss_id == "abc"
    assert resp.to_json_dict() == {"loss_id": "abc", "type": "create_custom_loss"}


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        (_graph(_SUM, _MUL), "refers to 'mul', which is not an earlier node"),
        (_graph(_MUL, _MUL, _SUM), "'mul' is used twice"),
        ({"nodes": [_node("placeholder", "logprobs", "logprobs")]}, "last node must be"),
        (
            _graph(_MUL, _node("output", "o2", "output", 1), _SUM),
            "only the last node may be an output",
        ),
        (
            _graph(_MUL, _node("call_method", "sum_1", "sum", {"ref": "mul", "x": 1})),
            "exactly one key",
        ),
        (_graph(_MUL, _node("call_method", "sum_1", "sum", {"eval": "x"})), "'eval'"),
        (_graph(_MUL, _node("call_method", "sum_1", "sum", 1.5, {"slice": [1]})), "'slice'"),
        (_graph(_MUL, _SUM, out=1), None),
    ],
)
def test_malformed_graphs_are_refused_naming_the_node(graph: Any, message: str | None) -> None:
    if message is None:  # a non-tensor output is the server's business, not the shape's
        assert CustomLossGraph.model_validate(graph).nodes[-1].args == [1]
        return
    with pytest.raises(ValidationError) as info:
        CustomLossGraph.model_validate(graph)
    assert message in str(info.value)


def test_a_placeholder_after_a_computation_is_refused() -> None:
    graph = _graph(_MUL, _SUM)
    graph["nodes"].insert(3, _node("placeholder", "late", "late"))
    with pytest.raises(ValidationError, match=r"nodes\[3\]: placeholders come before"):
        CustomLossGraph.model_validate(graph)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([{"name": "weights", "rank": 1}, {"name": "logprobs", "rank": 1}], "first input"),
        ([{"name": "logprobs", "rank": 0}, {"name": "weights", "rank": 1}], "rank 1"),
        ([{"name": "logprobs", "rank": 1}, {"name": "Weights", "rank": 1}], "lowercase"),
        ([{"name": "logprobs", "rank": 1}, {"name": "advantages", "rank": 1}], "parameters"),
        ([{"name": "logprobs", "rank": 1}, {"name": "weights", "rank": 3}], "rank"),
    ],
)
def test_inputs_must_match_the_graph(inputs: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        _request(_graph(_MUL, _SUM), inputs)
    assert message in str(info.value)


def test_decode_arg_covers_every_encoding() -> None:
    encoded = [
        {"ref": "x"},
        {"tuple": [1, {"float": "-inf"}]},
        {"dict": {"dim": -1}},
        {"slice": [None, 2, None]},
        {"ellipsis": True},
        {"dtype": "float32"},
        {"device": "cpu"},
        [True, "s", None],
    ]
    decoded = decode_arg(encoded)
    assert decoded[0] == NodeRef("x")
    assert decoded[1] == (1, -math.inf)
    assert decoded[2] == {"dim": -1}
    assert decoded[3] == slice(None, 2, None)
    assert decoded[4] is Ellipsis
    assert decoded[5] == TorchConstant("dtype", "float32")
    assert decoded[6] == TorchConstant("device", "cpu")
    assert decoded[7] == [True, "s", None]
    assert math.isnan(decode_arg({"float": "nan"}))


def test_decode_arg_refuses_deep_nesting() -> None:
    value: Any = 1
    for _ in range(40):
        value = [value]
    with pytest.raises(ValueError, match="nest deeper"):
        decode_arg(value)


def test_forward_backward_input_accepts_the_custom_loss_name() -> None:
    fb = ForwardBackwardInput(data=[], loss_fn="custom", loss_fn_config_v2={"loss_id": "l"})
    assert fb.loss_fn == "custom"
    with pytest.raises(ValidationError, match="unknown loss"):
        ForwardBackwardInput(data=[], loss_fn="customer")
