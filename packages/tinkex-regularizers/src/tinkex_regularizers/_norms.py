"""L1, L2 and elastic net: norms of the selected target."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import pydantic
import torch

from tinkex_regularizers._base import Metrics, RegularizerBatch
from tinkex_regularizers._regularizer import Regularizer
from tinkex_regularizers._targets import (
    Reduction,
    TargetOptions,
    concat_rows,
    num,
    reduce,
    scale_field,
    target_rows,
)

__all__ = ["L1", "L2", "ElasticNet", "ElasticNetOptions", "L1Options", "L2Options"]


class L1Options(TargetOptions):
    reduction: Reduction = "sum"
    lambda_: float = scale_field()


class L1(Regularizer[L1Options]):
    """L1 (sparsity): ``λ · Σ|x|`` (``reduction="sum"``, default) or ``λ · mean|x|``.

    Metrics: ``l1_raw`` (the reduced ``|x|`` before λ), ``l1_mean`` (``mean|x|``).
    The gradient of ``|x|`` at exactly 0 is taken as 0.
    """

    name: ClassVar[str] = "l1"
    Options = L1Options

    def compute(self, batch: RegularizerBatch) -> tuple[torch.Tensor, Metrics]:
        o = self.options
        a = concat_rows(batch, target_rows(batch, o)).abs()
        raw = reduce(a, o.reduction)
        return o.lambda_ * raw, {"l1_raw": num(raw), "l1_mean": num(reduce(a, "mean"))}


class L2Options(TargetOptions):
    reduction: Reduction = "sum"
    lambda_: float = scale_field()
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
        x = concat_rows(batch, target_rows(batch, o))
        if o.center == "mean":
            c: torch.Tensor | float = reduce(x, "mean")
        else:
            c = float(o.center or 0.0)
        d = x - c
        if o.clip is not None:
            d = d.clamp(-o.clip, o.clip)
        raw = reduce(d.square(), o.reduction)
        metrics = {
            "l2_raw": num(raw),
            "l2_mean": num(reduce(x.square(), "mean")),
            "center": num(c) if isinstance(c, torch.Tensor) else c,
        }
        return o.lambda_ * raw, metrics


class ElasticNetOptions(TargetOptions):
    reduction: Reduction = "sum"
    lambda_: float = scale_field()
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
        x = concat_rows(batch, target_rows(batch, o))
        l1 = reduce(x.abs(), o.reduction)
        l2 = reduce(x.square(), o.reduction)
        value = o.lambda_ * (o.l1_ratio * l1 + (1.0 - o.l1_ratio) * l2)
        return value, {
            "elastic_net": num(value),
            "l1_ratio": o.l1_ratio,
            "l1_part": num(l1),
            "l2_part": num(l2),
        }
