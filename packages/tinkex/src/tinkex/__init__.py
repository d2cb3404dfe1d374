"""tinkex: a Python SDK for the Tinker training and sampling API, with a local backend.

Code written for the official ``tinker`` SDK runs with ``import tinkex as tinker``::

    import tinkex as tinker
    from tinkex import types

    service_client = tinker.ServiceClient(base_url="local://")   # or TINKER_BASE_URL
    training_client = service_client.create_lora_training_client("tinkex/tiny-llama-1m")
    training_client.forward_backward(data, "cross_entropy").result()
    training_client.optim_step(types.AdamParams(learning_rate=1e-4)).result()

The clients come from ``tinkex-clients``, the wire models from ``tinkex-types``
(``tinkex.types``), configuration and retries from ``tinkex-http``.
"""

from __future__ import annotations

from httpx import Timeout

from tinkex import types
from tinkex._as_tinker import install_as_tinker, is_installed_as_tinker, uninstall_as_tinker
from tinkex._modules import install_submodule_finder
from tinkex.types import ModelID
from tinkex_clients import (
    APIFuture,
    AwaitableConcurrentFuture,
    BackcompatSamplingClientFuture,
    BackcompatTrainingClientFuture,
    ClientClosedError,
    LossHandle,
    PerDatumLossFn,
    RecoveryError,
    RecoveryExecutor,
    RecoveryMonitor,
    RecoveryPolicy,
    RecoveryResult,
    RequestOptions,
    RestClient,
    RetryConfig,
    SamplingClient,
    ServiceClient,
    TokenizerNotFoundError,
    TrainingClient,
)
from tinkex_http import Config
from tinkex_types import (
    AdamOptimizerConfig,
    AdamParams,
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    Checkpoint,
    CheckpointType,
    ConflictError,
    Datum,
    DimuonOptimizerConfig,
    DimuonParams,
    DmelChunk,
    EncodedTextChunk,
    ForwardBackwardOutput,
    InternalServerError,
    LoraConfig,
    ModelInput,
    ModelInputChunk,
    NotFoundError,
    OptimParams,
    OptimStepRequest,
    OptimStepResponse,
    ParsedCheckpointTinkerPath,
    PermissionDeniedError,
    PromptProvenanceSpan,
    RateLimitError,
    RequestErrorCategory,
    RequestFailedError,
    SampledProvenanceSpan,
    SampledSequence,
    SampleRequest,
    SampleResponse,
    SamplingParams,
    StopReason,
    TensorData,
    TensorDtype,
    TinkexError,
    TinkexValidationError,
    TrainingRun,
    UnprocessableEntityError,
)

#: The official SDK's name for the base error class.
TinkerError = TinkexError


class ExperimentalWarning(FutureWarning):
    """Warned when an experimental API is used (the official SDK's warning class)."""


# ``tinkex.types.<module>`` and ``tinkex.lib.public_interfaces...``: tinker's module paths
install_submodule_finder()

__version__ = "0.1.0"
__title__ = "tinkex"

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIFuture",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AdamOptimizerConfig",
    "AdamParams",
    "AuthenticationError",
    "AwaitableConcurrentFuture",
    "BackcompatSamplingClientFuture",
    "BackcompatTrainingClientFuture",
    "BadRequestError",
    "Checkpoint",
    "CheckpointType",
    "ClientClosedError",
    "Config",
    "ConflictError",
    "Datum",
    "DimuonOptimizerConfig",
    "DimuonParams",
    "DmelChunk",
    "EncodedTextChunk",
    "ExperimentalWarning",
    "ForwardBackwardOutput",
    "InternalServerError",
    "LoraConfig",
    "LossHandle",
    "ModelID",
    "ModelInput",
    "ModelInputChunk",
    "NotFoundError",
    "OptimParams",
    "OptimStepRequest",
    "OptimStepResponse",
    "ParsedCheckpointTinkerPath",
    "PerDatumLossFn",
    "PermissionDeniedError",
    "PromptProvenanceSpan",
    "RateLimitError",
    "RecoveryError",
    "RecoveryExecutor",
    "RecoveryMonitor",
    "RecoveryPolicy",
    "RecoveryResult",
    "RequestErrorCategory",
    "RequestFailedError",
    "RequestOptions",
    "RestClient",
    "RetryConfig",
    "SampleRequest",
    "SampleResponse",
    "SampledProvenanceSpan",
    "SampledSequence",
    "SamplingClient",
    "SamplingParams",
    "ServiceClient",
    "StopReason",
    "TensorData",
    "TensorDtype",
    "Timeout",
    "TinkerError",
    "TinkexError",
    "TinkexValidationError",
    "TokenizerNotFoundError",
    "TrainingClient",
    "TrainingRun",
    "UnprocessableEntityError",
    "__title__",
    "__version__",
    "install_as_tinker",
    "is_installed_as_tinker",
    "types",
    "uninstall_as_tinker",
]
