"""tinkex-http: configuration, transports, the request pipeline, retries, futures polling,
rate limiting, SSE streaming, multipart encoding and safe checkpoint archive download.

Quick use::

    from tinkex_http import Config, HTTPClient, poll_future

    async with HTTPClient(Config(api_key="tml-...")) as http:
        fut = await http.post("/api/v1/forward_backward", body)
        result = await poll_future(http, fut["request_id"], request_type="ForwardBackward")

See ``docs/tinkex-http.md`` for the whole API.
"""

from __future__ import annotations

from tinkex_http._archive import (
    DEFAULT_MAX_ARCHIVE_BYTES,
    DEFAULT_MAX_EXPANSION,
    ArchiveTooLargeError,
    ArchiveURL,
    UnsafeArchiveError,
    archive_destination,
    download_archive,
    download_checkpoint_archive,
    extract_archive_safely,
    parse_checkpoint_tinker_path,
    resolve_archive_url,
)
from tinkex_http._breaker import (
    CircuitBreaker,
    CircuitBreakerRegistry,
    CircuitBreakerSettings,
    CircuitOpenError,
    breakers,
    endpoint_family,
)
from tinkex_http._client import HTTPClient, RequestOptions, StreamingResponse, new_idempotency_key
from tinkex_http._config import (
    API_KEY_PREFIX,
    HTTP_TRANSPORTS,
    LOCAL_API_KEY,
    LOG_LEVELS,
    POOL_NAMES,
    PROTOCOLS,
    Config,
    PoolName,
    SettingInfo,
    mask_url,
    normalize_base_url,
    parse_bool,
    parse_log_level,
    redact_headers,
)
from tinkex_http._encoding import decode_json, encode_json, to_jsonable
from tinkex_http._endpoints import EndpointSpec, endpoint_spec
from tinkex_http._futures import (
    QUEUE_STATES,
    APIFutureResolver,
    PollPolicy,
    default_queue_state_reason,
    poll_future,
)
from tinkex_http._h1pool import H1Transport
from tinkex_http._logs import LibraryLogger, apply_log_level, get_logger
from tinkex_http._multipart import MultipartBody, encode_multipart, flatten_form_fields
from tinkex_http._plugin import QueueStateLogger
from tinkex_http._ratelimit import (
    DEFAULT_BYTE_BUDGET,
    ByteEstimator,
    BytesSemaphore,
    RateLimiter,
    RetrySemaphore,
    SamplingDispatch,
    response_byte_limiter,
    tenant_key,
)
from tinkex_http._retry import (
    RETRYABLE_STATUS,
    RetryConfig,
    RetryPolicy,
    is_retryable_error,
    mark_retried,
    parse_retry_after,
    retried_by,
    retry_async,
    transport_time_left,
)
from tinkex_http._scrub import scrub_exception, scrub_request
from tinkex_http._secret import REDACTED, Secret
from tinkex_http._settings import is_sensitive_header
from tinkex_http._sse import SSEDecoder, SSEEvent
from tinkex_http._transport import (
    HTTP1_MAX_CONNECTIONS,
    KNOWN_TRANSPORT_PROVIDERS,
    effective_pool_limit,
    http_transport_factory,
    make_transport,
)
from tinkex_http._version import DEFAULT_BASE_URL, LOCAL_BASE_URL, SDK_VERSION, __version__

__all__ = [
    "API_KEY_PREFIX",
    "DEFAULT_BASE_URL",
    "DEFAULT_BYTE_BUDGET",
    "DEFAULT_MAX_ARCHIVE_BYTES",
    "DEFAULT_MAX_EXPANSION",
    "HTTP1_MAX_CONNECTIONS",
    "HTTP_TRANSPORTS",
    "KNOWN_TRANSPORT_PROVIDERS",
    "LOCAL_API_KEY",
    "LOCAL_BASE_URL",
    "LOG_LEVELS",
    "POOL_NAMES",
    "PROTOCOLS",
    "QUEUE_STATES",
    "REDACTED",
    "RETRYABLE_STATUS",
    "SDK_VERSION",
    "APIFutureResolver",
    "ArchiveTooLargeError",
    "ArchiveURL",
    "ByteEstimator",
    "BytesSemaphore",
    "CircuitBreaker",
    "CircuitBreakerRegistry",
    "CircuitBreakerSettings",
    "CircuitOpenError",
    "Config",
    "EndpointSpec",
    "H1Transport",
    "HTTPClient",
    "LibraryLogger",
    "MultipartBody",
    "PollPolicy",
    "PoolName",
    "QueueStateLogger",
    "RateLimiter",
    "RequestOptions",
    "RetryConfig",
    "RetryPolicy",
    "RetrySemaphore",
    "SSEDecoder",
    "SSEEvent",
    "SamplingDispatch",
    "Secret",
    "SettingInfo",
    "StreamingResponse",
    "UnsafeArchiveError",
    "__version__",
    "apply_log_level",
    "archive_destination",
    "breakers",
    "decode_json",
    "default_queue_state_reason",
    "download_archive",
    "download_checkpoint_archive",
    "effective_pool_limit",
    "encode_json",
    "encode_multipart",
    "endpoint_family",
    "endpoint_spec",
    "extract_archive_safely",
    "flatten_form_fields",
    "get_logger",
    "http_transport_factory",
    "is_retryable_error",
    "is_sensitive_header",
    "make_transport",
    "mark_retried",
    "mask_url",
    "new_idempotency_key",
    "normalize_base_url",
    "parse_bool",
    "parse_checkpoint_tinker_path",
    "parse_log_level",
    "parse_retry_after",
    "poll_future",
    "redact_headers",
    "resolve_archive_url",
    "response_byte_limiter",
    "retried_by",
    "retry_async",
    "scrub_exception",
    "scrub_request",
    "tenant_key",
    "to_jsonable",
    "transport_time_left",
]
