"""tinkex-clients: ServiceClient, TrainingClient, SamplingClient, RestClient and APIFuture.

Quick use::

    from tinkex_clients import ServiceClient
    from tinkex_types import AdamParams, Datum, ModelInput

    with ServiceClient(base_url="local://") as service:
        training = service.create_lora_training_client("tinkex/tiny-llama-1m", rank=8)
        result = training.forward_backward(data, "cross_entropy").result()
        training.optim_step(AdamParams(learning_rate=1e-3)).result()
        sampler = training.save_weights_and_get_sampling_client()

See ``docs/tinkex-clients.md`` for the whole API.
"""

from __future__ import annotations

from tinkex_clients._backcompat import (
    AwaitableConcurrentFuture,
    BackcompatSamplingClientFuture,
    BackcompatTrainingClientFuture,
    ClientAsFuture,
    install_forwarders,
)
from tinkex_clients._chunking import (
    DEFAULT_MAX_CHUNK_BYTES,
    DEFAULT_MAX_CHUNK_ITEMS,
    chunk_data,
    combine_forward_backward_outputs,
    reduce_metrics,
)
from tinkex_clients._custom_loss_graph import LossHandle, PerDatumLossFn
from tinkex_clients._future import APIFuture
from tinkex_clients._recovery import (
    RecoveryError,
    RecoveryExecutor,
    RecoveryMonitor,
    RecoveryPolicy,
    RecoveryResult,
)
from tinkex_clients._request_options import RequestOptions
from tinkex_clients._rest import RestClient
from tinkex_clients._retention import (
    PruneReport,
    RetentionDecision,
    RetentionPlan,
    RetentionPolicy,
    plan_retention,
)
from tinkex_clients._retry_config import RetryConfig, as_retry_config
from tinkex_clients._sampling import SamplingClient
from tinkex_clients._service import ServiceClient
from tinkex_clients._streaming import (
    AsyncSampleStream,
    SampleStream,
    SampleStreamError,
    collect_sample_stream,
)
from tinkex_clients._tokenizers import (
    TOKENIZER_FILES,
    TokenizerNotFoundError,
    hf_hub_cache_dir,
    hub_download_tokenizer,
    load_local_tokenizer,
    load_tokenizer,
    set_tokenizer_downloader,
    tokenizer_id_for_model,
    tokenizer_search_paths,
)
from tinkex_clients._training import CustomLossFn, TrainingClient
from tinkex_clients._validate import ClientClosedError

install_forwarders(TrainingClient, SamplingClient)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_CHUNK_BYTES",
    "DEFAULT_MAX_CHUNK_ITEMS",
    "TOKENIZER_FILES",
    "APIFuture",
    "AsyncSampleStream",
    "AwaitableConcurrentFuture",
    "BackcompatSamplingClientFuture",
    "BackcompatTrainingClientFuture",
    "ClientAsFuture",
    "ClientClosedError",
    "CustomLossFn",
    "LossHandle",
    "PerDatumLossFn",
    "PruneReport",
    "RecoveryError",
    "RecoveryExecutor",
    "RecoveryMonitor",
    "RecoveryPolicy",
    "RecoveryResult",
    "RequestOptions",
    "RestClient",
    "RetentionDecision",
    "RetentionPlan",
    "RetentionPolicy",
    "RetryConfig",
    "SampleStream",
    "SampleStreamError",
    "SamplingClient",
    "ServiceClient",
    "TokenizerNotFoundError",
    "TrainingClient",
    "__version__",
    "as_retry_config",
    "chunk_data",
    "collect_sample_stream",
    "combine_forward_backward_outputs",
    "hf_hub_cache_dir",
    "hub_download_tokenizer",
    "load_local_tokenizer",
    "load_tokenizer",
    "plan_retention",
    "reduce_metrics",
    "set_tokenizer_downloader",
    "tokenizer_id_for_model",
    "tokenizer_search_paths",
]
