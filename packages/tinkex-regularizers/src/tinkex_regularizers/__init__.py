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

from tinkex_regularizers._base import (
    BaseLossFn,
    LossFn,
    Metrics,
    Regularizer,
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
from tinkex_regularizers._spec import FunctionRegularizer, RegularizerSpec, resolve_regularizer

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
