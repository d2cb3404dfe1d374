"""Transports: the built-in factory and the scheme registry lookup.

Transports are contributed through the ``tinkex_register_transports`` hook (this package
registers ``http`` and ``https``; ``tinkex-server`` registers ``local``). A factory is called as
``factory(config=config, pool=pool_name)`` and returns an ``httpx.AsyncBaseTransport``.
:func:`make_transport` picks the factory for the base URL's scheme and lets
``tinkex_wrap_transport`` plugins wrap the result (skipped entirely when no wrapper exists).

The built-in factory (:func:`http_transport_factory`) gives a cleartext ``http://`` base URL
without a proxy tinkex's own HTTP/1.1 transport (:class:`tinkex_http.H1Transport`, no anyio
or h11 on the request path); ``https://`` (HTTP/2 against the hosted service), a configured
proxy, or ``Config.http_transport="httpx"`` (``TINKEX_HTTP_TRANSPORT=httpx``) get
``httpx.AsyncHTTPTransport``.
"""

from __future__ import annotations

from typing import Any

import httpx

from tinkex_http._config import Config
from tinkex_http._h1pool import H1Transport
from tinkex_types import Hooks, TinkexValidationError, get_hooks

__all__ = [
    "HTTP1_MAX_CONNECTIONS",
    "KNOWN_TRANSPORT_PROVIDERS",
    "effective_pool_limit",
    "http_transport_factory",
    "httpx_transport",
    "make_transport",
]

#: URL schemes that other tinkex packages provide, for a helpful error message.
KNOWN_TRANSPORT_PROVIDERS: dict[str, str] = {
    "local": "tinkex-server",
    "http": "tinkex-http",
    "https": "tinkex-http",
}

#: Keep-alive connections expire after this many seconds of idleness.
KEEPALIVE_EXPIRY = 30.0


#: Connection cap per pool over cleartext ``http://``, where HTTP/2 is not negotiated and
#: every request in flight needs its own HTTP/1.1 connection. httpcore's pool scans all of
#: its connections on every request and response, so hundreds of sockets (the HTTP/2-sized
#: defaults) cost far more client CPU than they save: measured with 256 concurrent samples
#: against `tinkex serve`, 16 connections ran about 2x faster than 250.
HTTP1_MAX_CONNECTIONS = 16


def effective_pool_limit(config: Config, pool: str) -> int:
    """The connection limit the built-in transport uses for ``pool``: the configured limit,
    capped at :data:`HTTP1_MAX_CONNECTIONS` for cleartext ``http://`` base URLs."""
    limit = config.pool_max_connections(pool)
    if config.scheme == "http":
        return min(limit, HTTP1_MAX_CONNECTIONS)
    return limit


def http_transport_factory(*, config: Config, pool: str, **_: Any) -> httpx.AsyncBaseTransport:
    """The built-in transport with the pool's connection limit (:func:`effective_pool_limit`).

    A cleartext ``http://`` base URL without a proxy gets :class:`tinkex_http.H1Transport`
    (``https://`` URLs it meets, e.g. a signed download URL, go through the httpx transport
    below) unless ``config.http_transport`` is ``"httpx"``; everything else gets
    ``httpx.AsyncHTTPTransport`` with HTTP/2, the proxy applied if configured.
    """
    if config.scheme == "http" and config.proxy is None and config.http_transport == "tinkex":
        return H1Transport(
            max_connections=effective_pool_limit(config, pool),
            keepalive_expiry=KEEPALIVE_EXPIRY,
            fallback=lambda: httpx_transport(config, pool),
        )
    return httpx_transport(config, pool)


def httpx_transport(config: Config, pool: str) -> httpx.AsyncHTTPTransport:
    """``httpx.AsyncHTTPTransport`` with HTTP/2, the pool's limit and the proxy, if any."""
    limit = effective_pool_limit(config, pool)
    limits = httpx.Limits(
        max_connections=limit,
        max_keepalive_connections=limit,
        keepalive_expiry=KEEPALIVE_EXPIRY,
    )
    proxy: httpx.Proxy | None = None
    if config.proxy is not None:
        proxy = httpx.Proxy(config.proxy.get_secret_value(), headers=config.proxy_headers or None)
    return httpx.AsyncHTTPTransport(http2=True, limits=limits, proxy=proxy, retries=0)


def as_httpx_transport(transport: object, what: str) -> httpx.AsyncBaseTransport:
    """``transport`` when it is an ``httpx.AsyncBaseTransport`` (what ``httpx.AsyncClient``
    needs); otherwise a ``TypeError`` naming the plugin hook that returned it."""
    if isinstance(transport, httpx.AsyncBaseTransport):
        return transport
    raise TypeError(
        f"{what} returned a {type(transport).__name__}; "
        "return a subclass of httpx.AsyncBaseTransport"
    )


def make_transport(
    config: Config,
    pool: str,
    *,
    hooks: Hooks | None = None,
    scheme: str | None = None,
) -> httpx.AsyncBaseTransport:
    """Build the transport for ``pool`` from the factory registered for the URL scheme.

    ``scheme`` defaults to the scheme of ``config.base_url``. An unknown scheme raises
    :class:`tinkex_types.TinkexValidationError` listing the registered schemes and the
    package that would provide the missing one.
    """
    hooks = hooks if hooks is not None else get_hooks()
    wanted = (scheme or config.scheme).lower()
    registry = hooks.transports()
    if wanted not in registry:
        known = ", ".join(registry.names()) or "none"
        provider = KNOWN_TRANSPORT_PROVIDERS.get(wanted)
        fix = (
            f"install {provider} (pip install {provider}) so it registers {wanted!r}"
            if provider
            else "install the plugin package that registers this scheme"
        )
        raise TinkexValidationError(
            "base_url",
            f"no transport is registered for URL scheme {wanted!r} (registered: {known})",
            fix,
        )
    factory = registry.get(wanted)
    transport = as_httpx_transport(factory(config=config, pool=pool), f"transport {wanted!r}")
    if hooks.has_transport_wrappers():
        wrapped = hooks.wrap_transport(transport, config)
        transport = as_httpx_transport(wrapped, "the tinkex_wrap_transport hook")
    return transport
