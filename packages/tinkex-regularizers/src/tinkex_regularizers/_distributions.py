"""Entropy, KL divergence and consistency: regularizers of the token distributions."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import pydantic
import torch

from tinkex_regularizers._base import Metrics, RegularizerBatch, RegularizerOptions
from tinkex_regularizers._regularizer import Regularizer
from tinkex_regularizers._targets import (
    ENTROPY_FLOOR,
    KL_CLIP,
    KL_P_FLOOR,
    NORM_FLOOR,
    Reduction,
    ReferenceOptions,
    apply_mask,
    concat_rows,
    num,
    reduce,
    reference_rows,
    stack_rows,
)
from tinkex_types import TinkexValidationError

__all__ = [
    "Consistency",
    "ConsistencyOptions",
    "Entropy",
    "EntropyOptions",
    "KLDivergence",
    "KLDivergenceOptions",
    "entropy_row",
    "kl_row",
]


class EntropyOptions(RegularizerOptions):
    mode: Literal["minimize", "maximize"] = "minimize"
    reduction: Reduction = "mean"
    normalize: bool = False
    temperature: float = pydantic.Field(1.0, gt=0.0, allow_inf_nan=False)
    mask_field: str | None = None


def entropy_row(
    lp: torch.Tensor, *, temperature: float = 1.0, normalize: bool = False
) -> torch.Tensor:
    """``H = −Σ_{lp > −50} exp(lp)·lp`` over one row (after optional tempering)."""
    if temperature != 1.0 and lp.numel():
        lp = torch.log_softmax(lp / temperature, dim=0)
    keep = lp > ENTROPY_FLOOR
    safe = torch.where(keep, lp, torch.zeros_like(lp))
    h = -torch.where(keep, safe.exp() * safe, torch.zeros_like(lp)).sum()
    n = lp.numel()
    if normalize and n >= 2:
        h = h / math.log(n)
    return h


class Entropy(Regularizer[EntropyOptions]):
    """Entropy of the sampled-token distribution estimate, per datum (row).

    With ``p = exp(lp)`` over the row's positions: ``H = −Σ p·log p``, ignoring entries
    with ``lp ≤ −50``. ``temperature = T ≠ 1`` first replaces the row by
    ``log_softmax(lp / T)``; ``normalize`` divides ``H`` by ``log n`` (rows with ``n < 2``
    are left as they are). Rows are then averaged (``reduction="mean"``, default) or
    summed. ``mode="minimize"`` (default) returns ``+H`` — minimising the loss lowers the
    entropy; ``mode="maximize"`` returns ``−H`` — an entropy bonus.
    Metrics: ``entropy`` (the reduced, unsigned ``H``), ``temperature``.
    """

    name: ClassVar[str] = "entropy"
    Options = EntropyOptions

    def compute(self, batch: RegularizerBatch) -> tuple[torch.Tensor, Metrics]:
        o = self.options
        hs = [
            entropy_row(
                apply_mask(batch, o.mask_field, i, lp.reshape(-1), keep_positions=False),
                temperature=o.temperature,
                normalize=o.normalize,
            )
            for i, lp in enumerate(batch.logprobs)
        ]
        h = reduce(stack_rows(batch, hs), o.reduction)
        value = h if o.mode == "minimize" else -h
        return value, {"entropy": num(h), "temperature": o.temperature}


def kl_row(p_lp: torch.Tensor, q_lp: torch.Tensor) -> torch.Tensor:
    """``Σ p·clip(log p − log q, −100, 100)`` over entries with ``p > 1e-10``."""
    keep = p_lp.exp() > KL_P_FLOOR
    zero = torch.zeros_like(p_lp)
    sp = torch.where(keep, p_lp, zero)
    sq = torch.where(keep, q_lp, zero)
    term = sp.exp() * (sp - sq).clamp(-KL_CLIP, KL_CLIP)
    return torch.where(keep, term, zero).sum()


class KLDivergenceOptions(ReferenceOptions):
    direction: Literal["forward", "reverse"] = "forward"
    symmetric: bool = False
    reduction: Reduction = "mean"
    mask_field: str | None = None


class KLDivergence(Regularizer[KLDivergenceOptions]):
    """KL divergence between the model (P, the logprobs) and a reference (Q), per row.

    ``forward``: ``KL(P‖Q) = Σ p·clip(log p − log q, −100, 100)`` over entries with
    ``p > 1e-10``; ``reverse``: ``KL(Q‖P)`` (roles swapped, the mask on ``q``);
    ``symmetric=True``: ``½·(KL(P‖Q) + KL(Q‖P))`` (``direction`` ignored). Rows are
    averaged (default) or summed. The reference is a constant; the gradient flows into the
    logprobs in every direction (no zero under autograd, unlike the Elixir SDK).
    Metrics: ``kl_divergence`` (the value), ``kl_max``, ``kl_min`` (over rows).
    """

    name: ClassVar[str] = "kl_divergence"
    Options = KLDivergenceOptions

    def compute(self, batch: RegularizerBatch) -> tuple[torch.Tensor, Metrics]:
        o = self.options
        refs = reference_rows(batch, o, self.name)
        per_row: list[torch.Tensor] = []
        for i, (lp, ref) in enumerate(zip(batch.logprobs, refs, strict=True)):
            p = apply_mask(batch, o.mask_field, i, lp.reshape(-1), keep_positions=False)
            q = apply_mask(batch, o.mask_field, i, ref, keep_positions=False)
            if o.symmetric:
                per_row.append(0.5 * (kl_row(p, q) + kl_row(q, p)))
            elif o.direction == "forward":
                per_row.append(kl_row(p, q))
            else:
                per_row.append(kl_row(q, p))
        rows = stack_rows(batch, per_row)
        value = reduce(rows, o.reduction)
        detached = rows.detach()
        return value, {
            "kl_divergence": num(value),
            "kl_max": num(detached.max()) if rows.numel() else 0.0,
            "kl_min": num(detached.min()) if rows.numel() else 0.0,
        }


class ConsistencyOptions(RegularizerOptions):
    metric: Literal["mse", "l1", "cosine", "kl"] = "mse"
    reduction: Reduction = "mean"
    pairs: Literal["field", "adjacent"] = "field"
    pair_field: str = "original_logprobs"
    mask_field: str | None = None


class Consistency(Regularizer[ConsistencyOptions]):
    """Consistency between paired forward passes ``a`` and ``b``.

    Pairs: ``pairs="field"`` (default) pairs each datum's logprobs ``a_i`` with the constant
    ``b_i = loss_fn_inputs[pair_field]`` (default ``"original_logprobs"``);
    ``pairs="adjacent"`` pairs data ``2k`` and ``2k+1`` of the batch (both differentiable;
    the batch size must be even and paired lengths equal).
    Metrics over all paired elements: ``mse`` = mean ``(a − b)²``; ``l1`` = mean ``|a − b|``
    (sums with ``reduction="sum"``); ``cosine`` = ``1 − a·b / (max(‖a‖,1e-8)·max(‖b‖,1e-8))``
    of the concatenated tensors (no reduction; 0 when there are no elements);
    ``kl`` = per pair ``½[Σ p(lp − lq) + Σ q(lq − lp)]`` with ``p = exp(a)``, ``q = exp(b)``,
    then averaged or summed over pairs. Metric: ``consistency`` (the value).
    """

    name: ClassVar[str] = "consistency"
    Options = ConsistencyOptions

    def _pairs(self, batch: RegularizerBatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
        o = self.options
        pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        if o.pairs == "field":
            for i, lp in enumerate(batch.logprobs):
                b = batch.field(o.pair_field, i).reshape(-1)
                a = lp.reshape(-1)
                if o.mask_field is not None:
                    m = batch.mask(o.mask_field, i)
                    a, b = a[m], b[m]
                pairs.append((a, b))
            return pairs
        if len(batch) % 2:
            raise TinkexValidationError(
                "consistency.pairs",
                f"'adjacent' pairs data 2k and 2k+1, but the batch has {len(batch)} data",
                "give an even number of data (each pair next to each other)",
            )
        for k in range(0, len(batch), 2):
            a, b = batch.logprobs[k].reshape(-1), batch.logprobs[k + 1].reshape(-1)
            if a.numel() != b.numel():
                raise TinkexValidationError(
                    f"logprobs[{k + 1}]",
                    f"has {b.numel()} elements but its pair logprobs[{k}] has {a.numel()}",
                    "paired data must have the same number of target tokens",
                )
            if o.mask_field is not None:
                m = batch.mask(o.mask_field, k) & batch.mask(o.mask_field, k + 1)
                a, b = a[m], b[m]
            pairs.append((a, b))
        return pairs

    def compute(self, batch: RegularizerBatch) -> tuple[torch.Tensor, Metrics]:
        o = self.options
        pairs = self._pairs(batch)
        a = concat_rows(batch, [p[0] for p in pairs])
        b = concat_rows(batch, [p[1] for p in pairs])
        if o.metric == "mse":
            value = reduce((a - b).square(), o.reduction)
        elif o.metric == "l1":
            value = reduce((a - b).abs(), o.reduction)
        elif o.metric == "cosine":
            if a.numel() == 0:
                value = batch.zero()
            else:
                na = torch.linalg.vector_norm(a).clamp_min(NORM_FLOOR)
                nb = torch.linalg.vector_norm(b).clamp_min(NORM_FLOOR)
                value = 1.0 - (a * b).sum() / (na * nb)
        else:
            rows = [0.5 * ((pa.exp() - pb.exp()) * (pa - pb)).sum() for pa, pb in pairs]
            value = reduce(stack_rows(batch, rows), o.reduction)
        return value, {"consistency": num(value)}
