"""Per-endpoint defaults: connection pool, transport retries and timeout
(tinkex-features.md §2.1, protocol.md §2.13)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EndpointSpec", "endpoint_spec"]


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """``None`` means "use the Config value"."""

    pool: str
    max_retries: int | None = None
    timeout: float | None = None
    sampling_backpressure: bool = False


_SESSION = EndpointSpec("session")
_TRAINING = EndpointSpec("training")
_SAMPLING = EndpointSpec("sampling")

_EXACT: dict[str, EndpointSpec] = {
    "/api/v1/create_session": _SESSION,
    "/api/v1/session_heartbeat": EndpointSpec("session", max_retries=0, timeout=10.0),
    "/api/v1/get_server_capabilities": _SESSION,
    "/api/v1/healthz": _SESSION,
    "/api/v1/create_model": _SESSION,
    "/api/v1/create_sampling_session": _SESSION,
    "/api/v1/asample": EndpointSpec("sampling", max_retries=0, sampling_backpressure=True),
    "/api/v1/stream_sample": EndpointSpec("sampling", max_retries=0),
    "/api/v1/retrieve_future": EndpointSpec("futures", max_retries=0, timeout=45.0),
    "/api/v1/telemetry": EndpointSpec("telemetry", max_retries=1, timeout=5.0),
}
_ARCHIVE = EndpointSpec("training", max_retries=0)


def endpoint_spec(path: str) -> EndpointSpec:
    """Defaults for ``path`` (relative to the base URL; a query string is ignored)."""
    bare = path.split("?", 1)[0].rstrip("/") or "/"
    spec = _EXACT.get(bare)
    if spec is not None:
        return spec
    if bare.startswith("/api/v1/samplers/"):
        return _SAMPLING
    if bare.endswith("/archive"):
        return _ARCHIVE
    return _TRAINING
