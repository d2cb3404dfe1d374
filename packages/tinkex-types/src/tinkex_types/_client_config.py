"""The client configuration handshake of the later generations (protocol.md §4.3).

``POST /api/v1/client/config`` answers :class:`ClientConfigResponse` (read once per client)
and ``POST /api/v1/client/dynamic_config`` :class:`ClientDynamicConfigResponse` (re-read every
``refresh_interval_sec``); both take :class:`ClientConfigRequest`. The official SDKs ignore
flags they do not know, and so does parsing here; every flag has tinker 0.38's default.
"""

from __future__ import annotations

from tinkex_types._base import WireModel

__all__ = ["ClientConfigRequest", "ClientConfigResponse", "ClientDynamicConfigResponse"]


class ClientConfigRequest(WireModel):
    """``{"sdk_version": ...}``: the version the server resolves the flags for."""

    sdk_version: str | None = None


class ClientConfigResponse(WireModel):
    """The feature flags of tinker 0.38 (with its defaults), plus the three that SDKs 0.18 -
    0.25 read (``proto_write_fwdbwd``, ``fwd_via_fwdbwd``, ``create_model_via_load_weights``)."""

    pjwt_auth_enabled: bool = False
    credential_default_source: str = "api_key"
    sample_dispatch_bytes_semaphore_size: int = 10 * 1024 * 1024
    inflight_response_bytes_semaphore_size: int = 50 * 1024 * 1024
    parallel_fwdbwd_chunks: bool = True
    #: Send forward_backward bodies as protobuf (0.24; 0.25+ always do when offered).
    proto_write_fwdbwd: bool = False
    #: zstd-compress the protobuf forward_backward bodies (``Content-Encoding: zstd``).
    proto_compress_fwdbwd: bool = False
    #: Send ``forward`` as ``forward_backward`` with ``forward_only`` (0.24).
    fwd_via_fwdbwd: bool = False
    fwdbwd_max_chunk_len: int = 1024
    fwdbwd_max_chunk_bytes_count: int = 5_000_000
    fwdbwd_dispatch_bytes_semaphore_size: int = 50_000_000
    billing_exception_max_pause_duration_sec: int = 3600
    sample_no_retries: bool = False
    sample_enable_stuck_detection: bool = True
    sample_max_concurrent_requests: int = 2000
    use_pyqwest_transport: bool = True
    #: Create training models through ``load_weights`` (0.25).
    create_model_via_load_weights: bool = False
    sample_use_retrieve_futures: bool = False
    custom_loss_server_side: bool = False
    sample_join_sampling_session: bool = False


class ClientDynamicConfigResponse(WireModel):
    """Flags a live client re-reads every ``refresh_interval_sec`` seconds."""

    refresh_interval_sec: int = 300
    sample_cancel_enabled: bool = False
    sample_cancel_max_batch_size: int = 64
