"""The module paths of the official ``tinker`` package, served by tinkex.

``tinker.types.datum``, ``tinker.lib.public_interfaces.rest_client`` and the other module
paths code imports from exist in tinkex as ``tinkex.types.datum``,
``tinkex.lib.public_interfaces.rest_client``, ...: small modules made on first import that
offer the names the official module offers (those tinkex has), taken from ``tinkex.types``
or ``tinkex``. A meta path finder (installed by ``import tinkex``) makes them; it answers
only for the module names in :data:`SUBMODULES`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

#: ``tinker.types.<module>`` -> the names the official package imports from it.
TYPES_MODULES: dict[str, tuple[str, ...]] = {
    "audit_log_entry": ("AuditLogEntry",),
    "audit_log_response": ("AuditLogResponse",),
    "auth_token_response": ("AuthTokenResponse",),
    "billing_usage_request": ("GetBillingUsageRequest",),
    "billing_usage_response": (
        "BillingEventInfo",
        "BillingUsageEvent",
        "BillingUsageResponse",
        "BillingUsageSession",
        "CheckpointBillingEvent",
        "SamplingPrefillBillingEvent",
        "SamplingSampleBillingEvent",
        "StorageBillingEvent",
        "TrainingBillingEvent",
    ),
    "checkpoint": ("Checkpoint", "CheckpointType", "ParsedCheckpointTinkerPath"),
    "checkpoints_list_response": ("CheckpointsListResponse",),
    "client_config_request": ("ClientConfigRequest",),
    "client_config_response": ("ClientConfigResponse",),
    "client_dynamic_config_response": ("ClientDynamicConfigResponse",),
    "copy_weights_request": ("CopyWeightsRequest",),
    "copy_weights_response": ("CopyWeightsResponse",),
    "create_custom_loss_request": ("CreateCustomLossRequest",),
    "create_custom_loss_response": ("CreateCustomLossResponse",),
    "create_model_request": ("CreateModelRequest",),
    "create_model_response": ("CreateModelResponse",),
    "create_sampling_session_request": ("CreateSamplingSessionRequest",),
    "create_sampling_session_response": ("CreateSamplingSessionResponse",),
    "create_session_request": ("CreateSessionRequest",),
    "create_session_response": ("CreateSessionResponse",),
    "current_checkpoint_storage_usage_request": ("GetCurrentCheckpointStorageUsageRequest",),
    "current_checkpoint_storage_usage_response": (
        "CurrentCheckpointStorageUsageItem",
        "CurrentCheckpointStorageUsageResponse",
    ),
    "cursor": ("Cursor",),
    "custom_loss_graph": ("CustomLossGraph", "CustomLossNode"),
    "custom_loss_input": ("CustomLossInput", "CustomLossInputRank"),
    "datum": ("Datum",),
    "dmel_chunk": ("DmelChunk",),
    "encoded_text_chunk": ("EncodedTextChunk",),
    "event_type": ("EventType",),
    "external_weights_urls_response": ("ExternalWeightsUrlsResponse",),
    "forward_backward_input": ("ForwardBackwardInput",),
    "forward_backward_output": ("ForwardBackwardOutput",),
    "forward_backward_request": ("ForwardBackwardRequest",),
    "forward_request": ("ForwardRequest",),
    "future_completion": ("FutureCompletion", "FutureFailed", "FutureFinished"),
    "future_retrieve_request": ("FutureRetrieveRequest",),
    "future_retrieve_response": ("FutureRetrieveResponse",),
    "futures_retrieve_request": ("FuturesRetrieveRequest", "SamplingSessionFuturesTarget"),
    "futures_retrieve_response": ("FuturesRetrieveResponse",),
    "generic_event": (),
    "get_info_request": ("GetInfoRequest",),
    "get_info_response": ("GetInfoResponse", "ModelData"),
    "get_sampler_response": ("GetSamplerResponse",),
    "get_server_capabilities_response": ("GetServerCapabilitiesResponse", "SupportedModel"),
    "get_session_response": ("GetSessionResponse",),
    "health_response": ("HealthResponse",),
    "image_asset_pointer_chunk": ("ImageAssetPointerChunk",),
    "image_chunk": ("ImageChunk",),
    "join_sampling_session_request": ("JoinSamplingSessionRequest",),
    "join_sampling_session_response": ("JoinSamplingSessionResponse",),
    "list_sessions_response": ("ListSessionsResponse",),
    "load_weights_request": ("LoadWeightsRequest",),
    "load_weights_response": ("LoadWeightsResponse",),
    "lora_config": ("LoraConfig",),
    "loss_fn_inputs": ("LossFnInputs",),
    "loss_fn_output": ("LossFnOutput",),
    "loss_fn_type": ("LossFnType",),
    "model_id": ("ModelID",),
    "model_input": ("ModelInput",),
    "model_input_chunk": ("ModelInputChunk",),
    "optim_step_request": ("OptimStepRequest",),
    "optim_step_response": ("OptimStepResponse",),
    "optimizer": (
        "AdamOptimizerConfig",
        "AdamParams",
        "DimuonOptimizerConfig",
        "DimuonParams",
        "OptimParams",
        "OptimizerConfig",
    ),
    "prompt_alt_tokens": ("PromptAltTokens",),
    "provenance_spans": ("PromptProvenanceSpan", "ProvenanceSpans", "SampledProvenanceSpan"),
    "request_error_category": ("RequestErrorCategory",),
    "request_failed_response": ("RequestFailedResponse",),
    "request_id": ("RequestID",),
    "sample_request": ("SampleRequest",),
    "sample_response": ("SampleResponse",),
    "sampled_sequence": ("SampledSequence",),
    "sampling_client_kind": ("SamplingClientKind",),
    "sampling_params": ("SamplingParams",),
    "save_weights_external_request": ("SaveWeightsExternalRequest",),
    "save_weights_external_response": (
        "SaveWeightsExternalResponse",
        "SaveWeightsExternalResponseInternal",
    ),
    "save_weights_for_sampler_request": ("SaveWeightsForSamplerRequest",),
    "save_weights_for_sampler_response": (
        "SaveWeightsForSamplerResponse",
        "SaveWeightsForSamplerResponseInternal",
    ),
    "save_weights_request": ("SaveWeightsRequest",),
    "save_weights_response": ("SaveWeightsResponse",),
    "search_owner": ("AccessibleSearchOwner", "OwnSearchOwner", "SearchOwner", "UserSearchOwner"),
    "session_end_event": ("SessionEndEvent",),
    "session_heartbeat_request": ("SessionHeartbeatRequest",),
    "session_heartbeat_response": ("SessionHeartbeatResponse",),
    "session_search_cursor": ("SessionSearchCursor",),
    "session_search_request": ("SessionSearchRequest",),
    "session_search_response": ("SessionSearchResponse",),
    "session_start_event": ("SessionStartEvent",),
    "session_status": (
        "ClientSessionFinishErrored",
        "ClientSessionFinishInterrupted",
        "ClientSessionFinishReason",
        "ClientSessionFinishSuccess",
        "ClientSessionFinished",
        "SessionActive",
        "SessionCancelled",
        "SessionFailed",
        "SessionFailedReason",
        "SessionFailedRequestReason",
        "SessionFailedSamplingSessionReason",
        "SessionFailedTrainingRunReason",
        "SessionStatus",
    ),
    "session_status_query": (
        "ActiveSessionStatusQuery",
        "CancelledSessionStatusQuery",
        "ClientFinishedSessionStatusQuery",
        "ClientSessionFinishReasonType",
        "FailedSessionStatusQuery",
        "SessionStatusQuery",
    ),
    "session_summary": ("SessionSummary",),
    "severity": ("Severity",),
    "shared": ("UntypedAPIFuture",),
    "stop_reason": ("StopReason",),
    "telemetry_batch": ("TelemetryBatch",),
    "telemetry_event": ("TelemetryEvent",),
    "telemetry_response": ("TelemetryResponse",),
    "telemetry_send_request": ("TelemetrySendRequest",),
    "tensor_data": ("TensorData",),
    "tensor_dtype": ("TensorDtype",),
    "topk_logprobs": (),
    "training_run": ("TrainingRun",),
    "training_runs_response": ("TrainingRunsResponse",),
    "try_again_response": (),
    "unhandled_exception_event": ("UnhandledExceptionEvent",),
    "unload_model_request": ("UnloadModelRequest",),
    "unload_model_response": ("UnloadModelResponse",),
    "weights_info_response": ("WeightsInfoResponse",),
    "whoami_response": ("WhoamiResponse",),
}

#: ``tinker.lib.public_interfaces.<module>`` -> its public names.
PUBLIC_INTERFACES: dict[str, tuple[str, ...]] = {
    "admin_client": ("AdminClient",),
    "api_future": ("APIFuture", "AwaitableConcurrentFuture"),
    "backcompat_client_future": (),
    "backcompat_sampling_client_future": ("BackcompatSamplingClientFuture",),
    "backcompat_training_client_future": ("BackcompatTrainingClientFuture",),
    "custom_loss": ("LossHandle", "PerDatumLossFn"),
    "rest_client": ("RestClient",),
    "rest_client_common": (),
    "sampling_client": ("SamplingClient",),
    "service_client": ("ServiceClient",),
    "training_client": ("TrainingClient",),
}


def _table() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Module name -> (module to take the names from, names).  Packages have a ``.``."""
    table: dict[str, tuple[str, tuple[str, ...]]] = {
        "tinkex.lib": ("tinkex", ()),
        "tinkex.lib.public_interfaces": (
            "tinkex",
            tuple(sorted({n for names in PUBLIC_INTERFACES.values() for n in names})),
        ),
        "tinkex.lib.retry_handler": ("tinkex", ("RetryConfig",)),
        "tinkex.types.shared": ("tinkex.types", ("UntypedAPIFuture",)),
    }
    for sub, names in TYPES_MODULES.items():
        table.setdefault(f"tinkex.types.{sub}", ("tinkex.types", names))
    for sub, names in PUBLIC_INTERFACES.items():
        table[f"tinkex.lib.public_interfaces.{sub}"] = ("tinkex", names)
    return table


SUBMODULES = _table()
_PACKAGES = {"tinkex.lib", "tinkex.lib.public_interfaces", "tinkex.types.shared"}


class _ViewLoader(importlib.abc.Loader):
    def __init__(self, source: str, names: tuple[str, ...], package: bool) -> None:
        self._source = source
        self._names = names
        self._package = package

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        source = importlib.import_module(self._source)
        present = [n for n in self._names if hasattr(source, n)]
        for name in present:
            setattr(module, name, getattr(source, name))
        module.__all__ = present  # type: ignore[attr-defined]
        module.__doc__ = f"tinker's module path, offering names of {self._source}."


class SubmoduleFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of :data:`SUBMODULES` (and nothing else)."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        entry = SUBMODULES.get(fullname)
        if entry is None:
            return None
        package = fullname in _PACKAGES
        loader = _ViewLoader(entry[0], entry[1], package)
        return importlib.machinery.ModuleSpec(fullname, loader, is_package=package)


def install_submodule_finder() -> None:
    """Put the finder on ``sys.meta_path`` once (``import tinkex`` does)."""
    if not any(isinstance(f, SubmoduleFinder) for f in sys.meta_path):
        sys.meta_path.append(SubmoduleFinder())
