"""The built-in regularizers (torch versions of spec §5.4), by registered name.

Each lives in the module of its kind: ``_norms`` (L1, L2, elastic net), ``_distributions``
(entropy, KL divergence, consistency), ``_orthogonality``, ``_gradient_penalty``; what they
share (targets, masks, reductions, references) is in ``_targets``.
"""

from __future__ import annotations

from typing import Any

from tinkex_regularizers._distributions import (
    Consistency,
    ConsistencyOptions,
    Entropy,
    EntropyOptions,
    KLDivergence,
    KLDivergenceOptions,
)
from tinkex_regularizers._gradient_penalty import GradientPenalty, GradientPenaltyOptions
from tinkex_regularizers._norms import L1, L2, ElasticNet, ElasticNetOptions, L1Options, L2Options
from tinkex_regularizers._orthogonality import Orthogonality, OrthogonalityOptions
from tinkex_regularizers._regularizer import Regularizer

__all__ = [
    "BUILTINS",
    "L1",
    "L2",
    "Consistency",
    "ConsistencyOptions",
    "ElasticNet",
    "ElasticNetOptions",
    "Entropy",
    "EntropyOptions",
    "GradientPenalty",
    "GradientPenaltyOptions",
    "KLDivergence",
    "KLDivergenceOptions",
    "L1Options",
    "L2Options",
    "Orthogonality",
    "OrthogonalityOptions",
]

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
