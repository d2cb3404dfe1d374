"""Training input checks: datums -> validated tensors, before any gradient is touched.

Which ``loss_fn_inputs`` a datum needs (and may carry) comes from the loss table
(:data:`tinkex_types.LOSSES`); every float input has one value per target token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from tinkex_server._engine.errors import EngineInputError
from tinkex_server._engine.losses import check_loss_inputs
from tinkex_server._engine.registry import BaseModel
from tinkex_server._engine.types import Datum, FlatTensor
from tinkex_types import LossSpec

__all__ = ["Prepared", "flat", "microbatches", "prepare_data", "to_tensor"]


@dataclass
class Prepared:
    """One validated datum."""

    index: int
    tokens: Tensor  # [N] long
    targets: Tensor  # [N] or [N, K] long
    inputs: dict[str, Tensor]  # float32, shape of targets


def to_tensor(value: Any, field: str) -> Tensor:
    """A TensorData-like object, tensor, array or (nested) list -> tensor."""
    try:
        if isinstance(value, Tensor):
            return value.detach()
        data = getattr(value, "data", None)
        if isinstance(data, list) and hasattr(value, "shape"):
            t = torch.tensor(data)
            shape = value.shape
            return t.reshape(list(shape)) if shape is not None else t
        if hasattr(value, "__array__"):
            import numpy as np

            return torch.from_numpy(np.ascontiguousarray(np.asarray(value)))
        return torch.tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise EngineInputError(
            field, f"cannot be read as a tensor ({exc})", "pass a list of numbers or TensorData"
        ) from None


def flat(t: Tensor, dtype: Literal["float32", "int64"] = "float32") -> FlatTensor:
    """A tensor as a :class:`FlatTensor`."""
    data = t.reshape(-1).tolist()
    return FlatTensor(data=data, dtype=dtype, shape=list(t.shape))


def _datum_tokens(datum: Any, where: str) -> list[int]:
    """Token ids of an engine :class:`Datum` (``tokens``) or a wire ``Datum``
    (``model_input.to_ints()``; image chunks are refused)."""
    tokens = getattr(datum, "tokens", None)
    if isinstance(tokens, Tensor):
        return list(tokens.tolist())
    if tokens is not None:
        return list(tokens)
    model_input = getattr(datum, "model_input", None)
    to_ints = getattr(model_input, "to_ints", None)
    if to_ints is None:
        raise EngineInputError(f"{where}.model_input", "missing", "give the input token ids")
    try:
        return list(to_ints())
    except ValueError as exc:
        raise EngineInputError(
            f"{where}.model_input", str(exc), "this server only takes text token chunks"
        ) from None


def _tokens(base: BaseModel, datum: Any, where: str) -> Tensor:
    vocab = base.config.vocab_size
    tokens = to_tensor(_datum_tokens(datum, where), f"{where}.model_input")
    if tokens.ndim != 1 or tokens.numel() == 0 or tokens.is_floating_point():
        raise EngineInputError(
            f"{where}.model_input", "must be a non-empty list of integer token ids"
        )
    tokens = tokens.to(torch.long)
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab:
        raise EngineInputError(
            f"{where}.model_input",
            f"token id out of range [0, {vocab})",
            "tokenize with this model's tokenizer",
        )
    n = tokens.shape[0]
    if n > base.config.max_position_embeddings:
        raise EngineInputError(
            f"{where}.model_input",
            f"has {n} tokens, more than the context length {base.config.max_position_embeddings}",
            "split or truncate the sequence",
        )
    return tokens


def _targets(base: BaseModel, value: Any, n: int, where: str) -> Tensor:
    field = f"{where}.loss_fn_inputs.target_tokens"
    vocab = base.config.vocab_size
    targets = to_tensor(value, field)
    if targets.is_floating_point() and not torch.equal(targets, targets.round()):
        raise EngineInputError(field, "must hold integers")
    targets = targets.to(torch.long)
    if targets.ndim not in (1, 2) or targets.shape[0] != n:
        raise EngineInputError(
            field,
            f"has shape {list(targets.shape)}, but the model input has {n} tokens",
            f"give {n} targets (shape [{n}] or [{n}, K])",
        )
    if int(targets.min()) < 0 or int(targets.max()) >= vocab:
        raise EngineInputError(field, f"token id out of range [0, {vocab})")
    return targets


def _float_input(value: Any, targets: Tensor, field: str) -> Tensor:
    t = to_tensor(value, field).to(torch.float32)
    if tuple(t.shape) != tuple(targets.shape):
        raise EngineInputError(
            field,
            f"has shape {list(t.shape)}, target_tokens has {list(targets.shape)}",
            "give one value per target token",
        )
    if not bool(torch.isfinite(t).all()):
        raise EngineInputError(field, "contains NaN or infinity")
    return t


def _prepare_one(base: BaseModel, datum: Any, index: int, spec: LossSpec) -> Prepared:
    where = f"data[{index}]"
    tokens = _tokens(base, datum, where)
    lfi: Mapping[str, Any] = getattr(datum, "loss_fn_inputs", None) or {}
    required = spec.required_inputs
    missing = [k for k in required if k not in lfi]
    if missing:
        raise EngineInputError(
            f"{where}.loss_fn_inputs",
            f"{spec.name} needs {', '.join(missing)}",
            f"give {', '.join(required)}, each with one entry per input token",
        )
    targets = _targets(base, lfi["target_tokens"], tokens.shape[0], where)
    inputs: dict[str, Tensor] = {}
    for key in (*required, *(k for k in spec.optional_inputs if k in lfi)):
        if key != "target_tokens":
            inputs[key] = _float_input(lfi[key], targets, f"{where}.loss_fn_inputs.{key}")
    check_loss_inputs(spec, inputs, where)
    return Prepared(index, tokens, targets, inputs)


def prepare_data(base: BaseModel, data: Sequence[Datum | Any], spec: LossSpec) -> list[Prepared]:
    """Validate every datum of a request for the loss ``spec`` (raises on the first bad one)."""
    if isinstance(data, str | bytes) or not isinstance(data, Sequence) or not data:
        raise EngineInputError("data", "must be a non-empty list of datums")
    return [_prepare_one(base, datum, i, spec) for i, datum in enumerate(data)]


def microbatches(items: list[Prepared], max_tokens: int) -> list[list[Prepared]]:
    """Consecutive groups whose padded size (rows x longest row) stays within
    ``max_tokens`` (a single longer datum gets a group of its own)."""
    batches: list[list[Prepared]] = []
    cur: list[Prepared] = []
    width = 0
    for item in items:
        n = item.tokens.shape[0]
        new_width = max(width, n)
        if cur and new_width * (len(cur) + 1) > max_tokens:
            batches.append(cur)
            cur, new_width = [], n
        cur.append(item)
        width = new_width
    if cur:
        batches.append(cur)
    return batches
