"""Running a created custom loss (``loss_fn="custom"``) in ``forward``/``forward_backward``.

:class:`CustomLossProgram` rebuilds a :class:`tinkex_types.CustomLossGraph` from the
allowlist of :mod:`tinkex_server._custom_loss_ops` only: every function, method, attribute
and constant is looked up in those tables and then in its own module; no other name is
resolved, nothing is evaluated or imported. The program runs node by node, once per datum:
``fn(logprobs, *inputs) -> (scalar loss, {metric: scalar})``. The request's loss is the sum
over datums (``loss:sum``); ``custom/<name>:sum`` metrics add up over datums and
``:mean`` metrics are averaged. Its gradient is therefore the one a client computes with
``forward_backward_custom`` from the same function.
"""

from __future__ import annotations

import builtins
import importlib
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

from tinkex_server._custom_loss_ops import (
    ALLOWED_METHODS,
    CONSTANTS,
    FUNCTIONS,
    MAX_NODE_ELEMENTS,
    check_graph_ops,
)
from tinkex_server._engine.adapters import EngineCore, Slot
from tinkex_server._engine.errors import EngineInputError
from tinkex_server._engine.inputs import (
    Prepared,
    _targets,
    _tokens,
    flat,
    microbatches,
    to_tensor,
)
from tinkex_server._engine.registry import BaseModel
from tinkex_server._engine.types import Datum, FlatTensor, ForwardResult
from tinkex_types import CustomLossGraph, CustomLossInput, TinkexValidationError
from tinkex_types._custom_loss_graph import NodeRef, TorchConstant

__all__ = ["CustomLossMixin", "CustomLossProgram", "CustomPrepared"]

_MODULES = {"torch": torch, "operator": operator, "math": math, "builtins": builtins}


def _resolve_function(target: str) -> Callable[..., Any]:
    module_name, attr = FUNCTIONS[target]
    module = _MODULES.get(module_name) or importlib.import_module(module_name)
    fn: Callable[..., Any] = getattr(module, attr)
    return fn


def _constant(value: TorchConstant) -> Any:
    return getattr(torch, CONSTANTS[value.kind][value.value])


def _bind(value: Any, env: Mapping[str, Any]) -> Any:
    """A decoded argument with node references replaced by their values."""
    if isinstance(value, NodeRef):
        return env[value.name]
    if isinstance(value, TorchConstant):
        return _constant(value)
    if isinstance(value, list):
        return [_bind(x, env) for x in value]
    if isinstance(value, tuple):
        return tuple(_bind(x, env) for x in value)
    if isinstance(value, dict):
        return {k: _bind(x, env) for k, x in value.items()}
    if isinstance(value, slice):
        return slice(_bind(value.start, env), _bind(value.stop, env), _bind(value.step, env))
    return value


def _check_broadcast(values: Sequence[Any]) -> None:
    """Refuse, before computing, an operation whose tensor operands broadcast to more than
    :data:`MAX_NODE_ELEMENTS` elements (``x[:, None, None] * y[None, :, None] * ...``)."""
    shapes = [v.shape for v in values if isinstance(v, Tensor)]
    if len(shapes) < 2:
        return
    try:
        size = math.prod(torch.broadcast_shapes(*shapes))  # type: ignore[no-untyped-call]
    except RuntimeError:
        return  # not an elementwise combination; the operation itself decides
    if size > MAX_NODE_ELEMENTS:
        raise ValueError(f"its operands broadcast to {size} elements, over {MAX_NODE_ELEMENTS}")


@dataclass(frozen=True)
class _Step:
    name: str
    op: str
    target: str
    call: Callable[..., Any] | None
    args: list[Any]
    kwargs: dict[str, Any]


class CustomLossProgram:
    """A checked, rebuilt custom loss; call :meth:`run` once per datum."""

    def __init__(self, name: str, inputs: Sequence[CustomLossInput], graph: CustomLossGraph):
        try:
            check_graph_ops(graph)
        except TinkexValidationError as exc:
            raise EngineInputError(exc.field, exc.problem, exc.fix) from None
        self.name = name
        self.inputs = list(inputs)
        self._steps: list[_Step] = []
        for i, node in enumerate(graph.nodes):
            args, kwargs = node.decoded(f"graph.nodes[{i}]")
            call = _resolve_function(node.target) if node.op == "call_function" else None
            self._steps.append(_Step(node.name, node.op, node.target, call, args, kwargs))

    @property
    def input_names(self) -> list[str]:
        """The ``loss_fn_inputs`` keys the loss reads, in order (``logprobs`` excluded)."""
        return [x.name for x in self.inputs[1:]]

    def _call(self, step: _Step, env: Mapping[str, Any]) -> Any:
        args = [_bind(a, env) for a in step.args]
        kwargs = {k: _bind(v, env) for k, v in step.kwargs.items()}
        _check_broadcast([*args, *kwargs.values()])
        if step.op == "call_function":
            assert step.call is not None
            result = step.call(*args, **kwargs)
        else:
            assert step.target in ALLOWED_METHODS
            receiver = args[0]
            if not isinstance(receiver, Tensor):
                raise TypeError(f"{step.target}() is called on a {type(receiver).__name__}")
            result = getattr(receiver, step.target)(*args[1:], **kwargs)
        if isinstance(result, Tensor) and result.numel() > MAX_NODE_ELEMENTS:
            raise ValueError(f"its result has {result.numel()} elements, over {MAX_NODE_ELEMENTS}")
        return result

    def run(self, values: Sequence[Tensor], where: str) -> tuple[Tensor, dict[str, Tensor]]:
        """``(loss, metrics)`` of one datum; a failing node raises :class:`EngineInputError`
        naming it."""
        env: dict[str, Any] = {}
        feed = iter(values)
        for step in self._steps:
            if step.op == "placeholder":
                env[step.name] = next(feed)
            elif step.op == "output":
                loss, metrics = _bind(step.args[0], env)
                return self._checked(loss, metrics, where)
            else:
                try:
                    env[step.name] = self._call(step, env)
                except (RuntimeError, TypeError, ValueError, IndexError, ArithmeticError) as exc:
                    raise EngineInputError(
                        where,
                        f"custom loss {self.name!r} failed at node {step.name!r} "
                        f"({step.target}): {exc}",
                        "check the shapes and dtypes of the loss_fn_inputs it reads",
                    ) from None
        raise EngineInputError("graph", "has no output node")  # the model forbids this

    def _checked(self, loss: Any, metrics: Any, where: str) -> tuple[Tensor, dict[str, Tensor]]:
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            shape = list(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise EngineInputError(
                where,
                f"custom loss {self.name!r} must return a scalar loss, got {shape}",
                "reduce it, e.g. with .sum()",
            )
        out: dict[str, Tensor] = {}
        for key, value in metrics.items():
            if not isinstance(value, Tensor) or value.numel() != 1:
                raise EngineInputError(
                    where, f"custom loss {self.name!r} metric {key!r} is not a scalar tensor"
                )
            out[key] = value
        return loss, out


@dataclass
class CustomPrepared:
    """One validated datum of a custom loss: tokens, targets and the inputs it reads."""

    index: int
    tokens: Tensor
    targets: Tensor
    values: list[Tensor]


def _input_value(value: Any, rank: int, field: str) -> Tensor:
    t = to_tensor(value, field)
    if t.ndim != rank:
        raise EngineInputError(
            field, f"has rank {t.ndim}, but the custom loss declared rank {rank}"
        )
    if t.is_floating_point():
        t = t.to(torch.float32)
        if not bool(torch.isfinite(t).all()):
            raise EngineInputError(field, "contains NaN or infinity")
    return t


def _prepare(
    base: BaseModel, data: Sequence[Datum | Any], program: CustomLossProgram
) -> list[CustomPrepared]:
    if isinstance(data, str | bytes) or not isinstance(data, Sequence) or not data:
        raise EngineInputError("data", "must be a non-empty list of datums")
    out: list[CustomPrepared] = []
    for i, datum in enumerate(data):
        where = f"data[{i}]"
        tokens = _tokens(base, datum, where)
        lfi: Mapping[str, Any] = getattr(datum, "loss_fn_inputs", None) or {}
        wanted = ["target_tokens", *program.input_names]
        missing = [k for k in wanted if k not in lfi]
        if missing:
            raise EngineInputError(
                f"{where}.loss_fn_inputs",
                f"custom loss {program.name!r} reads {', '.join(missing)}, which are missing",
                f"give {', '.join(wanted)}",
            )
        targets = _targets(base, lfi["target_tokens"], tokens.shape[0], where)
        if targets.ndim != program.inputs[0].rank:
            raise EngineInputError(
                f"{where}.loss_fn_inputs.target_tokens",
                f"has rank {targets.ndim}, but the custom loss declared logprobs with rank "
                f"{program.inputs[0].rank}",
            )
        values = [
            _input_value(lfi[x.name], x.rank, f"{where}.loss_fn_inputs.{x.name}")
            for x in program.inputs[1:]
        ]
        # A dry run on zero logprobs: a loss that fails on this datum's shapes fails here,
        # before any gradient is accumulated.
        with torch.no_grad():
            program.run([torch.zeros(targets.shape), *values], where)
        out.append(CustomPrepared(i, tokens, targets, values))
    return out


def _reduce_metrics(sums: dict[str, float], count: int) -> dict[str, float]:
    return {k: v / count if k.endswith(":mean") else v for k, v in sums.items()}


class CustomLossMixin(EngineCore):
    """``forward``/``forward_backward`` with a created custom loss."""

    def _custom_microbatch(
        self,
        slot: Slot,
        mb: list[CustomPrepared],
        program: CustomLossProgram,
        outputs: list[dict[str, FlatTensor]],
        metric_sums: dict[str, float],
    ) -> tuple[Tensor | None, float]:
        model = slot.base.module
        lora = slot.adapter.context()
        width = max(it.tokens.shape[0] for it in mb)
        tokens = torch.zeros(len(mb), width, dtype=torch.long)
        for row, it in enumerate(mb):
            tokens[row, : it.tokens.shape[0]] = it.tokens
        hidden = model.hidden_states(tokens, lora=lora)
        mb_loss: Tensor | None = None
        total = 0.0
        for row, it in enumerate(mb):
            logits = model.logits(hidden[row, : it.tokens.shape[0]], lora)
            idx = it.targets if it.targets.ndim == 2 else it.targets[:, None]
            lp = logits.gather(-1, idx) - torch.logsumexp(logits, dim=-1)[:, None]
            if it.targets.ndim == 1:
                lp = lp[:, 0]
            loss, metrics = program.run([lp, *it.values], f"data[{it.index}]")
            mb_loss = loss if mb_loss is None else mb_loss + loss
            outputs[it.index] = {"logprobs": flat(lp.detach())}
            total += float(loss.detach().to(torch.float64))
            for key, value in metrics.items():
                metric_sums[key] = metric_sums.get(key, 0.0) + float(value.detach().sum())
        return mb_loss, total

    def run_custom_loss(
        self,
        model_id: str,
        data: Sequence[Datum | Any],
        program: CustomLossProgram,
        backward: bool,
    ) -> ForwardResult:
        """``forward`` (``backward=False``) or ``forward_backward`` with ``program``."""
        with self._lock:
            if backward:
                slot = self._training_slot(model_id, "create a training model")
            else:
                slot = self._slot(model_id)
            items = _prepare(slot.base, data, program)
            outputs: list[dict[str, FlatTensor]] = [{} for _ in items]
            sums: dict[str, float] = {}
            total = 0.0
            groups = microbatches(cast(list[Prepared], items), self.max_microbatch_tokens)
            for mb in cast(list[list[CustomPrepared]], groups):
                with torch.set_grad_enabled(backward):
                    mb_loss, mb_total = self._custom_microbatch(slot, mb, program, outputs, sums)
                    total += mb_total
                    if backward and mb_loss is not None and mb_loss.requires_grad:
                        torch.autograd.backward([mb_loss])
            metrics = {"loss:sum": total, **_reduce_metrics(sums, len(items))}
            return ForwardResult(loss_fn_outputs=outputs, metrics=metrics)
