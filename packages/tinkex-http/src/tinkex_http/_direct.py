"""The per-attempt hot path of :class:`tinkex_http.HTTPClient` without ``httpx.AsyncClient``.

:class:`RequestBuilder` builds the ``httpx.Request`` that a pool's ``AsyncClient`` would
build for a path (the base URL joined the same way, the client's default headers our
headers do not override first, the client's cookies, the timeouts as an extension), and
:func:`dispatch` sends it straight through the pool's transport as ``AsyncClient.send``
would without following redirects. What the client would do per request and this skips:
merging URLs, headers, query and cookies through its general code, the cookie jar's
urllib round trip on every answer (only an answer with ``Set-Cookie`` pays for it here),
and its redirect/auth/event-hook layers (``HTTPClient`` has none of those).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

import httpx

__all__ = ["RequestBuilder", "dispatch"]

_httpx_log = logging.getLogger("httpx")
_URL_CACHE: Final = 512
_FRAMING: Final = frozenset({"host", "content-length", "transfer-encoding"})
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})


def _base_url(base_url: str) -> httpx.URL:
    """The base URL with a trailing slash, as ``httpx.AsyncClient`` keeps it."""
    url = httpx.URL(base_url)
    if url.raw_path.endswith(b"/"):
        return url
    return url.copy_with(raw_path=url.raw_path + b"/")


def _join(base: httpx.URL, path: str) -> httpx.URL:
    """``path`` against ``base`` as ``httpx.AsyncClient`` merges it (absolute URLs as is)."""
    url = httpx.URL(path)
    if url.is_relative_url:
        return base.copy_with(raw_path=base.raw_path + url.raw_path.lstrip(b"/"))
    return url


class RequestBuilder:
    """Builds attempts' requests for one base URL (URLs and timeouts cached)."""

    def __init__(self, base_url: str, timeout_for: Callable[[float], httpx.Timeout]) -> None:
        self._base = _base_url(base_url)
        self._timeout_for = timeout_for
        self._urls: dict[str, httpx.URL] = {}
        self._timeouts: dict[float, dict[str, float | None]] = {}
        self._defaults: dict[httpx.AsyncClient, list[tuple[str, str, str]]] = {}

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            url = _join(self._base, path)
            if len(self._urls) >= _URL_CACHE:
                self._urls.clear()
            self._urls[path] = url
        return url

    def _client_headers(self, client: httpx.AsyncClient) -> list[tuple[str, str, str]]:
        defaults = self._defaults.get(client)
        if defaults is None:
            defaults = self._defaults[client] = [
                (k.decode("latin-1").lower(), k.decode("latin-1"), v.decode("latin-1"))
                for k, v in client.headers.raw
            ]
        return defaults

    def build(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        *,
        content: bytes | None,
        headers: Mapping[str, str],
        params: Mapping[str, Any] | None,
        timeout: float,
    ) -> httpx.Request:
        """What ``client.build_request(method, path, content=, headers=, params=,
        timeout=)`` returns, built with less work."""
        url = self._url(path)
        extensions = self._timeouts.get(timeout)
        if extensions is None:
            extensions = self._timeouts[timeout] = self._timeout_for(timeout).as_dict()
        jar = client.cookies
        names = {name.lower() for name in headers}
        # the client's default headers that ours do not override, first, as httpx merges
        kept = [
            (raw, value) for low, raw, value in self._client_headers(client) if low not in names
        ]
        if not params and not jar and names.isdisjoint(_FRAMING) and url.host:
            # the common case, without httpx's auto-header pass: Host first, then a body's
            # Content-Length last (an empty POST/PUT/PATCH body: right after Host)
            items: list[tuple[str, str]] = [("Host", url.netloc.decode("ascii"))]
            tail: list[tuple[str, str]] = []
            if content:
                tail.append(("Content-Length", str(len(content))))
            elif method in _BODY_METHODS:
                items.append(("Content-Length", "0"))
            request = httpx.Request(
                method,
                url,
                headers=[*items, *kept, *headers.items(), *tail],
                stream=httpx.ByteStream(content or b""),
                extensions={"timeout": extensions},
            )
            request.read()  # the body is bytes: .content is set, as httpx does
            return request
        return httpx.Request(
            method,
            url,
            content=content,
            params=params or None,
            headers=[*kept, *headers.items()],
            cookies=httpx.Cookies(jar) if jar else None,
            extensions={"timeout": extensions},
        )


async def dispatch(
    transport: httpx.AsyncBaseTransport, cookies: httpx.Cookies, request: httpx.Request
) -> httpx.Response:
    """Send ``request`` through ``transport`` as ``httpx.AsyncClient.send`` would without
    redirects: errors carry the request, the answer keeps it, cookies the server sets go
    into ``cookies`` (the pool client's jar, sent back on the next requests), httpx's
    ``HTTP Request: ...`` INFO line is written. The body is not read."""
    try:
        response = await transport.handle_async_request(request)
    except httpx.RequestError as exc:
        exc.request = request
        raise
    response.request = request
    if "set-cookie" in response.headers:
        cookies.extract_cookies(response)
    if _httpx_log.isEnabledFor(logging.INFO):
        _httpx_log.info(
            'HTTP Request: %s %s "%s %d %s"',
            request.method,
            request.url,
            response.http_version,
            response.status_code,
            response.reason_phrase,
        )
    return response
