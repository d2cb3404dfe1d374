"""The async request pipeline: :class:`HTTPClient` and :class:`RequestOptions`.

``HTTPClient(config)`` owns one ``httpx.AsyncClient`` per connection pool (``session``,
``training``, ``sampling``, ``futures``, ``telemetry``), created lazily from the transport
registered for the base URL's scheme. Every call goes through one pipeline:

1. the body is encoded (:func:`tinkex_http.encode_json`, or multipart when ``files`` is given);
2. headers are built once per logical request: ``accept``, ``content-type``, ``user-agent``,
   ``x-stainless-*`` identification, ``x-api-key``, Cloudflare Access, ``config.default_headers``,
   ``x-idempotency-key`` (32 hex chars, non-GET, reused across retries), the
   ``x-tinker-*`` request headers, ``x-tinker-sampling-backpressure`` on ``/asample``, then the
   caller's headers; per attempt ``x-stainless-retry-count`` and ``x-stainless-read-timeout``
   are set and ``Hooks.inject_headers`` runs (unless ``config.otel_propagate`` is off);
3. transport retries follow :class:`tinkex_http.RetryPolicy` (by default built from
   ``config.max_retries`` and ``config.retry_backoff``) with the endpoint's overrides
   (``/asample``, ``retrieve_future`` and the heartbeat: 0; telemetry: 1);
4. ``Hooks.on_request`` fires once per attempt;
5. 2xx bodies are JSON-decoded (empty → ``{}``), 3xx become
   ``{"url", "status", "expires"}`` (redirects are never followed), other statuses raise the
   :func:`tinkex_types.status_error_class` error with the server's message and request id;
   transport failures raise :class:`tinkex_types.APIConnectionError` /
   :class:`tinkex_types.APITimeoutError`.

The clock, the sleeper and the random source are injectable (tests never sleep for real).
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import httpx
import orjson
import structlog

from tinkex_http._config import Config, redact_headers
from tinkex_http._encoding import decode_json, encode_json
from tinkex_http._endpoints import endpoint_spec
from tinkex_http._multipart import encode_multipart
from tinkex_http._retry import RetryPolicy
from tinkex_http._secret import REDACTED
from tinkex_http._sse import SSEDecoder, SSEEvent
from tinkex_http._transport import make_transport
from tinkex_types import (
    NOT_GIVEN,
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    Hooks,
    NotGiven,
    RequestEvent,
    get_hooks,
    status_error_class,
)

__all__ = [
    "HTTPClient",
    "RequestOptions",
    "StreamingResponse",
    "new_idempotency_key",
]

_log = structlog.get_logger("tinkex.http")

Method = Literal["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


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


def _fmt_seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def _error_message(status: int, body: Any, text: str) -> str:
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
                parts = []
                for item in value[:5]:
                    if isinstance(item, dict):
                        loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                        msg = item.get("msg", "")
                        parts.append(f"{loc}: {msg}" if loc else str(msg))
                    else:
                        parts.append(str(item))
                return "; ".join(parts)
    snippet = text.strip()
    if snippet and not snippet.startswith("<"):
        return snippet[:500]
    return "Rate limited" if status == 429 else f"HTTP {status}"


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


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class HTTPClient:
    """Async HTTP client for the Tinker API (see the module docstring for the pipeline).

    Use as ``async with HTTPClient(config) as http: await http.post(path, body)``.
    ``transport`` replaces the registered transports for every pool (tests pass an
    ``httpx.MockTransport``); ``hooks`` defaults to :func:`tinkex_types.get_hooks`.
    ``retry_policy`` defaults to ``RetryPolicy(max_retries=config.max_retries,
    initial_delay=config.retry_backoff[0], max_delay=config.retry_backoff[1])``.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        hooks: Hooks | None = None,
        retry_policy: RetryPolicy | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.config = config if config is not None else Config()
        self._transport = transport
        self._hooks = hooks
        self.clock = clock
        self.wall_clock = wall_clock
        self.sleep = sleep
        self.rng = rng
        initial_delay, max_delay = self.config.retry_backoff
        self.retry_policy = retry_policy or RetryPolicy(
            max_retries=self.config.max_retries, initial_delay=initial_delay, max_delay=max_delay
        )
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._foreign: dict[str, httpx.AsyncClient] = {}
        self._closed = False
        self._static_headers = self._build_static_headers()
        self._api_key = self.config.api_key.get_secret_value()

    # -- plumbing -------------------------------------------------------------------------
    @property
    def hooks(self) -> Hooks:
        return self._hooks if self._hooks is not None else get_hooks()

    @property
    def closed(self) -> bool:
        return self._closed

    def _build_static_headers(self) -> dict[str, str]:
        cfg = self.config
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
            "x-api-key": cfg.api_key.get_secret_value(),
        }
        if cfg.cf_access_client_id:
            headers["cf-access-client-id"] = cfg.cf_access_client_id
        if cfg.cf_access_client_secret is not None:
            headers["cf-access-client-secret"] = cfg.cf_access_client_secret.get_secret_value()
        for name, value in cfg.default_headers.items():
            headers[name.lower()] = value
        return headers

    def client_for(self, pool: str) -> httpx.AsyncClient:
        """The ``httpx.AsyncClient`` of one pool (created on first use)."""
        if self._closed:
            raise APIConnectionError("HTTPClient is closed")
        client = self._clients.get(pool)
        if client is None:
            if self._transport is not None:
                transport = self._transport
                if self.hooks.has_transport_wrappers():
                    transport = self.hooks.wrap_transport(transport, self.config)
            else:
                transport = make_transport(self.config, pool, hooks=self.hooks)
            client = httpx.AsyncClient(
                base_url=self.config.base_url,
                transport=transport,
                follow_redirects=False,
                timeout=self._timeout(self.config.timeout),
            )
            self._clients[pool] = client
        return client

    def _foreign_client(self, url: str) -> httpx.AsyncClient:
        """A header-less client for absolute URLs on another origin (signed download URLs)."""
        scheme = httpx.URL(url).scheme
        client = self._foreign.get(scheme)
        if client is None:
            if self._transport is not None:
                transport = self._transport
            else:
                transport = make_transport(self.config, "training", hooks=self.hooks, scheme=scheme)
            client = httpx.AsyncClient(transport=transport, follow_redirects=True)
            self._foreign[scheme] = client
        return client

    def _timeout(self, seconds: float) -> httpx.Timeout:
        return httpx.Timeout(seconds, connect=min(self.config.connect_timeout, seconds))

    async def aclose(self) -> None:
        """Close every pool (idempotent)."""
        if self._closed:
            return
        self._closed = True
        clients = [*self._clients.values(), *self._foreign.values()]
        self._clients.clear()
        self._foreign.clear()
        for client in clients:
            await client.aclose()

    async def __aenter__(self) -> HTTPClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"HTTPClient(base_url={self.config.base_url!r}, pools={sorted(self._clients)})"

    # -- public calls ---------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        files: Mapping[str, Any] | None = None,
        options: RequestOptions | None = None,
        **overrides: Any,
    ) -> Any:
        """Send one logical request (with retries) and return the decoded JSON body.

        ``overrides`` are :class:`RequestOptions` fields (``timeout=``, ``max_retries=``...).
        3xx answers return ``{"url", "status", "expires"}``.
        """
        opts = self._options(options, overrides)
        response = await self._send(method, path, body=body, files=files, opts=opts, stream=False)
        return self._decode(method, path, response)

    async def post(self, path: str, body: Any = None, **overrides: Any) -> Any:
        return await self.request("POST", path, body=body, **overrides)

    async def get(self, path: str, **overrides: Any) -> Any:
        return await self.request("GET", path, **overrides)

    async def put(self, path: str, body: Any = None, **overrides: Any) -> Any:
        return await self.request("PUT", path, body=body, **overrides)

    async def delete(self, path: str, **overrides: Any) -> Any:
        return await self.request("DELETE", path, **overrides)

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        options: RequestOptions | None = None,
        accept: str = "text/event-stream",
        **overrides: Any,
    ) -> AsyncIterator[StreamingResponse]:
        """Open a streaming request; non-2xx statuses raise before anything is yielded."""
        opts = self._options(options, overrides)
        headers = dict(opts.headers or {})
        headers.setdefault("accept", accept)
        opts = replace(opts, headers=headers)
        response = await self._send(method, path, body=body, files=None, opts=opts, stream=True)
        try:
            if response.status_code >= 300:
                await response.aread()
                self._decode(method, path, response)  # raises for >= 400
                raise APIResponseValidationError(
                    f"{method} {path} answered {response.status_code} to a streaming request",
                    body=None,
                )
            yield StreamingResponse(response)
        finally:
            await response.aclose()

    @contextlib.asynccontextmanager
    async def download(
        self,
        url: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - httpx timeout of this request
    ) -> AsyncIterator[StreamingResponse]:
        """Stream an absolute URL (a signed archive URL) without any Tinker headers.

        Non-2xx raises the mapped status error.
        """
        if self._same_origin(url):
            client = self.client_for("training")
        else:
            client = self._foreign_client(url)
        headers = {
            "accept": "*/*",
            "user-agent": self.config.user_agent,
            "accept-encoding": "identity",
        }
        request = client.build_request(
            "GET", url, headers=headers, timeout=self._timeout(timeout or self.config.timeout)
        )
        try:
            response = await client.send(request, stream=True, follow_redirects=True)
        except httpx.TimeoutException as exc:
            raise APITimeoutError(f"download timed out: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            raise APIConnectionError(f"download failed: {type(exc).__name__}: {exc}") from None
        try:
            if response.status_code >= 300:
                await response.aread()
                raise self._status_error(response, "GET", httpx.URL(url).path)
            yield StreamingResponse(response)
        finally:
            await response.aclose()

    def _same_origin(self, url: str) -> bool:
        a, b = httpx.URL(url), httpx.URL(self.config.base_url)
        return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)

    # -- pipeline -------------------------------------------------------------------------
    @staticmethod
    def _options(options: RequestOptions | None, overrides: Mapping[str, Any]) -> RequestOptions:
        opts = options or RequestOptions()
        if overrides:
            try:
                opts = replace(opts, **overrides)
            except TypeError as exc:
                raise TypeError(f"unknown request option: {exc}") from None
        return opts

    def _headers_for(
        self, method: str, path: str, opts: RequestOptions, *, json_body: bool
    ) -> dict[str, str]:
        headers = dict(self._static_headers)
        if method != "GET" and json_body:
            headers["content-type"] = "application/json"
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
            headers["x-tinker-create-promise-roundtrip-time"] = repr(
                float(opts.create_roundtrip_time)
            )
        backpressure = opts.sampling_backpressure
        if backpressure is None:
            backpressure = endpoint_spec(path).sampling_backpressure
        if backpressure:
            headers["x-tinker-sampling-backpressure"] = "1"
        for name, value in (opts.headers or {}).items():
            headers[name.lower()] = value
        return headers

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any,
        files: Mapping[str, Any] | None,
        opts: RequestOptions,
        stream: bool,
    ) -> httpx.Response:
        method = method.upper()
        spec = endpoint_spec(path)
        pool = opts.pool or spec.pool
        max_retries = (
            opts.max_retries
            if opts.max_retries is not None
            else spec.max_retries
            if spec.max_retries is not None
            else self.retry_policy.max_retries
        )
        timeout = opts.timeout or spec.timeout or self.config.timeout

        content: bytes | None = None
        json_body = True
        extra_headers: dict[str, str] = {}
        if files is not None:
            multipart = encode_multipart(body or {}, files)
            content = multipart.content
            extra_headers["content-type"] = multipart.content_type
            json_body = False
        elif body is not None:
            content = encode_json(body, exclude_none=opts.exclude_none)
        elif method not in ("GET", "HEAD", "DELETE"):
            content = b""
        headers = self._headers_for(method, path, opts, json_body=json_body)
        headers.update(extra_headers)

        params: dict[str, Any] | None = None
        if self.config.default_query or opts.params:
            params = {**self.config.default_query, **(opts.params or {})}

        client = self.client_for(pool)
        hooks = self.hooks
        propagate = self.config.otel_propagate
        attempt = 0
        while True:
            attempt_headers = dict(headers)
            attempt_headers["x-stainless-retry-count"] = str(attempt)
            attempt_headers["x-stainless-read-timeout"] = _fmt_seconds(timeout)
            if propagate:
                hooks.inject_headers(attempt_headers)
            request = client.build_request(
                method,
                path,
                content=content,
                headers=attempt_headers,
                params=params,
                timeout=self._timeout(timeout),
            )
            if self.config.dump_headers:
                _log.debug(
                    "http_request",
                    method=method,
                    url=str(request.url),
                    headers=redact_headers(dict(request.headers)),
                    body_bytes=len(content or b""),
                )
            started = self.clock()
            try:
                response = await client.send(request, stream=True)
                if not stream or response.status_code >= 300:
                    await response.aread()
            except httpx.TransportError as exc:
                will_retry = attempt < max_retries
                self._emit(
                    hooks,
                    method,
                    path,
                    attempt,
                    started,
                    opts,
                    error=f"{type(exc).__name__}",
                    will_retry=will_retry,
                    sent=len(content or b""),
                )
                if will_retry:
                    delay = self.retry_policy.delay(attempt, rng=self.rng)
                    _log.debug(
                        "http_retry",
                        method=method,
                        path=path,
                        attempt=attempt,
                        error=type(exc).__name__,
                        delay_s=round(delay, 3),
                    )
                    await self.sleep(delay)
                    attempt += 1
                    continue
                raise self._transport_error(exc, method, path, timeout, attempt) from None
            status = response.status_code
            will_retry = (
                status >= 400
                and attempt < max_retries
                and self.retry_policy.should_retry_status(status, response.headers)
            )
            self._emit(
                hooks,
                method,
                path,
                attempt,
                started,
                opts,
                status=status,
                will_retry=will_retry,
                sent=len(content or b""),
                received=len(response.content) if not stream or status >= 300 else 0,
            )
            if will_retry:
                delay = self.retry_policy.delay(
                    attempt, response.headers, rng=self.rng, now=self.wall_clock
                )
                _log.debug(
                    "http_retry",
                    method=method,
                    path=path,
                    attempt=attempt,
                    status=status,
                    delay_s=round(delay, 3),
                )
                await response.aclose()
                await self.sleep(delay)
                attempt += 1
                continue
            return response

    def _emit(
        self,
        hooks: Hooks,
        method: str,
        path: str,
        attempt: int,
        started: float,
        opts: RequestOptions,
        *,
        status: int | None = None,
        error: str | None = None,
        will_retry: bool,
        sent: int = 0,
        received: int = 0,
    ) -> None:
        hooks.on_request(
            RequestEvent(
                method=method,
                path=path.split("?", 1)[0],
                attempt=attempt,
                duration_s=max(self.clock() - started, 0.0),
                status_code=status,
                error=error,
                request_type=opts.request_type,
                will_retry=will_retry,
                bytes_sent=sent,
                bytes_received=received,
                base_url=self.config.base_url,
            )
        )

    def _scrub(self, text: str) -> str:
        if self._api_key and self._api_key in text:
            text = text.replace(self._api_key, REDACTED)
        return text

    def _transport_error(
        self, exc: httpx.TransportError, method: str, path: str, timeout: float, attempt: int
    ) -> APIConnectionError:
        tries = f"after {attempt + 1} attempt{'s' if attempt else ''}"
        if isinstance(exc, httpx.TimeoutException):
            return APITimeoutError(
                self._scrub(
                    f"{method} {path} timed out ({type(exc).__name__}, {_fmt_seconds(timeout)} s timeout) {tries}"
                )
            )
        detail = str(exc) or type(exc).__name__
        return APIConnectionError(
            self._scrub(
                f"{method} {path} failed to connect {tries}: {type(exc).__name__}: {detail}"
            )
        )

    def _status_error(self, response: httpx.Response, method: str, path: str) -> APIStatusError:
        status = response.status_code
        text = response.text if response.content else ""
        body: Any
        try:
            body = decode_json(response.content) if response.content else None
        except ValueError:
            body = text[:2000] if text else None
        message = self._scrub(_error_message(status, body, text))
        request_id = response.headers.get("x-request-id") or response.headers.get("request-id")
        if request_id is None and isinstance(body, dict):
            rid = body.get("request_id")
            request_id = rid if isinstance(rid, str) else None
        cls = status_error_class(status)
        return cls(message, status_code=status, request_id=request_id, body=body)

    def _decode(self, method: str, path: str, response: httpx.Response) -> Any:
        status = response.status_code
        if status in _REDIRECTS:
            location = response.headers.get("location")
            if not location:
                raise APIResponseValidationError(
                    f"{method} {path} answered {status} without a Location header"
                )
            return {"url": location, "status": status, "expires": response.headers.get("expires")}
        if status >= 300:
            raise self._status_error(response, method, path)
        try:
            return decode_json(response.content)
        except ValueError:
            raise APIResponseValidationError(
                f"{method} {path} answered {status} with a body that is not JSON "
                f"({len(response.content)} bytes)",
                body=response.text[:2000],
            ) from None
