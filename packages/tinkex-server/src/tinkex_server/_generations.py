"""Wire models and answers of the later protocol generations (official SDK 0.18 - 0.38,
protocol.md §4) that the JSON generation's models do not cover.

* :func:`client_flags`: what ``POST /api/v1/client/config`` answers, i.e. the flags each
  SDK version reads, set to what this server supports (protobuf requests and zstd,
  ``load_weights`` creating models, server-side custom losses, no JWT).
* The models that are tinker 0.38's own live in :mod:`tinkex_types` and are re-exported
  here under the names this server used: :class:`~tinkex_types.ClientConfigRequest`,
  :class:`~tinkex_types.ClientConfigResponse`, ``DynamicConfigResponse``
  (:class:`~tinkex_types.ClientDynamicConfigResponse`), ``LoadWeightsCreateRequest``
  (:class:`~tinkex_types.LoadWeightsRequest`: legacy ``model_id`` + ``seq_id``, or 0.38's
  ``session_id`` + ``model_seq_id``, which creates ``<session_id>:train:<model_seq_id>``
  from the checkpoint) and ``SampleFuture`` (:class:`~tinkex_types.UntypedAPIFuture` with
  ``sample_sequence_ids``, one per sample; 0.38 asserts them).
  The PEFT export's models (``SaveWeightsExternalRequest``/``Response``) are tinker's too.
* What is this server's own: the session finish request (its ``reason`` is tinker's
  :data:`~tinkex_types.ClientSessionFinishReason`).
"""

from __future__ import annotations

from tinkex_server._config import ServerConfig
from tinkex_types import (
    ClientConfigRequest,
    ClientConfigResponse,
    ClientDynamicConfigResponse,
    ClientSessionFinishReason,
    LoadWeightsRequest,
    SaveWeightsExternalRequest,
    SaveWeightsExternalResponse,
    UntypedAPIFuture,
    WireModel,
)

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

#: Why a session ended (0.38 ``ServiceClient.close``): ``{"type": "success" | "errored" |
#: "interrupted"}``.
FinishReason = ClientSessionFinishReason
#: ``POST /api/v1/client/dynamic_config`` (0.25+).
DynamicConfigResponse = ClientDynamicConfigResponse
#: ``POST /api/v1/load_weights`` in either addressing.
LoadWeightsCreateRequest = LoadWeightsRequest
#: The ``/asample`` answer: the future plus one sequence id per sample.
SampleFuture = UntypedAPIFuture


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
        # What this server always answered (tinker 0.38's own default is True): the SDKs
        # keep httpx's default transport.
        use_pyqwest_transport=False,
    )


class FinishSessionRequest(WireModel):
    """``POST /api/v1/sessions/{session_id}/finish``."""

    reason: ClientSessionFinishReason
    detail: str | None = None
