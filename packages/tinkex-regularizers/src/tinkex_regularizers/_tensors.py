"""Turning datum fields (``loss_fn_inputs`` values) into torch tensors.

Data arrive as ``tinkex_types.Datum`` models, as plain mappings with a ``loss_fn_inputs``
key, or as anything with a ``loss_fn_inputs`` attribute. Field values may be torch tensors,
``TensorData``-like objects (``to_torch()`` or ``data``/``shape``), mappings in the wire
form ``{"data": [...], "shape": [...]}``, numpy arrays or nested lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from tinkex_types import TinkexValidationError

__all__ = ["as_tensor", "loss_fn_inputs_of"]


def loss_fn_inputs_of(datum: Any) -> Mapping[str, Any]:
    """The ``loss_fn_inputs`` mapping of a datum (attribute or mapping key); ``{}`` if none."""
    if isinstance(datum, Mapping):
        inputs = datum.get("loss_fn_inputs")
    else:
        inputs = getattr(datum, "loss_fn_inputs", None)
    if inputs is None:
        return {}
    if not isinstance(inputs, Mapping):
        raise TinkexValidationError(
            "loss_fn_inputs",
            f"expected a mapping of name to tensor, got {type(inputs).__name__}",
            "give each datum loss_fn_inputs={name: TensorData | tensor | list}",
        )
    return inputs


def as_tensor(
    value: Any,
    *,
    where: str,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Convert ``value`` to a tensor (detached when it was a tensor already).

    ``where`` names the value in error messages (e.g. ``"data[2].loss_fn_inputs['weights']"``).
    """
    tensor: torch.Tensor
    try:
        if isinstance(value, torch.Tensor):
            tensor = value.detach()
        elif hasattr(value, "to_torch") and callable(value.to_torch):
            tensor = value.to_torch()
        elif isinstance(getattr(value, "data", None), list | tuple):  # TensorData-like
            tensor = _from_wire(value.data, getattr(value, "shape", None), dtype)
        elif isinstance(value, Mapping) and "data" in value:
            tensor = _from_wire(value["data"], value.get("shape"), dtype)
        else:
            tensor = torch.as_tensor(value, dtype=dtype)  # lists: no float32 detour
    except TinkexValidationError:
        raise
    except Exception as exc:
        raise TinkexValidationError(
            where,
            f"cannot be turned into a tensor ({type(value).__name__}: {exc})",
            "give a torch tensor, a TensorData, a numpy array or a list of numbers",
        ) from exc
    if not isinstance(tensor, torch.Tensor):  # a foreign to_torch() returning something else
        raise TinkexValidationError(
            where, f"to_torch() returned {type(tensor).__name__}, not a tensor", None
        )
    if dtype is not None or device is not None:
        tensor = tensor.to(dtype=dtype or tensor.dtype, device=device or tensor.device)
    return tensor


def _from_wire(data: Any, shape: Sequence[int] | None, dtype: torch.dtype | None) -> torch.Tensor:
    tensor = torch.as_tensor(list(data), dtype=dtype)
    if shape is not None:
        tensor = tensor.reshape(list(shape))
    return tensor
