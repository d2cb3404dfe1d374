"""The HTTP/1.1 transport as the default of ``http://`` URLs: the factory's choice and its
opt-out, and :class:`tinkex_http.HTTPClient` over it against a real uvicorn server on
127.0.0.1 (JSON, status errors, gzip, streaming, downloads, timeouts, cookies, wrappers)."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import tinkex_http._plugin as http_plugin
from tinkex_http import (
    Config,
    H1Transport,
    HTTPClient,
    http_transport_factory,
)
from tinkex_server.testing import serve_app
from tinkex_types import (
    APITimeoutError,
    Hooks,
    NotFoundError,
    TinkexValidationError,
    hookimpl,
    make_plugin_manager,
)

BIG = bytes(range(256)) * 16384  # 4 MiB


# -- the factory ---------------------------------------------------------------------------------
def test_http_urls_get_the_h1_transport_with_the_pool_limit() -> None:
    cfg = Config(base_url="http://127.0.0.1:8000", pool_size=4, pool_count=2, env={})
    transport = http_transport_factory(config=cfg, pool="sampling")
    assert isinstance(transport, H1Transport)
    assert transport.max_connections == 8
    assert transport.keepalive_expiry == 30.0
    training = http_transport_factory(config=cfg, pool="training")
    assert isinstance(training, H1Transport)
    assert training.max_connections == 10


@pytest.mark.parametrize(
    "cfg",
    [
        {"base_url": "http://127.0.0.1:8000", "env": {"TINKEX_HTTP_TRANSPORT": "httpx"}},
        {"base_url": "http://127.0.0.1:8000", "http_transport": "httpx", "env": {}},
        {"base_url": "http://127.0.0.1:8000", "proxy": "http://proxy.test:3128", "env": {}},
        {"base_url": "https://tinker.example", "api_key": "tml-x", "env": {}},
    ],
)
def test_httpx_keeps_https_proxies_and_the_opt_out(cfg: dict[str, Any]) -> None:
    transport = http_transport_factory(config=Config(**cfg), pool="training")
    assert isinstance(transport, httpx.AsyncHTTPTransport)


def test_an_unknown_transport_name_is_refused_with_the_fix() -> None:
    with pytest.raises(TinkexValidationError) as info:
        Config(base_url="http://127.0.0.1:1", env={"TINKEX_HTTP_TRANSPORT": "curl"})
    assert info.value.field == "TINKEX_HTTP_TRANSPORT"
    assert "tinkex, httpx" in str(info.value)
    assert Config(base_url="http://127.0.0.1:1", env={}).http_transport == "tinkex"


# -- HTTPClient over it, against uvicorn ---------------------------------------------------------
async def info(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": str(request.url.query),
            "body": len(body),
            "key": request.headers.get("x-api-key"),
            "cookie": request.headers.get("cookie"),
            "idempotency": request.headers.get("x-idempotency-key"),
        }
    )


async def missing(request: Request) -> Response:
    return JSONResponse({"detail": "no such model"}, status_code=404)


async def gzipped(request: Request) -> Response:
    return Response(
        gzip.compress(b'{"zipped": true}'),
        media_type="application/json",
        headers={"content-encoding": "gzip"},
    )


async def events(request: Request) -> Response:
    async def gen() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f'data: {{"n": {i}}}\n\n'.encode()

    return StreamingResponse(gen(), media_type="text/event-stream")


async def archive(request: Request) -> Response:
    return Response(BIG, media_type="application/octet-stream")


async def slow(request: Request) -> Response:
    await asyncio.sleep(1)
    return JSONResponse({})


async def login(request: Request) -> Response:
    response = JSONResponse({})
    response.set_cookie("lb", "sticky-1")
    return response


APP = Starlette(
    routes=[
        Route("/api/v1/info", info, methods=["GET", "POST"]),
        Route("/api/v1/missing", missing),
        Route("/api/v1/gzipped", gzipped),
        Route("/api/v1/events", events),
        Route("/archive.tar", archive),
        Route("/api/v1/slow", slow, methods=["POST"]),
        Route("/api/v1/login", login, methods=["POST"]),
    ]
)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_app(APP) as url:
        yield url


@pytest.fixture
def hooks_h1() -> Hooks:
    return Hooks(make_plugin_manager(load_entrypoints=False, defaults=False, plugins=[http_plugin]))


def client(base_url: str, hooks: Hooks, **cfg: Any) -> HTTPClient:
    return HTTPClient(Config(base_url=base_url, env={}, **cfg), hooks=hooks)


async def test_json_calls_and_status_errors(base_url: str, hooks_h1: Hooks) -> None:
    async with client(base_url, hooks_h1, default_query={"v": "1"}) as http:
        got = await http.post("/api/v1/info", {"a": 1})
        assert got["method"] == "POST"
        assert got["path"] == "/api/v1/info"
        assert got["query"] == "v=1"
        assert got["body"] == len(b'{"a":1}')
        assert got["key"] == "tml-local"
        assert len(got["idempotency"]) == 32
        assert (await http.get("/api/v1/info"))["method"] == "GET"
        with pytest.raises(NotFoundError, match="no such model") as info_:
            await http.get("/api/v1/missing", max_retries=0)
        assert info_.value.status_code == 404
        assert await http.get("/api/v1/gzipped") == {"zipped": True}
        pool = http.client_for("training")
        assert isinstance(pool._transport, H1Transport)


async def test_streams_and_downloads_come_through(base_url: str, hooks_h1: Hooks) -> None:
    async with client(base_url, hooks_h1) as http:
        async with http.stream("GET", "/api/v1/events") as stream:
            assert [e async for e in stream.iter_json()] == [{"n": 0}, {"n": 1}, {"n": 2}]
        async with http.download(base_url + "/archive.tar") as download:
            assert download.content_length == len(BIG)
            chunks = [c async for c in download.iter_bytes()]
        assert b"".join(chunks) == BIG


async def test_a_read_timeout_maps_to_api_timeout_error(base_url: str, hooks_h1: Hooks) -> None:
    async with client(base_url, hooks_h1) as http:
        with pytest.raises(APITimeoutError, match="ReadTimeout"):
            await http.post("/api/v1/slow", {}, timeout=0.1, max_retries=0)
        # the timed-out connection was dropped; the pool still serves
        assert (await http.get("/api/v1/info"))["method"] == "GET"


async def test_cookies_the_server_sets_are_sent_back(base_url: str, hooks_h1: Hooks) -> None:
    async with client(base_url, hooks_h1) as http:
        assert (await http.post("/api/v1/info", {}))["cookie"] is None
        await http.post("/api/v1/login", {})
        assert (await http.post("/api/v1/info", {}))["cookie"] == "lb=sticky-1"


class Wrapper(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class WrapPlugin:
    def __init__(self) -> None:
        self.wrappers: list[Wrapper] = []

    @hookimpl
    def tinkex_wrap_transport(self, transport: Any, config: Any) -> Any:
        self.wrappers.append(Wrapper(transport))
        return self.wrappers[-1]


async def test_wrap_transport_plugins_wrap_the_h1_transport(base_url: str) -> None:
    wrap = WrapPlugin()
    hooks = Hooks(
        make_plugin_manager(load_entrypoints=False, defaults=False, plugins=[http_plugin, wrap])
    )
    async with client(base_url, hooks) as http:
        await http.post("/api/v1/info", {})
    assert [type(w.inner) for w in wrap.wrappers] == [H1Transport]
    assert wrap.wrappers[0].paths == ["/api/v1/info"]


# -- the direct path: what httpx.AsyncClient would have sent -------------------------------------
@pytest.mark.parametrize("cookie", [False, True])
@pytest.mark.parametrize("method", ["POST", "GET", "PUT", "DELETE"])
@pytest.mark.parametrize(
    ("base", "path", "params"),
    [
        ("http://127.0.0.1:8000", "/api/v1/forward", None),
        ("http://127.0.0.1:8000/prefix", "/api/v1/forward", {"a": "1"}),
        ("https://tinker.example/v/", "api/v1/asample", {"b": "x y"}),
        ("http://127.0.0.1:8000", "http://other.test:9/archive?sig=1", None),
    ],
)
async def test_build_request_matches_the_async_clients(
    base: str,
    path: str,
    params: dict[str, str] | None,
    method: str,
    cookie: bool,
    hooks_h1: Hooks,
) -> None:
    http = HTTPClient(Config(base_url=base, api_key="tml-x", env={}), hooks=hooks_h1)
    async with http:
        client = http.client_for("training")
        if cookie:
            client.cookies.set("lb", "sticky", domain="127.0.0.1")
        headers = {"accept": "application/json", "user-agent": "tinkex/x", "x-api-key": "k"}
        for content in (b'{"a":1}', b"", None):
            ours = http.build_request(
                "training",
                method,
                path,
                content=content,
                headers=headers,
                params=params,
                timeout=7.5,
            )
            theirs = client.build_request(
                method,
                path,
                content=content,
                headers=headers,
                params=params,
                timeout=http.timeout_for(7.5),
            )
            assert ours.url == theirs.url
            assert ours.headers.raw == theirs.headers.raw
            assert ours.extensions == theirs.extensions
            assert ours.content == theirs.content
            assert ours.method == theirs.method
            assert ours.headers.get("content-length") == theirs.headers.get("content-length")
