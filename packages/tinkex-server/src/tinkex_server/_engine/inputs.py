"""Training input checks: datums -> validated tensors, before any gradient is touched.

Which ``loss_fn_inputs`` a datum needs (and may carry) comes from the loss table
(:data:`tinkex_types.LOSSES`); every float input has one value per target token.
"""

from __future__ import annotations

import array
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


def _list_tensor(values: list[Any]) -> Tensor:
    """``torch.tensor(values)``, built through :mod:`array` (one C pass, no per-item type
    inference) when every item is an ``int`` (-> int64) or every item a ``float`` (->
    float32, the same rounding): the same tensor, several times faster."""
    if values:
        kind = type(values[0])
        try:
            if kind is int:
                return torch.frombuffer(array.array("q", values), dtype=torch.int64)
            if kind is float and all(type(v) is float for v in values):
                return torch.frombuffer(array.array("f", values), dtype=torch.float32)
        except (TypeError, OverflowError):
            pass  # not all ints (floats, nested lists...), or beyond the C type
    return torch.tensor(values)


def to_tensor(value: Any, field: str) -> Tensor:
    """A TensorData-like object, tensor, array or (nested) list -> tensor."""
    try:
        if isinstance(value, Tensor):
            return value.detach()
        data = getattr(value, "data", None)
        if isinstance(data, list) and hasattr(value, "shape"):
            t = _list_tensor(data)
            shape = value.shape
            return t.reshape(list(shape)) if shape is not None else t
        if hasattr(value, "__array__"):
            import numpy as np

            return torch.from_numpy(np.ascontiguousarray(np.asarray(value)))
        if isinstance(value, list):
            return _list_tensor(value)
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


def _token_ids(base: BaseModel, datum: Any, where: str, checked: bool) -> Tensor:
    """The datum's token ids as a long tensor, checked for shape, type, length and (when
    ``checked``) range."""
    field = f"{where}.model_input"
    tokens = to_tensor(_datum_tokens(datum, where), field)
    if tokens.ndim != 1 or tokens.numel() == 0 or tokens.is_floating_point():
        raise EngineInputError(field, "must be a non-empty list of integer token ids")
    if tokens.dtype != torch.long:
        tokens = tokens.to(torch.long)
    if checked:
        _check_ids(base, tokens, field, "tokenize with this model's tokenizer")
    n = tokens.shape[0]
    if n > base.config.max_position_embeddings:
        raise EngineInputError(
            field,
            f"has {n} tokens, more than the context length {base.config.max_position_embeddings}",
            "split or truncate the sequence",
        )
    return tokens


def _check_ids(base: BaseModel, ids: Tensor, field: str, fix: str | None = None) -> None:
    vocab = base.config.vocab_size
    lo, hi = torch.aminmax(ids)
    if int(lo) < 0 or int(hi) >= vocab:
        raise EngineInputError(field, f"token id out of range [0, {vocab})", fix)


def _target_ids(base: BaseModel, value: Any, n: int, where: str, checked: bool) -> Tensor:
    """The datum's targets as a long tensor, checked for type, shape and (when
    ``checked``) range."""
    field = f"{where}.loss_fn_inputs.target_tokens"
    targets = to_tensor(value, field)
    if targets.is_floating_point() and not torch.equal(targets, targets.round()):
        raise EngineInputError(field, "must hold integers")
    if targets.dtype != torch.long:
        targets = targets.to(torch.long)
    if targets.ndim not in (1, 2) or targets.shape[0] != n:
        raise EngineInputError(
            field,
            f"has shape {list(targets.shape)}, but the model input has {n} tokens",
            f"give {n} targets (shape [{n}] or [{n}, K])",
        )
    if checked:
        _check_ids(base, targets, field)
    return targets


def _tokens(base: BaseModel, datum: Any, where: str) -> Tensor:
    """The datum's token ids, every check made (custom losses use it too)."""
    return _token_ids(base, datum, where, checked=True)


def _targets(base: BaseModel, value: Any, n: int, where: str) -> Tensor:
    """The datum's ``target_tokens``, every check made (custom losses use it too)."""
    return _target_ids(base, value, n, where, checked=True)


def _float_input(value: Any, targets: Tensor, field: str, checked: bool) -> Tensor:
    """A float input as float32 of the targets' shape, finite when ``checked``."""
    t = to_tensor(value, field)
    if t.dtype != torch.float32:
        t = t.to(torch.float32)
    if tuple(t.shape) != tuple(targets.shape):
        raise EngineInputError(
            field,
            f"has shape {list(t.shape)}, target_tokens has {list(targets.shape)}",
            "give one value per target token",
        )
    if checked and not bool(torch.isfinite(t).all()):
        raise EngineInputError(field, "contains NaN or infinity")
    return t


def _prepare_one(
    base: BaseModel, datum: Any, index: int, spec: LossSpec, checked: bool = True
) -> Prepared:
    """One datum as tensors, every check in order (the first failing one raises). Without
    ``checked`` the value checks (token ids in range, finite floats) are left to the
    caller."""
    where = f"data[{index}]"
    tokens = _token_ids(base, datum, where, checked)
    lfi: Mapping[str, Any] = getattr(datum, "loss_fn_inputs", None) or {}
    required = spec.required_inputs
    missing = [k for k in required if k not in lfi]
    if missing:
        raise EngineInputError(
            f"{where}.loss_fn_inputs",
            f"{spec.name} needs {', '.join(missing)}",
            f"give {', '.join(required)}, each with one entry per input token",
        )
    targets = _target_ids(base, lfi["target_tokens"], tokens.shape[0], where, checked)
    inputs: dict[str, Tensor] = {}
    for key in (*required, *(k for k in spec.optional_inputs if k in lfi)):
        if key != "target_tokens":
            field = f"{where}.loss_fn_inputs.{key}"
            inputs[key] = _float_input(lfi[key], targets, field, checked)
    check_loss_inputs(spec, inputs, where)
    return Prepared(index, tokens, targets, inputs)


def prepare_data(base: BaseModel, data: Sequence[Datum | Any], spec: LossSpec) -> list[Prepared]:
    """Validate every datum of a request for the loss ``spec`` (raises on the first bad one).

    The value checks (token ids in range, finite floats) run over all datums at once; when
    anything is wrong, the datums are checked again one by one so that the error raised is
    the first one in datum order."""
    if isinstance(data, str | bytes) or not isinstance(data, Sequence) or not data:
        raise EngineInputError("data", "must be a non-empty list of datums")
    try:
        items = [_prepare_one(base, datum, i, spec, checked=False) for i, datum in enumerate(data)]
    except EngineInputError:
        items = None
    if items is not None and _values_ok(base, items):
        return items
    return [_prepare_one(base, datum, i, spec) for i, datum in enumerate(data)]


def _values_ok(base: BaseModel, items: list[Prepared]) -> bool:
    ids = torch.cat([t for it in items for t in (it.tokens, it.targets.reshape(-1))])
    lo, hi = torch.aminmax(ids)
    if int(lo) < 0 or int(hi) >= base.config.vocab_size:
        return False
    floats = [v.reshape(-1) for it in items for v in it.inputs.values()]
    return not floats or bool(torch.isfinite(torch.cat(floats)).all())


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
