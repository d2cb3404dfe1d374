"""Orthogonality of the batch"s rows."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from tinkex_regularizers._base import Metrics, RegularizerBatch
from tinkex_regularizers._regularizer import Regularizer
from tinkex_regularizers._targets import NORM_FLOOR, TargetOptions, num, target_rows

__all__ = ["Orthogonality", "OrthogonalityOptions"]


class OrthogonalityOptions(TargetOptions):
    mode: Literal["soft", "hard", "spectral"] = "soft"
    normalize: bool = True


class Orthogonality(Regularizer[OrthogonalityOptions]):
    """Orthogonality of the batch's rows.

    ``X`` is the ``N × L`` matrix whose row ``i`` is datum ``i``'s target (zero-padded to
    the longest row; masked positions are zeroed, not dropped). With ``normalize`` (default)
    each row is divided by ``max(‖row‖₂, 1e-8)``. ``G = X·Xᵀ``;
    ``soft`` (default) = ``Σ_{i≠j} G_ij²``; ``hard`` = ``Σ (G − I)²``;
    ``spectral`` = ``(tr G − N)² + Σ_{i≠j} G_ij²``. The Elixir ``axis`` option (3-D
    reshapes over a vocabulary axis) has no counterpart: per-token logprobs have no
    vocabulary axis. Metric: ``orthogonality`` (the value).
    """

    name: ClassVar[str] = "orthogonality"
    Options = OrthogonalityOptions

    def compute(self, batch: RegularizerBatch) -> tuple[torch.Tensor, Metrics]:
        o = self.options
        rows = target_rows(batch, o, keep_positions=True)
        if not rows:
            zero = batch.zero()
            return zero, {"orthogonality": 0.0}
        width = max(r.numel() for r in rows)
        x = torch.stack([F.pad(r, (0, width - r.numel())) for r in rows])
        if o.normalize:
            x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(NORM_FLOOR)
        g = x @ x.T
        n = g.shape[0]
        off = g - torch.diag_embed(torch.diagonal(g))
        if o.mode == "soft":
            value = off.square().sum()
        elif o.mode == "hard":
            value = (g - torch.eye(n, dtype=g.dtype, device=g.device)).square().sum()
        else:
            value = (torch.trace(g) - n).square() + off.square().sum()
        return value, {"orthogonality": num(value)}
