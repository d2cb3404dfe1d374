"""AdamW over one adapter's tensors, with Tinker's ``AdamParams`` semantics.

Per step ``t`` (starting at 1), for each tensor ``p`` with accumulated gradient ``g``:

* if ``grad_clip_norm > 0``: scale every ``g`` by ``min(1, clip / (global_norm + 1e-6))``
  (as ``torch.nn.utils.clip_grad_norm_``);
* ``p <- p * (1 - lr * weight_decay)``  (decoupled decay);
* ``m <- beta1 m + (1 - beta1) g``;  ``v <- beta2 v + (1 - beta2) g^2``;
* ``p <- p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)``.

That is ``torch.optim.AdamW`` (and optax's ``adamw``). The state (``exp_avg``,
``exp_avg_sq`` per tensor, and the step counter) can be exported and restored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tinkex_server._engine.errors import EngineInputError

__all__ = ["AdamParams", "AdamW"]

#: The largest finite float32: scalars beyond it cannot multiply float32 tensors.
_FLOAT32_MAX = 3.4028234663852886e38
#: The smallest positive float32 (a subnormal); an eps below it rounds to (or near) 0.
_FLOAT32_TINY = 2.0**-149


@dataclass(frozen=True)
class AdamParams:
    """Optimizer hyper-parameters of one ``optim_step`` (defaults as in the Tinker SDK)."""

    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0

    def validate(self) -> None:
        """Raise :class:`EngineInputError` naming the first bad field."""
        for name in ("learning_rate", "beta1", "beta2", "eps", "weight_decay", "grad_clip_norm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise EngineInputError(f"adam_params.{name}", f"must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise EngineInputError(
                    f"adam_params.{name}", f"must be a finite number >= 0, got {value!r}"
                )
        for name in ("beta1", "beta2"):
            if getattr(self, name) >= 1:
                raise EngineInputError(
                    f"adam_params.{name}", f"must be < 1, got {getattr(self, name)}"
                )
        # The update multiplies float32 tensors by these: beyond float32 they cannot be
        # applied (torch refuses the scalar), so they are the caller's error, not ours.
        if abs(1 - self.learning_rate * self.weight_decay) > _FLOAT32_MAX:
            raise EngineInputError(
                "adam_params.weight_decay",
                f"learning_rate * weight_decay = {self.learning_rate * self.weight_decay:g} "
                "does not fit the float32 weights",
                "use a smaller learning_rate or weight_decay",
            )
        if self.eps > _FLOAT32_MAX:
            raise EngineInputError(
                "adam_params.eps", f"{self.eps:g} does not fit float32", "use eps <= 3.4e38"
            )
        if self.eps < _FLOAT32_TINY:  # it would round to 0: 0/0 turns untouched weights NaN
            raise EngineInputError(
                "adam_params.eps", f"{self.eps:g} rounds to 0 in float32", "use eps >= 1.5e-45"
            )


class AdamW:
    """AdamW over named parameters; hyper-parameters are given per :meth:`step`."""

    def __init__(self, params: list[tuple[str, nn.Parameter]]) -> None:
        self.params = params
        self.step_count = 0
        # The moments live in two flat buffers (one op per update over the whole adapter);
        # exp_avg / exp_avg_sq hold per-tensor views of them.
        self._sizes = [p.numel() for _, p in params]
        self._m = torch.zeros(sum(self._sizes))
        self._v = torch.zeros(sum(self._sizes))
        self.exp_avg: dict[str, Tensor] = self._views(self._m)
        self.exp_avg_sq: dict[str, Tensor] = self._views(self._v)
        self._flat_params = _flat_view([p for _, p in params])

    def _views(self, flat: Tensor) -> dict[str, Tensor]:
        parts = flat.split_with_sizes(self._sizes)
        return {n: part.view(p.shape) for (n, p), part in zip(self.params, parts, strict=True)}

    def _flat_grad(self) -> Tensor:
        if not self.params:
            return torch.zeros(0)
        return torch.cat(
            [
                p.grad.detach().reshape(-1) if p.grad is not None else p.new_zeros(p.numel())
                for _, p in self.params
            ]
        )

    def grad_norm(self) -> float:
        """Global L2 norm of the accumulated gradients (0 when there are none)."""
        return float(self._flat_grad().to(torch.float64).pow(2).sum().sqrt())

    @torch.no_grad()
    def step(self, hp: AdamParams) -> dict[str, float]:
        """Apply one update with the accumulated gradients, then clear them.

        Returns metrics: ``grad_norm:mean`` (before clipping), ``learning_rate:mean`` and
        ``step:max`` (the step counter after this update).
        """
        hp.validate()
        t = self.step_count + 1
        bc1 = 1 - hp.beta1**t
        if hp.learning_rate / bc1 > _FLOAT32_MAX:
            raise EngineInputError(
                "adam_params.learning_rate",
                f"{hp.learning_rate:g} (bias-corrected {hp.learning_rate / bc1:g}) does not "
                "fit the float32 weights",
                "use a smaller learning_rate",
            )
        g = self._flat_grad()
        norm = float(g.to(torch.float64).pow(2).sum().sqrt())
        if hp.grad_clip_norm > 0:
            clip = min(1.0, hp.grad_clip_norm / (norm + 1e-6))
            if clip != 1.0:
                g.mul_(clip)
        self.step_count = t
        bc2 = 1 - hp.beta2**t
        flat = self._flat_params
        p = (
            flat
            if flat is not None
            else torch.cat([q.detach().reshape(-1) for _, q in self.params])
        )
        if hp.weight_decay:
            p.mul_(1 - hp.learning_rate * hp.weight_decay)
        self._m.lerp_(g, 1 - hp.beta1)
        self._v.mul_(hp.beta2).addcmul_(g, g, value=1 - hp.beta2)
        denom = (self._v.sqrt() / math.sqrt(bc2)).add_(hp.eps)
        p.addcdiv_(self._m, denom, value=-hp.learning_rate / bc1)
        if flat is None:
            for (_, q), part in zip(self.params, p.split_with_sizes(self._sizes), strict=True):
                q.copy_(part.view(q.shape))
        for _, q in self.params:
            q.grad = None
        return {
            "grad_norm:mean": norm,
            "learning_rate:mean": float(hp.learning_rate),
            "step:max": float(t),
        }

    def state_tensors(self) -> dict[str, Tensor]:
        """``<name>.exp_avg`` and ``<name>.exp_avg_sq`` for every parameter."""
        out: dict[str, Tensor] = {}
        for name, _ in self.params:
            out[f"{name}.exp_avg"] = self.exp_avg[name].clone()
            out[f"{name}.exp_avg_sq"] = self.exp_avg_sq[name].clone()
        return out

    def load_state_tensors(self, tensors: Mapping[str, Tensor], step: int, *, source: str) -> None:
        """Restore moments saved by :meth:`state_tensors` and the step counter."""
        for name, p in self.params:
            for kind in ("exp_avg", "exp_avg_sq"):
                key = f"{name}.{kind}"
                value = tensors.get(key)
                if value is None or tuple(value.shape) != tuple(p.shape):
                    raise EngineInputError(
                        source,
                        f"optimizer state {key} is missing or has the wrong shape",
                        "load a checkpoint saved by the same kind of model, or load "
                        "without optimizer state",
                    )
        for name, _ in self.params:
            self.exp_avg[name].copy_(tensors[f"{name}.exp_avg"].to(torch.float32))
            self.exp_avg_sq[name].copy_(tensors[f"{name}.exp_avg_sq"].to(torch.float32))
        self.step_count = int(step)

    def reset(self) -> None:
        """Forget the moments and the step counter."""
        self.step_count = 0
        self._m.zero_()
        self._v.zero_()


def _flat_view(params: list[nn.Parameter]) -> Tensor | None:
    """One flat view over ``params`` when they are consecutive in one storage (an
    :class:`~tinkex_server._engine.lora.Adapter`'s are), else ``None``."""
    if not params:
        return None
    first = params[0]
    storage = first.untyped_storage().data_ptr()
    offset = first.storage_offset()
    for p in params:
        if (
            p.untyped_storage().data_ptr() != storage
            or p.storage_offset() != offset
            or not p.is_contiguous()
        ):
            return None
        offset += p.numel()
    return first.detach().as_strided((offset - first.storage_offset(),), (1,))
