"""Transport registry, wrapping through hooks, per-pool clients and the built-in factory."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import tinkex_http._plugin as http_plugin
from tinkex_http import Config, HTTPClient, http_transport_factory, make_transport
from tinkex_types import Hooks, TinkexValidationError, hookimpl, make_plugin_manager


def test_plugin_registers_http_and_https(hooks: Hooks) -> None:
    assert hooks.transports().names() == ["http", "https"]


def test_unknown_scheme_names_registered_schemes_and_the_provider(hooks: Hooks) -> None:
    cfg = Config(base_url="local://", env={})
    with pytest.raises(TinkexValidationError) as info:
        make_transport(cfg, "session", hooks=hooks)
    text = str(info.value)
    assert info.value.field == "base_url"
    assert "'local'" in text
    assert "http, https" in text
    assert "tinkex-server" in text
    cfg2 = Config(api_key="tml-x", base_url="gopher://host", env={})
    with pytest.raises(TinkexValidationError, match="plugin package"):
        make_transport(cfg2, "session", hooks=hooks)


def test_builtin_factory_uses_http2_and_the_pool_limits() -> None:
    cfg = Config(api_key="tml-x", pool_size=4, pool_count=2, env={})
    for pool, limit in (
        ("session", 5),
        ("training", 10),
        ("sampling", 8),
        ("futures", 2),
        ("telemetry", 5),
    ):
        transport = http_transport_factory(config=cfg, pool=pool)
        assert isinstance(transport, httpx.AsyncHTTPTransport)
        inner: Any = transport._pool
        assert inner._http2 is True
        assert inner._max_connections == limit


def test_builtin_factory_applies_the_proxy() -> None:
    cfg = Config(api_key="tml-x", proxy="http://u:p@proxy.test:3128", env={})
    transport = http_transport_factory(config=cfg, pool="training")
    inner: Any = transport._pool
    assert type(inner).__name__ == "AsyncHTTPProxy"


class Wrapper(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return await self.inner.handle_async_request(request)


class WrapPlugin:
    def __init__(self) -> None:
        self.wrappers: list[Wrapper] = []
        self.configs: list[Any] = []

    @hookimpl
    def tinkex_wrap_transport(self, transport: Any, config: Any) -> Any:
        self.configs.append(config)
        wrapper = Wrapper(transport)
        self.wrappers.append(wrapper)
        return wrapper


class MockScheme:
    """Registers a ``mock`` scheme whose factory records the pool names."""

    def __init__(self) -> None:
        self.pools: list[str] = []

    @hookimpl
    def tinkex_register_transports(self, register: Any) -> None:
        def factory(*, config: Config, pool: str) -> httpx.AsyncBaseTransport:
            self.pools.append(pool)
            return httpx.MockTransport(lambda r: httpx.Response(200, json={"pool": pool}))

        register("mock", factory)


async def test_wrappers_apply_and_pools_get_their_own_transport() -> None:
    scheme, wrap = MockScheme(), WrapPlugin()
    hooks = Hooks(make_plugin_manager(load_entrypoints=False, plugins=[http_plugin, scheme, wrap]))
    cfg = Config(api_key="tml-x", base_url="mock://server", env={})
    async with HTTPClient(cfg, hooks=hooks) as http:
        assert await http.post("/api/v1/forward", {}) == {"pool": "training"}
        assert await http.post("/api/v1/asample", {}) == {"pool": "sampling"}
        assert await http.post("/api/v1/retrieve_future", {}) == {"pool": "futures"}
        assert await http.post("/api/v1/create_session", {}) == {"pool": "session"}
        assert await http.post("/api/v1/telemetry", {}) == {"pool": "telemetry"}
        assert await http.post("/api/v1/forward", {}) == {"pool": "training"}
    assert scheme.pools == ["training", "sampling", "futures", "session", "telemetry"]
    assert [w.calls for w in wrap.wrappers] == [2, 1, 1, 1, 1]
    assert all(c is cfg for c in wrap.configs)


async def test_no_wrapper_means_the_factory_transport_is_used_as_is() -> None:
    scheme = MockScheme()
    hooks = Hooks(make_plugin_manager(load_entrypoints=False, plugins=[http_plugin, scheme]))
    cfg = Config(api_key="tml-x", base_url="mock://server", env={})
    assert not hooks.has_transport_wrappers()
    transport = make_transport(cfg, "session", hooks=hooks)
    assert isinstance(transport, httpx.MockTransport)


async def test_closed_client_refuses_requests() -> None:
    hooks = Hooks(make_plugin_manager(load_entrypoints=False, plugins=[http_plugin]))
    http = HTTPClient(
        Config(api_key="tml-x", env={}),
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json={})),
        hooks=hooks,
    )
    await http.get("/api/v1/healthz")
    await http.aclose()
    await http.aclose()
    assert http.closed
    from tinkex_types import APIConnectionError

    with pytest.raises(APIConnectionError, match="closed"):
        await http.get("/api/v1/healthz")


async def test_builtin_transport_talks_to_a_real_loopback_server(hooks: Hooks) -> None:
    import asyncio

    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length)
        received.append(head + body)
        payload = b'{"session_id": "s-1"}'
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cfg = Config(base_url=f"http://127.0.0.1:{port}", env={})
        async with HTTPClient(cfg, hooks=hooks) as http:
            assert await http.post("/api/v1/create_session", {"tags": []}) == {"session_id": "s-1"}
    finally:
        server.close()
        await server.wait_closed()
    [raw] = received
    assert raw.startswith(b"POST /api/v1/create_session HTTP/1.1\r\n")
    assert b"x-api-key: tml-local" in raw
    assert raw.endswith(b'{"tags":[]}')


def test_cleartext_http_caps_every_pool() -> None:
    from tinkex_http import HTTP1_MAX_CONNECTIONS, Config, effective_pool_limit

    cleartext = Config(base_url="http://127.0.0.1:8000", api_key="tml-test")
    tls = Config(base_url="https://tinker.example", api_key="tml-test")
    assert tls.pool_max_connections("sampling") > HTTP1_MAX_CONNECTIONS
    assert effective_pool_limit(tls, "sampling") == tls.pool_max_connections("sampling")
    assert effective_pool_limit(tls, "futures") == tls.pool_max_connections("futures")
    for pool in ("session", "training", "sampling", "futures", "telemetry"):
        expected = min(cleartext.pool_max_connections(pool), HTTP1_MAX_CONNECTIONS)
        assert effective_pool_limit(cleartext, pool) == expected
    assert effective_pool_limit(cleartext, "sampling") == HTTP1_MAX_CONNECTIONS
    assert effective_pool_limit(cleartext, "session") == cleartext.pool_max_connections("session")
