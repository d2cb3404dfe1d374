"""What the built-in regularizers share: targets, masks, reductions, references.

Notation. The batch holds data ``d_1..d_N`` and one logprobs tensor ``lp_i`` per datum
(flattened to 1-D; a *row* is one datum). ``x`` is the selected *target*: the logprobs
themselves (``target="logprobs"``), the probabilities ``exp(lp)`` (``"probs"``), or a datum
field ``loss_fn_inputs[field]`` (``"field"``, a constant: zero gradient). With
``mask_field="weights"`` only the positions where that field is non-zero count. Reductions
over an empty set give 0 (never NaN). Every value is differentiable with respect to the
logprobs; none is replaced by a constant under autograd.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import pydantic
import torch

from tinkex_regularizers._base import RegularizerBatch, RegularizerOptions
from tinkex_regularizers._tensors import as_tensor
from tinkex_types import TinkexValidationError

__all__ = [
    "ENTROPY_FLOOR",
    "KL_CLIP",
    "KL_P_FLOOR",
    "NORM_FLOOR",
    "Reduction",
    "ReferenceOptions",
    "TargetOptions",
    "apply_mask",
    "concat_rows",
    "num",
    "reduce",
    "reference_rows",
    "scale_field",
    "stack_rows",
    "target_rows",
]

Reduction = Literal["sum", "mean"]
ENTROPY_FLOOR = -50.0  # logprobs at or below this are ignored by the entropy
KL_P_FLOOR = 1e-10  # probabilities at or below this are masked out of the KL sum
KL_CLIP = 100.0  # log-ratio clip of the KL terms
NORM_FLOOR = 1e-8  # floor of vector norms (cosine, row normalisation)


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


def scale_field() -> Any:
    return pydantic.Field(1.0, alias="lambda", ge=0.0, allow_inf_nan=False)


def target_rows(
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
        rows.append(apply_mask(batch, opts.mask_field, i, x, keep_positions=keep_positions))
    return rows


def apply_mask(
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


def concat_rows(batch: RegularizerBatch, rows: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat(list(rows)) if rows else batch.zero().new_zeros(0)


def reduce(x: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """Sum, or mean (0 for no elements)."""
    if reduction == "sum" or x.numel() == 0:
        return x.sum()
    return x.mean()


def stack_rows(batch: RegularizerBatch, values: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack(list(values)) if values else batch.zero().new_zeros(0)


def num(t: torch.Tensor) -> float:
    return float(t.detach().reshape(()).item()) if t.numel() else 0.0


class ReferenceOptions(RegularizerOptions):
    """Where the reference logprobs come from (first that is given wins):
    ``compute_reference(data)``, ``reference_logprobs`` (one per datum), the pipeline's
    ``reference``, else each datum's ``loss_fn_inputs[reference_field]``."""

    reference_logprobs: list[Any] | tuple[Any, ...] | None = None
    reference_field: str = "reference_logprobs"
    compute_reference: Callable[[list[Any]], Sequence[Any]] | None = None


def reference_rows(batch: RegularizerBatch, opts: ReferenceOptions, who: str) -> list[torch.Tensor]:
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
