"""Wire models and answers of the later protocol generations (official SDK 0.18 - 0.38,
protocol.md §4) that the JSON generation's models do not cover.

* :func:`client_flags`: what ``POST /api/v1/client/config`` answers, i.e. the flags each
  SDK version reads, set to what this server supports (protobuf requests and zstd,
  ``load_weights`` creating models, server-side custom losses, no JWT).
* :class:`LoadWeightsCreateRequest`: ``load_weights`` in both addressings: legacy
  ``model_id`` + ``seq_id``, or (0.38) ``session_id`` + ``model_seq_id``, which creates the
  model ``<session_id>:train:<model_seq_id>`` from the checkpoint.
* :class:`SampleFuture`: the ``/asample`` answer with ``sample_sequence_ids`` (one per
  sample; 0.38 asserts them).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from tinkex_server._config import ServerConfig
from tinkex_types import OptimizerConfig, UntypedAPIFuture, WireModel
from tinkex_types._numbers import Int64

__all__ = [
    "ClientConfigRequest",
    "ClientConfigResponse",
    "DynamicConfigResponse",
    "FinishReason",
    "FinishSessionRequest",
    "LoadWeightsCreateRequest",
    "SampleFuture",
    "SaveWeightsExternalRequest",
    "SaveWeightsExternalResponse",
    "client_flags",
]


class ClientConfigRequest(WireModel):
    """``POST /api/v1/client/config`` and ``/client/dynamic_config``: ``{"sdk_version"}``."""

    sdk_version: str | None = None


class ClientConfigResponse(WireModel):
    """The flags the official SDKs 0.18 - 0.38 read (unknown ones are ignored by them)."""

    pjwt_auth_enabled: bool = False
    credential_default_source: str = "api_key"
    sample_dispatch_bytes_semaphore_size: int = 10 * 1024 * 1024
    inflight_response_bytes_semaphore_size: int = 50 * 1024 * 1024
    parallel_fwdbwd_chunks: bool = True
    proto_write_fwdbwd: bool = False
    proto_compress_fwdbwd: bool = False
    fwd_via_fwdbwd: bool = False
    fwdbwd_max_chunk_len: int = 1024
    fwdbwd_max_chunk_bytes_count: int = 5_000_000
    fwdbwd_dispatch_bytes_semaphore_size: int = 50_000_000
    billing_exception_max_pause_duration_sec: float = 3600.0
    sample_no_retries: bool = False
    sample_enable_stuck_detection: bool = True
    sample_max_concurrent_requests: int = 2000
    use_pyqwest_transport: bool = False
    create_model_via_load_weights: bool = False
    sample_use_retrieve_futures: bool = False
    custom_loss_server_side: bool = False
    sample_join_sampling_session: bool = False


class DynamicConfigResponse(WireModel):
    """``POST /api/v1/client/dynamic_config`` (0.25+)."""

    refresh_interval_sec: float = 300.0
    sample_cancel_enabled: bool = False
    sample_cancel_max_batch_size: int = 64


def client_flags(config: ServerConfig) -> ClientConfigResponse:
    """What this server supports, as the official SDKs read it.

    Protobuf request bodies (zstd too) and ``forward`` as ``forward_backward`` with
    ``forward_only`` are accepted, so 0.24.1 is told to use them as 0.25+ always do; request
    bodies are bounded by ``max_body_bytes`` (chunk byte budget: a fifth of it). JWT, batch
    polling and sampler joining are not offered; server-side custom losses are
    (``create_custom_loss``, :mod:`tinkex_server._custom_losses`).
    """
    chunk_bytes = max(1, min(5_000_000, config.max_body_bytes // 5))
    return ClientConfigResponse(
        proto_write_fwdbwd=True,
        proto_compress_fwdbwd=True,
        fwd_via_fwdbwd=True,
        fwdbwd_max_chunk_bytes_count=chunk_bytes,
        fwdbwd_dispatch_bytes_semaphore_size=max(chunk_bytes, 10 * chunk_bytes),
        sample_max_concurrent_requests=config.max_queued_samples,
        create_model_via_load_weights=True,
        custom_loss_server_side=True,
    )


class FinishReason(WireModel):
    """Why a session ended (0.38 ``ServiceClient.close``)."""

    type: Literal["success", "errored", "interrupted"]


class FinishSessionRequest(WireModel):
    """``POST /api/v1/sessions/{session_id}/finish``."""

    reason: FinishReason
    detail: str | None = None


class LoadWeightsCreateRequest(WireModel):
    """``POST /api/v1/load_weights`` in either addressing (see the module docstring)."""

    model_id: str | None = None
    seq_id: Int64 | None = None
    session_id: str | None = None
    model_seq_id: Int64 | None = None
    path: str
    optimizer: bool = False
    base_model: str | None = None
    user_metadata: dict[str, Any] | None = None
    #: The new model's optimizer (0.38 ``create_training_client_from_state(optimizer=)``).
    optimizer_config: OptimizerConfig | None = None

    @field_validator("path")
    @classmethod
    def _tinker_uri(cls, value: str) -> str:
        if not value.startswith("tinker://"):
            raise ValueError(f"path must be a tinker:// URI, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_addressing(self) -> LoadWeightsCreateRequest:
        legacy = self.model_id is not None
        creating = self.session_id is not None or self.model_seq_id is not None
        if legacy == creating:
            raise ValueError(
                "give either model_id (load into an existing model) or session_id and "
                "model_seq_id (create the model from the checkpoint), not both"
            )
        if creating and (self.session_id is None or self.model_seq_id is None):
            raise ValueError("session_id and model_seq_id come together")
        return self


class SampleFuture(UntypedAPIFuture):
    """The ``/asample`` answer: the future plus one sequence id per sample."""

    sample_sequence_ids: list[str] | None = None


class SaveWeightsExternalRequest(WireModel):
    """``POST /api/v1/save_weights_external``: export the adapter in PEFT format."""

    model_id: str
    path: str
    seq_id: Int64 | None = None
    ttl_seconds: Int64 | None = None
    age_encryption_recipients: list[str] | None = None


class SaveWeightsExternalResponse(WireModel):
    """The result of ``save_weights_external``: ``tinker://<run>/external_weights/<name>``."""

    path: str
    size_bytes: int | None = None
