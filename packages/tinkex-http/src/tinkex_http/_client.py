"""The async request pipeline: :class:`HTTPClient`.

``HTTPClient(config)`` owns one ``httpx.AsyncClient`` per connection pool (``session``,
``training``, ``sampling``, ``futures``, ``telemetry``), created lazily from the transport
registered for the base URL's scheme. Every call goes through one pipeline:

1. the body is encoded in one place (:func:`tinkex_http._wire.encode_body`): JSON through
   :func:`tinkex_http.encode_json`, multipart when ``files`` is given, or the codec of
   another ``media_type`` for a model (:meth:`HTTPClient.post_model`), optionally zstd;
2. headers are built once per logical request: ``accept``, ``content-type``
   (``content-encoding``), ``user-agent``, ``x-stainless-*`` identification, ``x-api-key``,
   Cloudflare Access, ``config.default_headers``, ``x-idempotency-key`` (32 hex chars,
   non-GET, reused across retries), the ``x-tinker-*`` request headers
   (``request_type=`` sends ``x-tinker-request-type``), ``x-tinker-sampling-backpressure``
   on ``/asample``, then the caller's headers; per attempt ``x-stainless-retry-count`` and
   ``x-stainless-read-timeout`` are set and ``Hooks.inject_headers`` runs (unless
   ``config.otel_propagate`` is off);
3. transport retries follow :class:`tinkex_http.RetryPolicy` (by default built from
   ``config.max_retries`` and ``config.retry_backoff``) with the endpoint's overrides
   (``/asample``, ``retrieve_future`` and the heartbeat: 0; telemetry: 1); an error after
   a retry budget > 0 is final for outer layers (:func:`tinkex_http.retried_by`);
4. ``Hooks.on_request`` fires once per attempt;
5. 2xx bodies are decoded by ``Content-Type`` in one place
   (:func:`tinkex_http._wire.decode_body`: JSON → plain data, empty → ``{}``; a registered
   binary codec → ``result_model``), 3xx become ``{"url", "status", "expires"}`` (redirects
   are never followed), other statuses raise the :func:`tinkex_types.status_error_class`
   error with the server's message and request id; transport failures raise
   :class:`tinkex_types.APIConnectionError` / :class:`tinkex_types.APITimeoutError`.

The clock, the sleeper and the random source are injectable (tests never sleep for real).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import httpx
from pydantic import BaseModel

from tinkex_http._config import Config, parse_log_level
from tinkex_http._direct import RequestBuilder, dispatch
from tinkex_http._logs import apply_log_level
from tinkex_http._messages import (
    RequestOptions,
    StreamingResponse,
    new_idempotency_key,
    secret_headers,
    static_headers,
    status_error,
)
from tinkex_http._pipeline import RETRIED_EXTENSION, make_plan, send
from tinkex_http._retry import RetryPolicy, mark_retried
from tinkex_http._scrub import scrub_exception
from tinkex_http._secret import REDACTED
from tinkex_http._transport import as_httpx_transport, make_transport
from tinkex_http._wire import decode_body, encode_body
from tinkex_types import (
    JSON_MEDIA_TYPE,
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    Hooks,
    get_hooks,
)

__all__ = ["HTTPClient", "RequestOptions", "StreamingResponse", "new_idempotency_key"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})

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
        apply_log_level(parse_log_level(self.config.log_level, "log_level"))
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
        self._transports: dict[str, httpx.AsyncBaseTransport] = {}
        self._foreign: dict[str, httpx.AsyncClient] = {}
        self._requests = RequestBuilder(self.config.base_url, self.timeout_for)
        self._closed = False
        #: Headers every request carries (identification, default headers) ...
        self.static_headers = static_headers(self.config)
        #: ... and the secret ones (API key, Cloudflare Access secret), held as Secrets.
        self.secret_headers = secret_headers(self.config)
        self._api_key = self.config.api_key

    # -- plumbing -------------------------------------------------------------------------
    @property
    def hooks(self) -> Hooks:
        return self._hooks if self._hooks is not None else get_hooks()

    @property
    def closed(self) -> bool:
        return self._closed

    def client_for(self, pool: str) -> httpx.AsyncClient:
        """The ``httpx.AsyncClient`` of one pool (created on first use)."""
        if self._closed:
            raise APIConnectionError("HTTPClient is closed")
        client = self._clients.get(pool)
        if client is None:
            if self._transport is not None:
                transport = self._transport
                if self.hooks.has_transport_wrappers():
                    wrapped = self.hooks.wrap_transport(transport, self.config)
                    transport = as_httpx_transport(wrapped, "the tinkex_wrap_transport hook")
            else:
                transport = make_transport(self.config, pool, hooks=self.hooks)
            client = httpx.AsyncClient(
                base_url=self.config.base_url,
                transport=transport,
                follow_redirects=False,
                timeout=self.timeout_for(self.config.timeout),
            )
            self._clients[pool] = client
            self._transports[pool] = transport
        return client

    def transport_for(self, pool: str) -> httpx.AsyncBaseTransport:
        """The transport of one pool (the one its ``httpx.AsyncClient`` sends through)."""
        transport = self._transports.get(pool)
        if transport is None or self._closed:
            self.client_for(pool)
            transport = self._transports[pool]
        return transport

    def build_request(
        self,
        pool: str,
        method: str,
        path: str,
        *,
        content: bytes | None,
        headers: Mapping[str, str],
        params: Mapping[str, Any] | None,
        timeout: float,
    ) -> httpx.Request:
        """The ``httpx.Request`` that ``client_for(pool).build_request(...)`` would build
        (same URL, headers in the same order, cookies, timeouts), without the client's
        merging work: the hot path of every attempt (:func:`tinkex_http._pipeline.send`)."""
        client = self.client_for(pool)
        return self._requests.build(
            client, method, path, content=content, headers=headers, params=params, timeout=timeout
        )

    async def dispatch(self, pool: str, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the pool's transport, as ``httpx.AsyncClient.send``
        would without redirects (:func:`tinkex_http._direct.dispatch`); the body is not
        read (the caller reads or streams it)."""
        return await dispatch(self.transport_for(pool), self.client_for(pool).cookies, request)

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

    def timeout_for(self, seconds: float) -> httpx.Timeout:
        """The httpx timeout of one attempt (connect capped by ``config.connect_timeout``)."""
        return httpx.Timeout(seconds, connect=min(self.config.connect_timeout, seconds))

    def scrub(self, text: str) -> str:
        """``text`` with the API key replaced by ``[REDACTED]``."""
        for secret in (self._api_key, *self.secret_headers.values()):
            value = secret.get_secret_value()
            if value and value in text:
                text = text.replace(value, REDACTED)
        return text

    async def aclose(self) -> None:
        """Close every pool (idempotent)."""
        if self._closed:
            return
        self._closed = True
        clients = [*self._clients.values(), *self._foreign.values()]
        self._clients.clear()
        self._transports.clear()
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
        media_type: str = JSON_MEDIA_TYPE,
        compress: str | None = None,
        result_model: type[BaseModel] | None = None,
        **overrides: Any,
    ) -> Any:
        """Send one logical request (with retries) and return the decoded body.

        ``overrides`` are :class:`RequestOptions` fields (``timeout=``, ``max_retries=``,
        ``request_type=``...). ``media_type``/``compress`` choose the body's codec and
        ``Content-Encoding``; ``result_model`` is what a binary answer (protobuf) decodes
        into (JSON answers stay plain data). 3xx answers return ``{"url", "status",
        "expires"}``.
        """
        method = method.upper()
        opts = self._options(options, overrides)
        encoded = encode_body(
            method,
            body,
            files=files,
            media_type=media_type,
            compress=compress,
            exclude_none=opts.exclude_none,
        )
        response = await send(self, make_plan(self, method, path, encoded, opts), stream=False)
        return self._decode(method, path, response, result_model)

    async def post(self, path: str, body: Any = None, **overrides: Any) -> Any:
        return await self.request("POST", path, body=body, **overrides)

    async def post_model(
        self,
        path: str,
        model: BaseModel,
        *,
        media_type: str = JSON_MEDIA_TYPE,
        compress: str | None = None,
        result_model: type[BaseModel] | None = None,
        request_type: str | None = None,
        **overrides: Any,
    ) -> Any:
        """POST a pydantic request ``model`` encoded as ``media_type`` (its codec must be
        registered in tinkex-types and carry the model), ``compress="zstd"`` to compress it.

        E.g. ``post_model("/api/v1/forward_backward", request,
        media_type=PROTOBUF_MEDIA_TYPE, compress="zstd", request_type="ForwardBackward")``.
        """
        if not isinstance(model, BaseModel):
            raise TypeError(f"post_model needs a pydantic model, got {type(model).__name__}")
        return await self.request(
            "POST",
            path,
            body=model,
            media_type=media_type,
            compress=compress,
            result_model=result_model,
            request_type=request_type,
            **overrides,
        )

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
        method = method.upper()
        opts = self._options(options, overrides)
        headers = dict(opts.headers or {})
        headers.setdefault("accept", accept)
        opts = replace(opts, headers=headers)
        encoded = encode_body(method, body, exclude_none=opts.exclude_none)
        response = await send(self, make_plan(self, method, path, encoded, opts), stream=True)
        try:
            if response.status_code >= 300:
                await response.aread()
                self._decode(method, path, response, None)  # raises for >= 400
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
            "GET", url, headers=headers, timeout=self.timeout_for(timeout or self.config.timeout)
        )
        try:
            try:
                response = await client.send(request, stream=True, follow_redirects=True)
            except BaseException as exc:
                scrub_exception(exc)
                raise
        except httpx.TimeoutException as exc:
            raise APITimeoutError(f"download timed out: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            raise APIConnectionError(f"download failed: {type(exc).__name__}: {exc}") from None
        try:
            if response.status_code >= 300:
                await response.aread()
                raise status_error(response, self.scrub)
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

    def _status_error(self, response: httpx.Response) -> APIStatusError:
        error = status_error(response, self.scrub)
        if response.extensions.get(RETRIED_EXTENSION):
            mark_retried(error, "transport")
        elif response.headers.get("x-should-retry", "").strip().lower() == "false":
            # The server said no retry will help: final for every layer, not only this one.
            mark_retried(error, "server")
        return error

    def _decode(
        self,
        method: str,
        path: str,
        response: httpx.Response,
        result_model: type[BaseModel] | None,
    ) -> Any:
        status = response.status_code
        if status in _REDIRECTS:
            location = response.headers.get("location")
            if not location:
                raise APIResponseValidationError(
                    f"{method} {path} answered {status} without a Location header"
                )
            return {"url": location, "status": status, "expires": response.headers.get("expires")}
        if status >= 300:
            raise self._status_error(response)
        return decode_body(method, path, response, result_model)
