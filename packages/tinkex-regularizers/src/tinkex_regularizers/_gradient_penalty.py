"""The gradient penalty: how far the loss gradient"s norm is from a target."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import pydantic
import torch

from tinkex_regularizers._base import Metrics, RegularizerBatch, loss_tensor
from tinkex_regularizers._regularizer import Regularizer
from tinkex_regularizers._targets import ReferenceOptions, num, reference_rows
from tinkex_types import TinkexValidationError

__all__ = ["GradientPenalty", "GradientPenaltyOptions"]


class GradientPenaltyOptions(ReferenceOptions):
    loss_fn: Callable[..., Any] | None = None
    mode: Literal["output", "interpolated"] = "output"
    target_norm: float = pydantic.Field(1.0, ge=0.0, allow_inf_nan=False)
    seed: int = 0


class GradientPenalty(Regularizer[GradientPenaltyOptions]):
    """Gradient penalty: ``(‖∇_z L(z)‖₂ − target_norm)²``.

    ``L`` is ``loss_fn`` when given (``(data, logprobs) -> loss | (loss, metrics)``), else
    the pipeline's base loss. ``mode="output"`` (default): ``z`` = the logprobs.
    ``mode="interpolated"``: ``z_i = ε_i·lp_i + (1 − ε_i)·ref_i`` with one ``ε_i ~ U(0, 1)``
    per datum, drawn from a generator seeded with ``seed`` that advances on every call, and
    ``ref`` resolved like :class:`KLDivergence`'s reference. The inner gradient uses
    ``create_graph=True``, so the penalty is itself differentiable (second-order
    autograd). A loss that is linear in ``z`` has a constant gradient, hence a zero
    penalty gradient. Metric: ``gradient_norm`` (``‖∇_z L‖₂``).
    """

    name: ClassVar[str] = "gradient_penalty"
    Options = GradientPenaltyOptions

    def __init__(self, options: Any = None, /, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._generator = torch.Generator().manual_seed(self.options.seed)
        self._lock = threading.Lock()

    def compute(self, batch: RegularizerBatch) -> tuple[torch.Tensor, Metrics]:
        o = self.options
        loss_fn = o.loss_fn if o.loss_fn is not None else batch.base_loss
        if loss_fn is None:
            raise TinkexValidationError(
                "gradient_penalty.loss_fn",
                "no loss to differentiate: no loss_fn option and no pipeline base loss",
                "give loss_fn=(data, logprobs) -> loss, or use it in a pipeline with base_loss",
            )
        if len(batch) == 0:
            return batch.zero(), {"gradient_norm": 0.0}
        lps = [
            lp if lp.requires_grad else lp.detach().requires_grad_(True) for lp in batch.logprobs
        ]
        if o.mode == "output":
            z = lps
        else:
            refs = reference_rows(batch, o, self.name)
            with self._lock:
                eps = torch.rand(len(lps), generator=self._generator, dtype=torch.float64)
            z = [
                float(e) * lp + (1.0 - float(e)) * ref.reshape(lp.shape)
                for e, lp, ref in zip(eps.tolist(), lps, refs, strict=True)
            ]
        loss = loss_tensor(loss_fn(list(batch.data), list(z)), "gradient_penalty.loss_fn")
        if loss.requires_grad:
            grads = torch.autograd.grad(loss, z, create_graph=True, allow_unused=True)
            flat = [
                (g if g is not None else torch.zeros_like(t)).reshape(-1)
                for g, t in zip(grads, z, strict=True)
            ]
            norm = torch.linalg.vector_norm(torch.cat(flat))
        else:
            norm = batch.zero()
        value = (norm - o.target_norm).square()
        return value, {"gradient_norm": num(norm)}
