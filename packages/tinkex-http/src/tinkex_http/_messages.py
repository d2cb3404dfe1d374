"""What travels around a request besides its body: identification headers, the per-request
``x-tinker-*`` headers, error messages and status errors built from an answer, and the
open streaming answer (:class:`StreamingResponse`)."""

from __future__ import annotations

import contextlib
import platform
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import structlog

from tinkex_http._config import Config
from tinkex_http._encoding import decode_json
from tinkex_http._endpoints import endpoint_spec
from tinkex_http._secret import Secret
from tinkex_http._settings import is_sensitive_header
from tinkex_http._sse import SSEDecoder, SSEEvent
from tinkex_types import NOT_GIVEN, APIStatusError, NotGiven, status_error_class

__all__ = [
    "RequestOptions",
    "StreamingResponse",
    "fmt_seconds",
    "new_idempotency_key",
    "request_headers",
    "secret_headers",
    "static_headers",
    "status_error",
]

_log = structlog.get_logger("tinkex.http")


def new_idempotency_key() -> str:
    """A fresh idempotency key: 32 lowercase hex characters."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """Per-request overrides; ``None`` fields fall back to the endpoint, then the Config."""

    #: Transport-layer retries (``0`` = one attempt).
    max_retries: int | None = None
    #: Read/write/pool timeout of one attempt, seconds.
    timeout: float | None = None
    headers: Mapping[str, str] | None = None
    params: Mapping[str, Any] | None = None
    #: ``NOT_GIVEN``: a fresh key for non-GET requests; ``None``: no key; a string: that key.
    idempotency_key: str | NotGiven | None = NOT_GIVEN
    #: Connection pool (``session``, ``training``, ``sampling``, ``futures``, ``telemetry``).
    pool: str | None = None
    #: ``X-Tinker-Request-Type`` (``ForwardBackward``, ``Sample``...).
    request_type: str | None = None
    #: ``X-Tinker-Request-Iteration``.
    iteration: int | None = None
    #: ``X-Tinker-Create-Promise-Roundtrip-Time`` (seconds).
    create_roundtrip_time: float | None = None
    #: Drop ``None`` values from the JSON body.
    exclude_none: bool = False
    #: Send ``x-tinker-sampling-backpressure: 1`` (defaults to on for ``/asample``).
    sampling_backpressure: bool | None = None


def _os_name() -> str:
    system = platform.system().lower()
    return {
        "darwin": "MacOS",
        "linux": "Linux",
        "windows": "Windows",
        "freebsd": "FreeBSD",
        "openbsd": "OpenBSD",
    }.get(system, f"Other:{system}" if system else "Unknown")


def _arch_name() -> str:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return "x64"
    if machine in ("arm64", "aarch64"):
        return "arm64"
    if machine.startswith("arm"):
        return "arm"
    if machine in ("i386", "i686", "x86"):
        return "x32"
    return f"other:{machine}" if machine else "unknown"


def fmt_seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def static_headers(cfg: Config) -> dict[str, str]:
    """The headers every request of a client carries (identification, defaults), without
    the secret ones (:func:`secret_headers`), so no object holds a key in plain text."""
    headers = {
        "accept": "application/json",
        "accept-encoding": "gzip, deflate",
        "user-agent": cfg.user_agent,
        "x-stainless-lang": "python",
        "x-stainless-package-version": cfg.sdk_version,
        "x-stainless-os": _os_name(),
        "x-stainless-arch": _arch_name(),
        "x-stainless-runtime": platform.python_implementation(),
        "x-stainless-runtime-version": platform.python_version(),
        "x-stainless-async": "async:asyncio",
    }
    if cfg.cf_access_client_id:
        headers["cf-access-client-id"] = cfg.cf_access_client_id
    for name, value in cfg.default_headers.items():
        if not is_sensitive_header(name):
            headers[name.lower()] = value
    return headers


def secret_headers(cfg: Config) -> dict[str, Secret]:
    """The secret headers every request carries (``x-api-key``, the Cloudflare Access
    secret, sensitive ``default_headers``), as :class:`Secret` values: they become plain
    text only in the request being sent."""
    headers = {"x-api-key": cfg.api_key}
    if cfg.cf_access_client_secret is not None:
        headers["cf-access-client-secret"] = cfg.cf_access_client_secret
    for name, value in cfg.default_headers.items():
        if is_sensitive_header(name):
            headers[name.lower()] = Secret(value)
    return headers


def request_headers(
    static: Mapping[str, str], method: str, path: str, opts: RequestOptions
) -> dict[str, str]:
    """The headers of one logical request (the same on every attempt): the static ones,
    the idempotency key, the ``x-tinker-*`` headers, then the caller's."""
    headers = dict(static)
    if method not in ("GET", "HEAD"):
        key = opts.idempotency_key
        if isinstance(key, NotGiven):
            headers["x-idempotency-key"] = new_idempotency_key()
        elif key is not None:
            headers["x-idempotency-key"] = key
    if opts.request_type is not None:
        headers["x-tinker-request-type"] = opts.request_type
    if opts.iteration is not None:
        headers["x-tinker-request-iteration"] = str(opts.iteration)
    if opts.create_roundtrip_time is not None:
        headers["x-tinker-create-promise-roundtrip-time"] = repr(float(opts.create_roundtrip_time))
    backpressure = opts.sampling_backpressure
    if backpressure is None:
        backpressure = endpoint_spec(path).sampling_backpressure
    if backpressure:
        headers["x-tinker-sampling-backpressure"] = "1"
    for name, value in (opts.headers or {}).items():
        headers[name.lower()] = value
    return headers


def _list_message(items: list[Any]) -> str:
    parts = []
    for item in items[:5]:
        if isinstance(item, dict):
            loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
            msg = item.get("msg", "")
            parts.append(f"{loc}: {msg}" if loc else str(msg))
        else:
            parts.append(str(item))
    return "; ".join(parts)


def error_message(status: int, body: Any, text: str) -> str:
    """The server's human-readable message for an error response."""
    if isinstance(body, dict):
        for key in ("detail", "message", "error"):
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
            if isinstance(value, dict):
                inner = value.get("message") or value.get("detail")
                if isinstance(inner, str) and inner.strip():
                    return inner.strip()
            if isinstance(value, list) and value:
                return _list_message(value)
    snippet = text.strip()
    if snippet and not snippet.startswith("<"):
        return snippet[:500]
    return "Rate limited" if status == 429 else f"HTTP {status}"


def status_error(response: httpx.Response, scrub: Callable[[str], str]) -> APIStatusError:
    """The :func:`tinkex_types.status_error_class` error of a non-2xx answer."""
    status = response.status_code
    text = response.text if response.content else ""
    body: Any
    try:
        body = decode_json(response.content) if response.content else None
    except ValueError:
        body = text[:2000] if text else None
    message = scrub(error_message(status, body, text))
    request_id = response.headers.get("x-request-id") or response.headers.get("request-id")
    if request_id is None and isinstance(body, dict):
        rid = body.get("request_id")
        request_id = rid if isinstance(rid, str) else None
    cls = status_error_class(status)
    method: str | None = None
    path: str | None = None
    with contextlib.suppress(RuntimeError):  # a response made without a request (tests)
        method, path = response.request.method, response.request.url.path
    return cls(
        message, status_code=status, request_id=request_id, body=body, method=method, path=path
    )


class StreamingResponse:
    """An open, successful (2xx) streaming response; iterate it, then it closes itself."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status_code(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self._response.headers

    @property
    def content_length(self) -> int | None:
        raw = self._response.headers.get("content-length")
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return None

    async def iter_bytes(self, chunk_size: int | None = None) -> AsyncIterator[bytes]:
        """Body bytes (decompressed when the server used gzip)."""
        async for chunk in self._response.aiter_bytes(chunk_size):
            yield chunk

    async def iter_events(self) -> AsyncIterator[SSEEvent]:
        """Server-sent events decoded incrementally from the body."""
        decoder = SSEDecoder()
        async for chunk in self._response.aiter_bytes():
            for event in decoder.feed(chunk):
                yield event
        for event in decoder.flush():
            yield event

    async def iter_json(self) -> AsyncIterator[Any]:
        """The JSON ``data`` of each SSE event; undecodable or empty events are skipped."""
        async for event in self.iter_events():
            if not event.data:
                continue
            try:
                yield orjson.loads(event.data)
            except orjson.JSONDecodeError:
                _log.debug("sse_event_not_json", size=len(event.data))

    async def aclose(self) -> None:
        await self._response.aclose()
