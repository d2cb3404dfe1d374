"""tinkex-regularizers: composable torch regularizers for tinkex custom-loss training.

Build a custom loss from a base loss and weighted regularizers::

    from tinkex_regularizers import RegularizerPipeline, RegularizerSpec, cross_entropy_loss

    pipeline = RegularizerPipeline(
        base_loss=cross_entropy_loss,
        regularizers=[
            RegularizerSpec.from_name("l2", weight=0.01),
            RegularizerSpec.from_name("entropy", weight=0.1, mode="maximize"),
        ],
        track_grad_norms=True,
    )
    training_client.forward_backward_custom(data, pipeline.as_loss_fn())
    pipeline.last_output.regularizers["l2"].contribution
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinkex_regularizers._base import (
        BaseLossFn,
        LossFn,
        Metrics,
        RegularizerBatch,
        RegularizerError,
        RegularizerOptions,
        RegularizerProtocol,
        RegularizerTimeoutError,
    )
    from tinkex_regularizers._builtins import (
        BUILTINS,
        L1,
        L2,
        Consistency,
        ConsistencyOptions,
        ElasticNet,
        ElasticNetOptions,
        Entropy,
        EntropyOptions,
        GradientPenalty,
        GradientPenaltyOptions,
        KLDivergence,
        KLDivergenceOptions,
        L1Options,
        L2Options,
        Orthogonality,
        OrthogonalityOptions,
    )
    from tinkex_regularizers._losses import cross_entropy_loss
    from tinkex_regularizers._pipeline import (
        BaseLossOutput,
        CustomLossOutput,
        RegularizerOutput,
        RegularizerPipeline,
        grad_norm,
    )
    from tinkex_regularizers._regularizer import Regularizer
    from tinkex_regularizers._spec import FunctionRegularizer, RegularizerSpec, resolve_regularizer

# Names load lazily: the plugin entry point imports this package, and torch must not load
# until a regularizer is actually used.
_EXPORTS: dict[str, str] = {
    "BUILTINS": "tinkex_regularizers._builtins",
    "BaseLossFn": "tinkex_regularizers._base",
    "BaseLossOutput": "tinkex_regularizers._pipeline",
    "Consistency": "tinkex_regularizers._builtins",
    "ConsistencyOptions": "tinkex_regularizers._builtins",
    "CustomLossOutput": "tinkex_regularizers._pipeline",
    "ElasticNet": "tinkex_regularizers._builtins",
    "ElasticNetOptions": "tinkex_regularizers._builtins",
    "Entropy": "tinkex_regularizers._builtins",
    "EntropyOptions": "tinkex_regularizers._builtins",
    "FunctionRegularizer": "tinkex_regularizers._spec",
    "GradientPenalty": "tinkex_regularizers._builtins",
    "GradientPenaltyOptions": "tinkex_regularizers._builtins",
    "KLDivergence": "tinkex_regularizers._builtins",
    "KLDivergenceOptions": "tinkex_regularizers._builtins",
    "L1": "tinkex_regularizers._builtins",
    "L1Options": "tinkex_regularizers._builtins",
    "L2": "tinkex_regularizers._builtins",
    "L2Options": "tinkex_regularizers._builtins",
    "LossFn": "tinkex_regularizers._base",
    "Metrics": "tinkex_regularizers._base",
    "Orthogonality": "tinkex_regularizers._builtins",
    "OrthogonalityOptions": "tinkex_regularizers._builtins",
    "Regularizer": "tinkex_regularizers._regularizer",
    "RegularizerBatch": "tinkex_regularizers._base",
    "RegularizerError": "tinkex_regularizers._base",
    "RegularizerOptions": "tinkex_regularizers._base",
    "RegularizerOutput": "tinkex_regularizers._pipeline",
    "RegularizerPipeline": "tinkex_regularizers._pipeline",
    "RegularizerProtocol": "tinkex_regularizers._base",
    "RegularizerSpec": "tinkex_regularizers._spec",
    "RegularizerTimeoutError": "tinkex_regularizers._base",
    "cross_entropy_loss": "tinkex_regularizers._losses",
    "grad_norm": "tinkex_regularizers._pipeline",
    "resolve_regularizer": "tinkex_regularizers._spec",
}

__version__ = "0.1.0"

__all__ = [
    "BUILTINS",
    "L1",
    "L2",
    "BaseLossFn",
    "BaseLossOutput",
    "Consistency",
    "ConsistencyOptions",
    "CustomLossOutput",
    "ElasticNet",
    "ElasticNetOptions",
    "Entropy",
    "EntropyOptions",
    "FunctionRegularizer",
    "GradientPenalty",
    "GradientPenaltyOptions",
    "KLDivergence",
    "KLDivergenceOptions",
    "L1Options",
    "L2Options",
    "LossFn",
    "Metrics",
    "Orthogonality",
    "OrthogonalityOptions",
    "Regularizer",
    "RegularizerBatch",
    "RegularizerError",
    "RegularizerOptions",
    "RegularizerOutput",
    "RegularizerPipeline",
    "RegularizerProtocol",
    "RegularizerSpec",
    "RegularizerTimeoutError",
    "__version__",
    "cross_entropy_loss",
    "grad_norm",
    "resolve_regularizer",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tinkex_regularizers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
