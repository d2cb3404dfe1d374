"""The engine's rebuild of custom loss graphs (``CustomLossProgram``): losses traced and
encoded by the client run here with the value and gradient of the original function, across
the operations of typical losses, ranks 0-2 and the argument encodings."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tinkex_clients._custom_loss_graph import encode_graph, trace_loss
from tinkex_server._custom_loss_ops import FUNCTIONS, check_graph_ops
from tinkex_server._engine.custom_loss import CustomLossProgram
from tinkex_server._engine.errors import EngineInputError
from tinkex_types import CustomLossGraph, TinkexValidationError


def _program(fn: Any, ranks: dict[str, Any]) -> CustomLossProgram:
    handle = trace_loss(fn, ranks, "s")
    graph = CustomLossGraph.from_json(encode_graph(handle).to_json())  # as the wire carries it
    return CustomLossProgram(handle.name, handle.inputs, graph)


def topk_distill(
    logprobs: torch.Tensor, teacher: torch.Tensor, index: torch.Tensor, temp: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Rank-2 logprobs [T, K], a rank-0 temperature, an int64 index, gather, log_softmax,
    logsumexp, where, slicing, getattr(shape) and a dtype conversion."""
    student = F.log_softmax(logprobs / temp, dim=-1)
    picked = torch.gather(student, 1, index)
    kl = (teacher.exp() * (teacher - student)).sum(dim=-1)
    spread = torch.logsumexp(logprobs, dim=-1) - logprobs.mean(dim=-1)
    tail = kl[1:].to(torch.float64).sum().to(torch.float32)
    safe = torch.where(spread > 0, spread, torch.zeros_like(spread)).clamp(max=float("inf"))
    width = logprobs.shape[1]
    loss = tail + 0.1 * safe.sum() - picked.sum() / width
    return loss, {"custom/kl:mean": kl.mean()}


def _inputs() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    logprobs = torch.randn(5, 3, generator=gen).log_softmax(-1).requires_grad_(True)
    teacher = torch.randn(5, 3, generator=gen).log_softmax(-1)
    index = torch.tensor([[0], [2], [1], [1], [0]])
    return [logprobs, teacher, index, torch.tensor(1.5)]


def test_a_rebuilt_loss_has_the_value_and_gradient_of_the_function() -> None:
    ranks: dict[str, Any] = {"logprobs": 2, "teacher": 2, "index": 2, "temp": 0}
    program = _program(topk_distill, ranks)
    assert program.input_names == ["teacher", "index", "temp"]
    direct_in, rebuilt_in = _inputs(), _inputs()
    want, want_metrics = topk_distill(*direct_in)
    got, got_metrics = program.run(rebuilt_in, "data[0]")
    assert torch.allclose(got, want)
    assert torch.allclose(got_metrics["custom/kl:mean"], want_metrics["custom/kl:mean"])
    want.backward()
    got.backward()
    assert rebuilt_in[0].grad is not None
    assert torch.allclose(rebuilt_in[0].grad, direct_in[0].grad)  # type: ignore[arg-type]


def test_methods_that_take_a_size_are_not_rebuilt() -> None:
    def sized(logprobs: torch.Tensor) -> Any:
        return (logprobs * logprobs.new_ones(())).sum(), {}

    with pytest.raises(EngineInputError, match="node 'new_ones' \\(call_method 'new_ones'\\)"):
        _program(sized, {"logprobs": 1})


def test_a_failing_node_is_named() -> None:
    def mismatched(logprobs: torch.Tensor, weights: torch.Tensor) -> Any:
        return (logprobs * weights).sum(), {}

    program = _program(mismatched, {"logprobs": 1, "weights": 1})
    with pytest.raises(EngineInputError) as info:
        program.run([torch.zeros(3), torch.zeros(4)], "data[2]")
    assert info.value.field == "data[2]"
    assert "node 'mul' (operator.mul)" in info.value.problem


def test_a_broadcast_past_the_size_bound_is_refused_before_it_is_computed() -> None:
    def cube(logprobs: torch.Tensor) -> Any:
        return (
            logprobs[:, None, None] * logprobs[None, :, None] * logprobs[None, None, :]
        ).sum(), {}

    program = _program(cube, {"logprobs": 1})
    small, _ = program.run([torch.ones(4)], "data[0]")
    assert small.item() == 64.0
    with pytest.raises(EngineInputError, match="broadcast to 8000000000 elements"):
        program.run([torch.ones(2000)], "data[1]")


def test_a_non_scalar_loss_is_refused() -> None:
    def per_token(logprobs: torch.Tensor) -> Any:
        return -logprobs, {}

    program = _program(per_token, {"logprobs": 1})
    with pytest.raises(EngineInputError, match=r"scalar loss, got \[3\]"):
        program.run([torch.zeros(3)], "data[0]")


def test_every_allowed_function_resolves_to_a_callable() -> None:
    from tinkex_server._engine.custom_loss import _resolve_function

    for target in FUNCTIONS:
        assert callable(_resolve_function(target)), target


def test_the_allowlist_check_needs_no_torch_objects() -> None:
    graph = CustomLossGraph.model_validate(
        {
            "nodes": [
                {"op": "placeholder", "name": "logprobs", "target": "logprobs"},
                {
                    "op": "call_function",
                    "name": "imp",
                    "target": "builtins.__import__",
                    "args": ["os"],
                },
                {"op": "output", "name": "output", "target": "output", "args": [1]},
            ]
        }
    )
    with pytest.raises(TinkexValidationError) as info:
        check_graph_ops(graph)
    assert info.value.field == "graph.nodes[1]"
    assert "node 'imp' (call_function 'builtins.__import__')" in info.value.problem
