"""httpx transport wrappers that trace every HTTP attempt as an OpenTelemetry CLIENT span."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import httpx
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from tinkex_telemetry._attrs import body_ids, protobuf_body_ids, route_of, template_path
from tinkex_telemetry._redact import SENSITIVE_HEADERS, is_secret_key, redact_text, sanitize_url

__all__ = ["TracingTransport", "tracing_off"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Requests never traced: the SDK's own telemetry and the background heart-beats (they
#: run in tasks that inherit the context of whatever created the session).
_NEVER_TRACED = ("/api/v1/telemetry", "/api/v1/session_heartbeat")
#: Requests that are traced only inside a caller's span: health checks.
_NO_ROOT = ("/api/v1/healthz", "/healthz")
#: The context key OpenTelemetry instrumentations honour to stay quiet.
_SUPPRESS_KEY: str = getattr(
    otel_context, "_SUPPRESS_INSTRUMENTATION_KEY", "suppress_instrumentation"
)


class _AttemptSpan:
    """One attempt's span: started before sending, ended once (when the body is done)."""

    def __init__(
        self,
        tracer: Tracer,
        propagator: TextMapPropagator | None,
        request: httpx.Request,
        capture_headers: frozenset[str],
    ) -> None:
        self._lock = threading.Lock()
        self._ended = False
        self.received = 0
        method = request.method.upper()
        url = request.url
        attrs: dict[str, AttributeValue] = {
            "http.request.method": method,
            "url.full": _url_full(url),
            "url.scheme": url.scheme,
            "url.template": _url_template(url),
            # In-process transports (local://) have no host: the scheme names the server.
            "server.address": url.host or url.scheme,
        }
        port = url.port or _DEFAULT_PORTS.get(url.scheme)
        if port is not None:
            attrs["server.port"] = port
        headers = request.headers
        retry = _int_header(headers.get("x-stainless-retry-count"))
        if retry is not None:
            attrs["tinkex.retry_count"] = retry
            if retry > 0:
                attrs["http.request.resend_count"] = retry
        request_type = headers.get("x-tinker-request-type")
        if request_type:
            attrs["tinkex.request_type"] = redact_text(request_type[:128])
        iteration = _int_header(headers.get("x-tinker-request-iteration"))
        if iteration is not None:
            attrs["tinkex.poll_iteration"] = iteration
        user_agent = headers.get("user-agent")
        if user_agent:
            attrs["user_agent.original"] = redact_text(user_agent[:256])
        for name in capture_headers:
            values = headers.get_list(name)
            if values:
                attrs[f"http.request.header.{name}"] = [redact_text(v[:256]) for v in values]

        # Parent: the current span (the SDK operation); without one, a traceparent the
        # caller already put on the request; otherwise a new root.
        parent_ctx = None
        if (
            propagator is not None
            and not trace.get_current_span().get_span_context().is_valid
            and any(key in headers for key in propagator.fields)
        ):
            parent_ctx = propagator.extract(carrier=dict(headers.items()))
        self.span: Span = tracer.start_span(
            f"{method} {route_of(url.path) if url.scheme in _DEFAULT_PORTS else _url_template(url)}",
            context=parent_ctx,
            kind=SpanKind.CLIENT,
            attributes=attrs,
        )
        if self.span.is_recording():
            try:
                content = request.content
            except httpx.RequestNotRead:
                content = b""
            if content:
                self.span.set_attribute("http.request.body.size", len(content))
                content_type = headers.get("content-type", "json")
                if "json" in content_type:
                    self.span.set_attributes(body_ids(content))
                elif "protobuf" in content_type:
                    encoding = headers.get("content-encoding")
                    self.span.set_attributes(protobuf_body_ids(content, encoding))
        if propagator is not None:
            carrier: dict[str, str] = {}
            propagator.inject(carrier, context=trace.set_span_in_context(self.span, parent_ctx))
            for key, value in carrier.items():
                request.headers[key] = value

    def response(self, response: httpx.Response) -> None:
        status = response.status_code
        self.span.set_attribute("http.response.status_code", status)
        version = response.extensions.get("http_version")
        if isinstance(version, bytes):
            text = version.decode("ascii", "replace")
            self.span.set_attribute("network.protocol.version", text.removeprefix("HTTP/"))
        if status >= 400:
            self.span.set_attribute("error.type", str(status))
            self.span.set_status(Status(StatusCode.ERROR))

    def failure(self, exc: BaseException) -> None:
        if not self.span.is_recording():
            return
        self.span.set_attribute("error.type", type(exc).__qualname__)
        self.span.set_status(Status(StatusCode.ERROR, redact_text(str(exc))[:256] or None))
        self.span.add_event(
            "exception",
            {
                "exception.type": f"{type(exc).__module__}.{type(exc).__qualname__}",
                "exception.message": redact_text(str(exc))[:1024],
            },
        )

    def end(self, exc: BaseException | None = None) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
        if exc is not None:
            self.failure(exc)
        if self.received:
            self.span.set_attribute("http.response.body.size", self.received)
        self.span.end()


def _api_path(path: str) -> str:
    """The path from ``/api/`` on (what follows a base-URL prefix or a ``local://`` data
    directory); without ``/api/``, only the last segment (never a directory path)."""
    at = path.find("/api/")
    if at >= 0:
        return path[at:]
    return "/" + path.rstrip("/").rsplit("/", 1)[-1]


def _url_full(url: httpx.URL) -> str:
    """``url.full`` without secrets; for a scheme that is not a network one (``local://``)
    without the data directory either."""
    if url.scheme in _DEFAULT_PORTS:
        return sanitize_url(str(url))
    query = f"?{url.query.decode('ascii', 'replace')}" if url.query else ""
    clean = sanitize_url(f"http://in-process{_api_path(url.path)}{query}")
    return f"{url.scheme}://" + clean.removeprefix("http://in-process")


def _url_template(url: httpx.URL) -> str:
    if url.scheme in _DEFAULT_PORTS:
        return template_path(url.path)
    return template_path(_api_path(url.path))


def tracing_off(tracer: Tracer) -> bool:
    """Whether ``tracer`` is (or, through the API's proxy, still resolves to) the no-op
    tracer: no tracer provider was given or installed globally, so every span it starts is
    a non-recording one."""
    if isinstance(tracer, trace.ProxyTracer):
        tracer = getattr(tracer, "_tracer", tracer)  # resolves a provider installed since
    return isinstance(tracer, trace.NoOpTracer)


def untraced(request: httpx.Request) -> bool:
    """Whether an attempt gets no span: instrumentation is suppressed in the current
    context; it is a telemetry post or a heart-beat (never traced); or it is a health
    check with no parent (no current span, no caller's ``traceparent``)."""
    if otel_context.get_value(_SUPPRESS_KEY):
        return True
    path = request.url.path.rstrip("/")
    if path.endswith(_NEVER_TRACED):
        # Nor continued by the server: drop the context the inject hook may have added.
        for name in ("traceparent", "tracestate", "baggage"):
            request.headers.pop(name, None)
        return True
    if not path.endswith(_NO_ROOT):
        return False
    has_parent = trace.get_current_span().get_span_context().is_valid
    return not (has_parent or "traceparent" in request.headers)


def _int_header(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


class _TracedAsyncStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, attempt: _AttemptSpan) -> None:
        self._inner = inner
        self._attempt = attempt

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                self._attempt.received += len(chunk)
                yield chunk
        except BaseException as exc:
            self._attempt.end(exc)
            raise

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._attempt.end()


class _TracedSyncStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, attempt: _AttemptSpan) -> None:
        self._inner = inner
        self._attempt = attempt

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._inner:
                self._attempt.received += len(chunk)
                yield chunk
        except BaseException as exc:
            self._attempt.end(exc)
            raise

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._attempt.end()


def _safe_capture(names: Iterable[str]) -> frozenset[str]:
    return frozenset(
        n.lower() for n in names if n.lower() not in SENSITIVE_HEADERS and not is_secret_key(n)
    )


class TracingTransport(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """Wrap an httpx transport: one CLIENT span per attempt, ``traceparent`` injected.

    Works for ``httpx.AsyncClient`` and ``httpx.Client`` alike (each direction needs the
    wrapped transport to support it). The span is a child of the current span (the SDK
    operation span), carries the OpenTelemetry HTTP client attributes
    (``http.request.method``, ``url.full`` without secrets, ``server.address``,
    ``server.port``, ``http.response.status_code``, ``error.type``,
    ``network.protocol.version``, ``http.request.resend_count``) and tinkex ones
    (``tinkex.retry_count``, ``tinkex.request_type``, ``tinkex.poll_iteration``,
    ``tinkex.request_id``, ``tinkex.model_id``, ``tinkex.seq_id``...), and ends when the
    response body has been read or closed. The header sent carries the attempt span as
    parent. ``local://`` attempts carry ``server.address=local`` and paths from ``/api/`` on
    (never the data directory). Telemetry posts and heart-beats are never traced, health
    checks only inside a caller's span, and nothing is traced while instrumentation is
    suppressed in the context. No value of ``x-api-key``, ``authorization`` or ``cf-access-client-secret``
    is ever recorded, nor any body.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | httpx.BaseTransport,
        *,
        tracer: Tracer,
        propagator: TextMapPropagator | None = None,
        capture_request_headers: Iterable[str] = (),
    ) -> None:
        self.inner = inner
        self._tracer = tracer
        self._propagator = propagator
        self._capture = _safe_capture(capture_request_headers)
        #: The headers that carry a caller's trace context (lower-case, as sent).
        self._trace_fields = frozenset(
            name.lower().encode("latin-1") for name in (propagator.fields if propagator else ())
        )

    def _idle(self, request: httpx.Request) -> bool:
        """Whether this attempt's span could be neither recorded nor propagated: no tracer
        provider is installed (the API's no-op tracer), no span is current and the request
        carries no trace context of the caller's. The attempt then goes straight to the
        inner transport (building the span's attributes costs more than the request's own
        client work); installing a provider later turns tracing on for the next attempt."""
        if not tracing_off(self._tracer):
            return False
        if trace.get_current_span().get_span_context().is_valid:
            return False
        if self._propagator is None:
            return True
        fields = self._trace_fields
        return not any(key.lower() in fields for key, _ in request.headers.raw)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(self.inner, httpx.AsyncBaseTransport):
            raise TypeError(f"{type(self.inner).__name__} is not an async transport")
        if untraced(request) or self._idle(request):
            return await self.inner.handle_async_request(request)
        attempt = _AttemptSpan(self._tracer, self._propagator, request, self._capture)
        token = otel_context.attach(trace.set_span_in_context(attempt.span))
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException as exc:
            attempt.end(exc)
            raise
        finally:
            otel_context.detach(token)
        return _finish_response(attempt, response, sync=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(self.inner, httpx.BaseTransport):
            raise TypeError(f"{type(self.inner).__name__} is not a sync transport")
        if untraced(request) or self._idle(request):
            return self.inner.handle_request(request)
        attempt = _AttemptSpan(self._tracer, self._propagator, request, self._capture)
        token = otel_context.attach(trace.set_span_in_context(attempt.span))
        try:
            response = self.inner.handle_request(request)
        except BaseException as exc:
            attempt.end(exc)
            raise
        finally:
            otel_context.detach(token)
        return _finish_response(attempt, response, sync=True)

    async def aclose(self) -> None:
        if isinstance(self.inner, httpx.AsyncBaseTransport):
            await self.inner.aclose()
        else:
            self.inner.close()

    def close(self) -> None:
        if isinstance(self.inner, httpx.BaseTransport):
            self.inner.close()


def _finish_response(
    attempt: _AttemptSpan, response: httpx.Response, *, sync: bool
) -> httpx.Response:
    attempt.response(response)
    stream: Any = response.stream
    if response.is_closed or response.is_stream_consumed:
        # Built from bytes (already read): nothing left to time.
        with contextlib.suppress(httpx.ResponseNotRead):
            attempt.received = len(response.content)
        attempt.end()
    elif sync and isinstance(stream, httpx.SyncByteStream):
        response.stream = _TracedSyncStream(stream, attempt)
    elif not sync and isinstance(stream, httpx.AsyncByteStream):
        response.stream = _TracedAsyncStream(stream, attempt)
    else:
        attempt.end()
    return response
