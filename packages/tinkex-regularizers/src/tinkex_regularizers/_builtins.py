"""The built-in regularizers (torch versions of spec §5.4).

Notation. The batch holds data ``d_1..d_N`` and one logprobs tensor ``lp_i`` per datum
(flattened to 1-D; a *row* is one datum). ``x`` is the selected *target*: the logprobs
themselves (``target="logprobs"``), the probabilities ``exp(lp)`` (``"probs"``), or a datum
field ``loss_fn_inputs[field]`` (``"field"``, a constant: zero gradient). With
``mask_field="weights"`` only the positions where that field is non-zero count. Reductions
over an empty set give 0 (never NaN). Every value is differentiable with respect to the
logprobs; none is replaced by a constant under autograd.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import pydantic
import torch
import torch.nn.functional as F

from tinkex_regularizers._base import (
    Metrics,
    Regularizer,
    RegularizerBatch,
    RegularizerOptions,
)
from tinkex_regularizers._tensors import as_tensor
from tinkex_types import TinkexValidationError

__all__ = [
    "BUILTINS",
    "L1",
    "L2",
    "Consistency",
    "ElasticNet",
    "Entropy",
    "GradientPenalty",
    "KLDivergence",
    "Orthogonality",
]

Reduction = Literal["sum", "mean"]
_ENTROPY_FLOOR = -50.0  # logprobs at or below this are ignored by the entropy
_KL_P_FLOOR = 1e-10  # probabilities at or below this are masked out of the KL sum
_KL_CLIP = 100.0  # log-ratio clip of the KL terms
_NORM_FLOOR = 1e-8  # floor of vector norms (cosine, row normalisation)


# ---------------------------------------------------------------------------------------
# shared options and helpers
# ---------------------------------------------------------------------------------------
class TargetOptions(RegularizerOptions):
    """Which tensor is penalised, and which positions count."""

    target: Literal["logprobs", "probs", "field"] = pydantic.Field(
        "logprobs", description="logprobs | probs (= exp(logprobs)) | field"
    )
    field: str | None = pydantic.Field(
        None, validate_default=True, description="loss_fn_inputs key when target='field'"
    )
    mask_field: str | None = pydantic.Field(
        None, description="loss_fn_inputs key; only positions where it is non-zero count"
    )

    @pydantic.field_validator("field")
    @classmethod
    def _field_matches_target(cls, value: str | None, info: pydantic.ValidationInfo) -> str | None:
        target = info.data.get("target")
        if target == "field" and not value:
            raise ValueError("target='field' needs field=<a loss_fn_inputs key>")
        if target != "field" and value is not None:
            raise ValueError("field is only used with target='field'")
        return value


def _scale() -> Any:
    return pydantic.Field(1.0, alias="lambda", ge=0.0, allow_inf_nan=False)


def _rows(
    batch: RegularizerBatch, opts: TargetOptions, *, keep_positions: bool = False
) -> list[torch.Tensor]:
    """One flat target tensor per datum; masked positions dropped (or zeroed)."""
    rows: list[torch.Tensor] = []
    for i, lp in enumerate(batch.logprobs):
        flat = lp.reshape(-1)
        if opts.target == "logprobs":
            x = flat
        elif opts.target == "probs":
            x = flat.exp()
        else:
            assert opts.field is not None  # checked by the options model
            x = batch.field(opts.field, i).reshape(-1)
        rows.append(_apply_mask(batch, opts.mask_field, i, x, keep_positions=keep_positions))
    return rows


def _apply_mask(
    batch: RegularizerBatch,
    mask_field: str | None,
    index: int,
    x: torch.Tensor,
    *,
    keep_positions: bool,
) -> torch.Tensor:
    if mask_field is None:
        return x
    mask = batch.mask(mask_field, index)
    return torch.where(mask, x, torch.zeros_like(x)) if keep_positions else x[mask]


def _cat(batch: RegularizerBatch, rows: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat(list(rows)) if rows else batch.zero().new_zeros(0)


def _reduce(x: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """Sum, or mean (0 for no elements)."""
    if reduction == "sum" or x.numel() == 0:
        return x.sum()
    return x.mean()


def _stack_rows(batch: RegularizerBatch, values: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack(list(values)) if values else batch.zero().new_zeros(0)


def _num(t: torch.Tensor) -> float:
    return float(t.detach().reshape(()).item()) if t.numel() else 0.0


# ---------------------------------------------------------------------------------------
# L1, L2, elastic net
# ---------------------------------------------------------------------------------------
class L1Options(TargetOptions):
    reduction: Reduction = "sum"
    lambda_: float = _scale()


class L1(Regularizer[L1Options]):
    """L1 (sparsity): ``λ · Σ|x|`` (``reduction="sum"``, default) or ``λ · mean|x|``.

    Metrics: ``l1_raw`` (the reduced ``|x|`` before λ), ``l1_mean`` (``mean|x|``).
    The gradient of ``|x|`` at exactly 0 is taken as 0.
    """

    name: ClassVar[str] = "l1"
    Options = L1Options

    def compute(self, batch: RegularizerBatch) -> tuple[torch.Tensor, Metrics]:
        o = self.options
        a = _cat(batch, _rows(batch, o)).abs()
        raw = _reduce(a, o.reduction)
        return o.lambda_ * raw, {"l1_raw": _num(raw), "l1_mean": _num(_reduce(a, "mean"))}


class L2Options(TargetOptions):
    reduction: Reduction = "sum"
    lambda_: float = _scale()
    clip: float | None = pydantic.Field(None, gt=0.0, allow_inf_nan=False)
    center: Literal["mean"] | float | None = None

    @pydantic.field_validator("center")
    @classmethod
    def _finite_center(
        cls, value: Literal["mean"] | float | None
    ) -> Literal["mean"] | float | None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("center must be finite, 'mean' or None")
        return value


class L2(Regularizer[L2Options]):
    """L2 (Tikhonov): ``λ · Σ clip(x − c, −k, k)²`` (or the mean instead of the sum).

    ``c`` is 0 (``center=None``), the mean of ``x`` over the batch (``"mean"``,
    differentiated through), or a number; centring happens before clipping at ``k = clip``
    (no clipping by default; clipped entries have zero gradient).
    Metrics: ``l2_raw`` (reduced square before λ), ``l2_mean`` (``mean x²``, uncentred),
    ``center`` (the ``c`` used).
    """

    name: ClassVar[str] = "l2"
    Options = L2Options

    def compute(self, batch: RegularizerBatch) -> tuple[torch.Tensor, Metrics]:
        o = self.options
        x = _cat(batch, _rows(batch, o))
        if o.center == "mean":
            c: torch.Tensor | float = _reduce(x, "mean")
        else:
            c = float(o.center or 0.0)
        d = x - c
        if o.clip is not None:
            d = d.clamp(-o.clip, o.clip)
        raw = _reduce(d.square(), o.reduction)
        metrics = {
            "l2_raw": _num(raw),
            "l2_mean": _num(_reduce(x.square(), "mean")),
            "center": _num(c) if isinstance(c, torch.Tensor) else c,
        }
        return o.lambda_ * raw, metrics


class ElasticNetOptions(TargetOptions):
    reduction: Reduction = "sum"
    lambda_: float = _scale()
    l1_ratio: float = pydantic.Field(0.5, ge=0.0, le=1.0)


class ElasticNet(Regularizer[ElasticNetOptions]):
    """Elastic net: ``λ · (α·Σ|x| + (1 − α)·Σx²)`` with ``α = l1_ratio`` (or with means).

    Metrics: ``elastic_net`` (the value), ``l1_ratio``, ``l1_part`` (reduced ``|x|``),
    ``l2_part`` (reduced ``x²``).
    """

    name: ClassVar[str] = "elastic_net"
    Options = ElasticNetOptions

    def compute(self, batch: RegularizerBatch) -> tuple[torch.Tensor, Metrics]:
        o = self.options
        x = _cat(batch, _rows(batch, o))
        l1 = _reduce(x.abs(), o.reduction)
        l2 = _reduce(x.square(), o.reduction)
        value = o.lambda_ * (o.l1_ratio * l1 + (1.0 - o.l1_ratio) * l2)
        return value, {
            "elastic_net": _num(value),
            "l1_ratio": o.l1_ratio,
            "l1_part": _num(l1),
            "l2_part": _num(l2),
        }


# ---------------------------------------------------------------------------------------
# entropy
# ---------------------------------------------------------------------------------------
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
    keep = lp > _ENTROPY_FLOOR
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
                _apply_mask(batch, o.mask_field, i, lp.reshape(-1), keep_positions=False),
                temperature=o.temperature,
                normalize=o.normalize,
            )
            for i, lp in enumerate(batch.logprobs)
        ]
        h = _reduce(_stack_rows(batch, hs), o.reduction)
        value = h if o.mode == "minimize" else -h
        return value, {"entropy": _num(h), "temperature": o.temperature}


# ---------------------------------------------------------------------------------------
# references (KL divergence, consistency, interpolated gradient penalty)
# ---------------------------------------------------------------------------------------
class ReferenceOptions(RegularizerOptions):
    """Where the reference logprobs come from (first that is given wins):
    ``compute_reference(data)``, ``reference_logprobs`` (one per datum), the pipeline's
    ``reference``, else each datum's ``loss_fn_inputs[reference_field]``."""

    reference_logprobs: list[Any] | tuple[Any, ...] | None = None
    reference_field: str = "reference_logprobs"
    compute_reference: Callable[[list[Any]], Sequence[Any]] | None = None


def _references(batch: RegularizerBatch, opts: ReferenceOptions, who: str) -> list[torch.Tensor]:
    """One detached flat reference tensor per datum, element count checked."""
    raw: Sequence[Any] | None
    if opts.compute_reference is not None:
        raw, source = opts.compute_reference(list(batch.data)), "compute_reference"
    elif opts.reference_logprobs is not None:
        raw, source = opts.reference_logprobs, "reference_logprobs"
    elif batch.reference_logprobs is not None:
        raw, source = batch.reference_logprobs, "reference"
    else:
        raw, source = None, opts.reference_field
    out: list[torch.Tensor] = []
    if raw is None:
        for i in range(len(batch)):
            if not batch.has_field(opts.reference_field, i):
                raise TinkexValidationError(
                    f"data[{i}].loss_fn_inputs[{opts.reference_field!r}]",
                    f"missing: {who} has no reference logprobs for this datum",
                    f"add it to loss_fn_inputs, or give {who} reference_logprobs=[...] or "
                    "compute_reference=fn, or the pipeline reference=fn",
                )
            out.append(batch.field(opts.reference_field, i).reshape(-1))
        return out
    raw = list(raw)
    if len(raw) != len(batch):
        raise TinkexValidationError(
            f"{who}.{source}",
            f"gave {len(raw)} reference tensors for {len(batch)} data",
            "give one reference tensor per datum",
        )
    for i, (ref, lp) in enumerate(zip(raw, batch.logprobs, strict=True)):
        t = as_tensor(ref, where=f"{who}.{source}[{i}]", dtype=lp.dtype, device=lp.device)
        if t.numel() != lp.numel():
            raise TinkexValidationError(
                f"{who}.{source}[{i}]",
                f"has {t.numel()} elements but logprobs[{i}] has {lp.numel()}",
                "give one reference logprob per target token",
            )
        out.append(t.reshape(-1))
    return out


def kl_row(p_lp: torch.Tensor, q_lp: torch.Tensor) -> torch.Tensor:
    """``Σ p·clip(log p − log q, −100, 100)`` over entries with ``p > 1e-10``."""
    keep = p_lp.exp() > _KL_P_FLOOR
    zero = torch.zeros_like(p_lp)
    sp = torch.where(keep, p_lp, zero)
    sq = torch.where(keep, q_lp, zero)
    term = sp.exp() * (sp - sq).clamp(-_KL_CLIP, _KL_CLIP)
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
        refs = _references(batch, o, self.name)
        per_row: list[torch.Tensor] = []
        for i, (lp, ref) in enumerate(zip(batch.logprobs, refs, strict=True)):
            p = _apply_mask(batch, o.mask_field, i, lp.reshape(-1), keep_positions=False)
            q = _apply_mask(batch, o.mask_field, i, ref, keep_positions=False)
            if o.symmetric:
                per_row.append(0.5 * (kl_row(p, q) + kl_row(q, p)))
            elif o.direction == "forward":
                per_row.append(kl_row(p, q))
            else:
                per_row.append(kl_row(q, p))
        rows = _stack_rows(batch, per_row)
        value = _reduce(rows, o.reduction)
        detached = rows.detach()
        return value, {
            "kl_divergence": _num(value),
            "kl_max": _num(detached.max()) if rows.numel() else 0.0,
            "kl_min": _num(detached.min()) if rows.numel() else 0.0,
        }


# ---------------------------------------------------------------------------------------
# consistency
# ---------------------------------------------------------------------------------------
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
        a = _cat(batch, [p[0] for p in pairs])
        b = _cat(batch, [p[1] for p in pairs])
        if o.metric == "mse":
            value = _reduce((a - b).square(), o.reduction)
        elif o.metric == "l1":
            value = _reduce((a - b).abs(), o.reduction)
        elif o.metric == "cosine":
            if a.numel() == 0:
                value = batch.zero()
            else:
                na = torch.linalg.vector_norm(a).clamp_min(_NORM_FLOOR)
                nb = torch.linalg.vector_norm(b).clamp_min(_NORM_FLOOR)
                value = 1.0 - (a * b).sum() / (na * nb)
        else:
            rows = [0.5 * ((pa.exp() - pb.exp()) * (pa - pb)).sum() for pa, pb in pairs]
            value = _reduce(_stack_rows(batch, rows), o.reduction)
        return value, {"consistency": _num(value)}


# ---------------------------------------------------------------------------------------
# orthogonality
# ---------------------------------------------------------------------------------------
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
        rows = _rows(batch, o, keep_positions=True)
        if not rows:
            zero = batch.zero()
            return zero, {"orthogonality": 0.0}
        width = max(r.numel() for r in rows)
        x = torch.stack([F.pad(r, (0, width - r.numel())) for r in rows])
        if o.normalize:
            x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(_NORM_FLOOR)
        g = x @ x.T
        n = g.shape[0]
        off = g - torch.diag_embed(torch.diagonal(g))
        if o.mode == "soft":
            value = off.square().sum()
        elif o.mode == "hard":
            value = (g - torch.eye(n, dtype=g.dtype, device=g.device)).square().sum()
        else:
            value = (torch.trace(g) - n).square() + off.square().sum()
        return value, {"orthogonality": _num(value)}


# ---------------------------------------------------------------------------------------
# gradient penalty
# ---------------------------------------------------------------------------------------
class GradientPenaltyOptions(ReferenceOptions):
    loss_fn: Callable[..., Any] | None = None
    mode: Literal["output", "interpolated"] = "output"
    target_norm: float = pydantic.Field(1.0, ge=0.0, allow_inf_nan=False)
    seed: int = 0


def loss_tensor(result: Any, where: str) -> torch.Tensor:
    """The loss tensor of a loss function's result (``tensor`` or ``(tensor, metrics)``)."""
    loss = result[0] if isinstance(result, tuple) else result
    if not isinstance(loss, torch.Tensor):
        raise TinkexValidationError(
            where, f"returned {type(loss).__name__}, not a tensor", "return (loss_tensor, metrics)"
        )
    if loss.numel() != 1:
        raise TinkexValidationError(
            where, f"returned a tensor of shape {tuple(loss.shape)}", "return a scalar loss"
        )
    return loss.reshape(())


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
            refs = _references(batch, o, self.name)
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
        return value, {"gradient_norm": _num(norm)}


#: Registered names of the built-ins, in documentation order.
BUILTINS: dict[str, type[Regularizer[Any]]] = {
    cls.name: cls
    for cls in (
        L1,
        L2,
        ElasticNet,
        Entropy,
        KLDivergence,
        Consistency,
        Orthogonality,
        GradientPenalty,
    )
}
