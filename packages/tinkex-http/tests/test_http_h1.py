"""tinkex's HTTP/1.1 transport (:class:`tinkex_http.H1Transport`) against real 127.0.0.1
servers: a scripted asyncio server (below) for the protocol's edge cases (chunked answers,
close-delimited bodies, a server closing an idle or a busy connection, a server that never
answers, the pool limit, cancellation, a multi-MB stream), no mocks."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar

import httpx
import pytest

from tinkex_http import H1Transport
from tinkex_http._h1 import HIGH_WATER, MAX_CHUNK, H1Connection


@dataclass
class Req:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    conn: int  # 1-based connection number
    index: int  # 0-based request number on that connection
    reader: asyncio.StreamReader = field(repr=False, compare=False)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


#: ``handler(request, writer)`` answers; returning ``False`` closes the connection after it.
Handler = Callable[[Req, asyncio.StreamWriter], Awaitable[bool | None]]


async def _read_request(reader: asyncio.StreamReader, conn: int, index: int) -> Req | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    req = Req(method, target, headers, b"", conn, index, reader)
    if (req.header("transfer-encoding") or "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        req.body = b"".join(parts)
    elif req.header("content-length"):
        req.body = await reader.readexactly(int(req.header("content-length") or 0))
    return req


@dataclass
class RawServer:
    handler: Handler
    connections: int = 0
    requests: list[Req] = field(default_factory=list)
    #: set when a connection's reader saw the client close it
    client_closed: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        conn, index = self.connections, 0
        try:
            while True:
                req = await _read_request(reader, conn, index)
                if req is None:
                    self.client_closed.set()
                    break
                self.requests.append(req)
                keep = await self.handler(req, writer)
                await writer.drain()
                index += 1
                if keep is False:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            self.client_closed.set()
        finally:
            writer.close()


def answer(body: bytes = b"ok", status: str = "200 OK", headers: str = "") -> bytes:
    """A complete ``Content-Length`` response."""
    return f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{headers}\r\n".encode() + body


def timeouts(seconds: float = 5.0, **overrides: float) -> dict[str, dict[str, float | None]]:
    """``extensions=`` of an httpx.Request with these timeouts."""
    timeout = httpx.Timeout(seconds, **overrides)  # type: ignore[arg-type]
    return {"timeout": timeout.as_dict()}


async def until(condition: Callable[[], object]) -> None:
    """Wait until ``condition()`` holds (the loop runs the sockets meanwhile)."""
    while not condition():  # noqa: ASYNC110 - a condition on transport internals
        await asyncio.sleep(0.005)


def get(url: str, method: str = "GET", **kwargs: object) -> httpx.Request:
    kwargs.setdefault("extensions", timeouts())
    return httpx.Request(method, url, **kwargs)  # type: ignore[arg-type]


async def fetch(transport: H1Transport, request: httpx.Request) -> httpx.Response:
    response = await transport.handle_async_request(request)
    await response.aread()
    return response


@pytest.fixture
async def transport() -> AsyncIterator[H1Transport]:
    t = H1Transport(max_connections=4)
    yield t
    await t.aclose()


async def ok(req: Req, writer: asyncio.StreamWriter) -> None:
    writer.write(answer(f"{req.method} {req.target} {len(req.body)}".encode()))


# -- requests on the wire ------------------------------------------------------------------------
async def test_get_and_post_share_one_kept_alive_connection(transport: H1Transport) -> None:
    async with RawServer(ok) as srv:
        first = await fetch(transport, get(srv.url + "/a?x=1"))
        second = await fetch(transport, get(srv.url + "/b", "POST", content=b"12345"))
    assert (first.status_code, first.content) == (200, b"GET /a?x=1 0")
    assert second.content == b"POST /b 5"
    assert first.http_version == "HTTP/1.1"
    assert first.reason_phrase == "OK"
    assert srv.connections == 1
    assert [r.index for r in srv.requests] == [0, 1]
    assert srv.requests[1].body == b"12345"
    assert srv.requests[1].header("host") == srv.url.removeprefix("http://")
    assert transport.connections == 1
    assert transport.idle_connections == 1


class CountingConnection(H1Connection):
    writes: ClassVar[list[bytes]] = []

    def write(self, data: bytes) -> None:
        CountingConnection.writes.append(data)
        super().write(data)


async def test_head_and_bytes_body_go_out_in_one_write(
    transport: H1Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tinkex_http._h1pool as h1pool

    monkeypatch.setattr(h1pool, "H1Connection", CountingConnection)
    CountingConnection.writes = []
    body = b"x" * 20_000
    async with RawServer(ok) as srv:
        response = await fetch(transport, get(srv.url + "/p", "POST", content=body))
    assert response.content == b"POST /p 20000"
    assert len(CountingConnection.writes) == 1
    assert CountingConnection.writes[0].startswith(b"POST /p HTTP/1.1\r\n")
    assert CountingConnection.writes[0].endswith(b"\r\n\r\n" + body)


async def test_async_iterator_bodies_go_chunked_or_with_their_length(
    transport: H1Transport,
) -> None:
    async def parts() -> AsyncIterator[bytes]:
        for piece in (b"abc", b"", b"defg"):
            yield piece

    async with RawServer(ok) as srv:
        chunked = await fetch(transport, get(srv.url + "/c", "POST", content=parts()))
        sized = await fetch(
            transport,
            get(srv.url + "/s", "POST", content=parts(), headers={"content-length": "7"}),
        )
    assert chunked.content == b"POST /c 7"
    assert sized.content == b"POST /s 7"
    assert srv.requests[0].header("transfer-encoding") == "chunked"
    assert srv.requests[1].header("content-length") == "7"
    assert [r.body for r in srv.requests] == [b"abcdefg", b"abcdefg"]
    assert srv.connections == 1


async def test_a_header_with_a_line_break_is_refused(transport: H1Transport) -> None:
    request = get("http://127.0.0.1:9/x")
    request.headers["x-evil"] = "a"
    request.headers._list[-1] = (b"x-evil", b"x-evil", b"a\r\nx-injected: 1")
    with pytest.raises(httpx.LocalProtocolError, match="CR or LF"):
        await transport.handle_async_request(request)
    assert transport.connections == 0


# -- response framing ----------------------------------------------------------------------------
async def test_chunked_answer_with_extensions_and_trailers(transport: H1Transport) -> None:
    async def chunked(req: Req, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-trailer: 1\r\n\r\n"
        )

    async with RawServer(chunked) as srv:
        first = await fetch(transport, get(srv.url + "/1"))
        second = await fetch(transport, get(srv.url + "/2"))
    assert first.content == second.content == b"hello world"
    assert srv.connections == 1  # the chunked body was read to its end: reused


async def test_chunked_answer_arriving_byte_by_byte(transport: H1Transport) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n"
    )

    async def trickle(req: Req, writer: asyncio.StreamWriter) -> None:
        for i in range(len(raw)):
            writer.write(raw[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0)

    async with RawServer(trickle) as srv:
        response = await fetch(transport, get(srv.url + "/"))
    assert response.content == b"abc0123456789"


async def test_close_delimited_body_is_read_to_eof_and_not_reused(
    transport: H1Transport,
) -> None:
    async def until_close(req: Req, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it")
        return False

    async with RawServer(until_close) as srv:
        first = await fetch(transport, get(srv.url + "/1"))
        second = await fetch(transport, get(srv.url + "/2"))
    assert first.content == second.content == b"all of it"
    assert srv.connections == 2
    assert transport.connections == 0


async def test_connection_close_answer_is_honoured(transport: H1Transport) -> None:
    async def closing(req: Req, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(b"bye", headers="Connection: close\r\n"))
        return False

    async with RawServer(closing) as srv:
        await fetch(transport, get(srv.url + "/1"))
        response = await fetch(transport, get(srv.url + "/2"))
    assert response.content == b"bye"
    assert srv.connections == 2
    assert transport.idle_connections == 0


async def test_a_request_asking_to_close_is_not_pooled(transport: H1Transport) -> None:
    async with RawServer(ok) as srv:
        await fetch(transport, get(srv.url + "/1", headers={"Connection": "close"}))
        await fetch(transport, get(srv.url + "/2"))
    assert srv.connections == 2
    assert transport.idle_connections == 1


async def test_bodyless_answers_head_204_304_and_skipped_100(transport: H1Transport) -> None:
    async def script(req: Req, writer: asyncio.StreamWriter) -> None:
        if req.method == "HEAD":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        elif req.target == "/204":
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        elif req.target == "/304":
            writer.write(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 50\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"final"))

    async with RawServer(script) as srv:
        head = await fetch(transport, get(srv.url + "/h", "HEAD"))
        empty = await fetch(transport, get(srv.url + "/204"))
        cached = await fetch(transport, get(srv.url + "/304"))
        final = await fetch(transport, get(srv.url + "/100"))
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "1000")
    assert (empty.status_code, empty.content) == (204, b"")
    assert (cached.status_code, cached.content) == (304, b"")
    assert (final.status_code, final.content) == (200, b"final")
    assert srv.connections == 1  # every answer was complete: one connection throughout


async def test_repeated_headers_are_kept(transport: H1Transport) -> None:
    async def cookies(req: Req, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(headers="Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Odd:  spaced \r\n"))

    async with RawServer(cookies) as srv:
        response = await fetch(transport, get(srv.url + "/"))
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert response.headers["x-odd"] == "spaced"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"HTTP/2 200 OK\r\n\r\n", "invalid status line"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "invalid status line"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", "Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "invalid header line"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched protocols"),
    ],
)
async def test_malformed_answers_raise_remote_protocol_error(
    transport: H1Transport, raw: bytes, message: str
) -> None:
    async def bad(req: Req, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)

    async with RawServer(bad) as srv:
        with pytest.raises(httpx.RemoteProtocolError, match=message) as info:
            await fetch(transport, get(srv.url + "/"))
    assert info.value.request.url.path == "/"
    assert transport.connections == 0


# -- the server closing connections --------------------------------------------------------------
async def test_an_idle_connection_the_server_closed_is_not_reused(transport: H1Transport) -> None:
    async def once(req: Req, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(b"one"))
        return False  # the server closes the kept-alive connection after answering

    async with RawServer(once) as srv:
        await fetch(transport, get(srv.url + "/1"))
        await until(lambda: next(iter(transport._idle.values()))[0].eof)  # EOF seen
        response = await fetch(transport, get(srv.url + "/2"))
    assert response.content == b"one"
    assert srv.connections == 2
    assert [r.index for r in srv.requests] == [0, 0]


async def test_a_request_racing_the_servers_close_is_sent_again_once(
    transport: H1Transport,
) -> None:
    async def drop_second(req: Req, writer: asyncio.StreamWriter) -> bool | None:
        if req.index == 1:
            return False  # read the request, close without a byte of answer
        writer.write(answer(req.body or b"first"))
        return None

    async with RawServer(drop_second) as srv:
        await fetch(transport, get(srv.url + "/1"))
        response = await fetch(transport, get(srv.url + "/2", "POST", content=b"again"))
    assert response.content == b"again"
    assert srv.connections == 2
    assert [(r.conn, r.index, r.body) for r in srv.requests] == [
        (1, 0, b""),
        (1, 1, b"again"),
        (2, 0, b"again"),
    ]


async def test_no_second_try_on_a_fresh_connection_or_a_streamed_body(
    transport: H1Transport,
) -> None:
    async def never(req: Req, writer: asyncio.StreamWriter) -> bool:
        return False

    async def parts() -> AsyncIterator[bytes]:
        yield b"once"

    async with RawServer(never) as srv:
        with pytest.raises(httpx.RemoteProtocolError, match="closed the connection without"):
            await fetch(transport, get(srv.url + "/fresh"))
        assert len(srv.requests) == 1  # a fresh connection: never sent twice

    async def first_only(req: Req, writer: asyncio.StreamWriter) -> bool | None:
        if req.index == 0:
            writer.write(answer())
            return None
        return False

    async with RawServer(first_only) as srv:
        await fetch(transport, get(srv.url + "/1"))
        with pytest.raises(httpx.RemoteProtocolError):
            await fetch(transport, get(srv.url + "/2", "POST", content=parts()))
        assert len(srv.requests) == 2  # a streamed body cannot be replayed


async def test_server_closing_mid_body_raises_and_drops_the_connection(
    transport: H1Transport,
) -> None:
    async def short(req: Req, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        return False

    async with RawServer(short) as srv:
        with pytest.raises(httpx.RemoteProtocolError, match="91 bytes of the body unread"):
            await fetch(transport, get(srv.url + "/"))
    assert transport.connections == 0


# -- timeouts and errors -------------------------------------------------------------------------
async def test_read_timeout_when_the_server_never_answers(transport: H1Transport) -> None:
    async def silent(req: Req, writer: asyncio.StreamWriter) -> None:
        await req.reader.read()  # until the client closes

    async with RawServer(silent) as srv:
        with pytest.raises(httpx.ReadTimeout, match="read timeout") as info:
            await fetch(transport, get(srv.url + "/", extensions=timeouts(5.0, read=0.05)))
        assert info.value.request.url.path == "/"
        assert transport.connections == 0
        await srv.client_closed.wait()  # the timed-out connection was closed


async def test_read_timeout_in_the_middle_of_a_body(transport: H1Transport) -> None:
    async def stall(req: Req, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await req.reader.read()  # until the client closes

    async with RawServer(stall) as srv:
        response = await transport.handle_async_request(
            get(srv.url + "/", extensions=timeouts(5.0, read=0.05))
        )
        with pytest.raises(httpx.ReadTimeout):
            await response.aread()
        await response.aclose()
    assert transport.connections == 0


async def test_connect_error_names_the_address() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    t = H1Transport()
    with pytest.raises(httpx.ConnectError, match=f"cannot connect to 127.0.0.1:{port}"):
        await t.handle_async_request(get(f"http://127.0.0.1:{port}/"))
    assert t.connections == 0
    await t.aclose()


async def test_pool_limit_and_pool_timeout() -> None:
    release = asyncio.Event()

    async def held(req: Req, writer: asyncio.StreamWriter) -> None:
        if req.target == "/hold":
            await release.wait()
        writer.write(answer(req.target.encode()))

    t = H1Transport(max_connections=1)
    async with RawServer(held) as srv:
        holding = asyncio.create_task(fetch(t, get(srv.url + "/hold")))
        await until(lambda: srv.requests)
        with pytest.raises(httpx.PoolTimeout, match="pool timeout"):
            await fetch(t, get(srv.url + "/late", extensions=timeouts(5.0, pool=0.05)))
        waiting = asyncio.create_task(fetch(t, get(srv.url + "/next")))
        await asyncio.sleep(0.05)
        assert len(srv.requests) == 1  # the second request waits for the one connection
        release.set()
        assert (await holding).content == b"/hold"
        assert (await waiting).content == b"/next"
    assert srv.connections == 1  # the waiting request was handed the same connection
    await t.aclose()


async def test_many_concurrent_requests_through_a_small_pool() -> None:
    async def echo(req: Req, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0)
        writer.write(answer(req.target.encode()))

    t = H1Transport(max_connections=3)
    async with RawServer(echo) as srv:
        responses = await asyncio.gather(*(fetch(t, get(f"{srv.url}/{i}")) for i in range(60)))
    assert [r.content for r in responses] == [f"/{i}".encode() for i in range(60)]
    assert srv.connections <= 3
    assert t.connections <= 3
    await t.aclose()


# -- cancellation, early close, aclose -----------------------------------------------------------
async def test_cancelled_mid_response_closes_the_connection(transport: H1Transport) -> None:
    async def endless(req: Req, writer: asyncio.StreamWriter) -> None:
        if req.target == "/after":
            writer.write(answer(b"fine"))
            return
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10000000\r\n\r\n" + b"x" * 1000)
        await writer.drain()
        await req.reader.read()  # until the client closes

    first_chunk = asyncio.Event()

    async def consume(url: str) -> None:
        response = await transport.handle_async_request(get(url))
        async for _ in response.aiter_raw():
            first_chunk.set()

    async with RawServer(endless) as srv:
        task = asyncio.create_task(consume(srv.url + "/big"))
        await first_chunk.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert transport.connections == 0
        await srv.client_closed.wait()
        response = await fetch(transport, get(srv.url + "/after"))
    assert response.content == b"fine"
    assert srv.connections == 2


async def test_cancelled_while_waiting_for_the_head(transport: H1Transport) -> None:
    async def silent(req: Req, writer: asyncio.StreamWriter) -> None:
        await req.reader.read()  # until the client closes

    async with RawServer(silent) as srv:
        task = asyncio.create_task(fetch(transport, get(srv.url + "/")))
        await until(lambda: srv.requests)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert transport.connections == 0
        await srv.client_closed.wait()


async def test_a_response_closed_early_closes_its_connection(transport: H1Transport) -> None:
    async def big(req: Req, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(b"y" * 3_000_000))

    async with RawServer(big) as srv:
        response = await transport.handle_async_request(get(srv.url + "/"))
        async for _ in response.aiter_raw():
            break
        await response.aclose()
        assert transport.connections == 0
        again = await fetch(transport, get(srv.url + "/"))
    assert len(again.content) == 3_000_000
    assert srv.connections == 2


async def test_aclose_closes_idle_and_busy_connections() -> None:
    async def slow(req: Req, writer: asyncio.StreamWriter) -> None:
        if req.target == "/busy":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab")
            await req.reader.read()  # until the client closes
        writer.write(answer())

    t = H1Transport()
    async with RawServer(slow) as srv:
        await fetch(t, get(srv.url + "/idle"))
        busy = await t.handle_async_request(get(srv.url + "/busy"))
        await t.aclose()
        with pytest.raises(httpx.RemoteProtocolError):
            await busy.aread()
        with pytest.raises(httpx.ConnectError, match="closed"):
            await t.handle_async_request(get(srv.url + "/"))
    assert t.connections == 0


async def test_https_goes_to_the_fallback_transport() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, content=b"via fallback")

    t = H1Transport(fallback=lambda: httpx.MockTransport(handler))
    response = await fetch(t, get("https://example.test/x"))
    assert response.content == b"via fallback"
    assert seen == ["https://example.test/x"]
    await t.aclose()
    bare = H1Transport()
    with pytest.raises(httpx.UnsupportedProtocol, match="plain http://"):
        await bare.handle_async_request(get("https://example.test/x"))


# -- large bodies --------------------------------------------------------------------------------
async def test_a_multi_megabyte_stream_comes_in_large_chunks(transport: H1Transport) -> None:
    payload = bytes(range(256)) * (12 * 4096)  # 12 MiB

    async def big(req: Req, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(payload))

    async with RawServer(big) as srv:
        response = await transport.handle_async_request(get(srv.url + "/"))
        stream = response.aiter_raw()
        chunks = [await stream.__anext__()]
        conn = next(iter(transport._open))
        assert conn.transport is not None
        assert conn.transport.max_size == MAX_CHUNK  # type: ignore[attr-defined]  # large reads
        await until(lambda: conn.buffered >= MAX_CHUNK)  # the socket filled the buffer
        chunks.append(await stream.__anext__())
        assert len(chunks[-1]) == MAX_CHUNK  # what had arrived, up to the cap, in one piece
        peak = conn.buffered
        async for chunk in stream:
            chunks.append(chunk)
            peak = max(peak, conn.buffered)
    assert b"".join(chunks) == payload
    assert max(len(c) for c in chunks) == MAX_CHUNK
    assert peak <= HIGH_WATER + MAX_CHUNK  # reading paused: memory stays bounded
    assert transport.idle_connections == 1  # read to the end: back in the pool
    assert conn.transport.max_size == 256 * 1024  # type: ignore[attr-defined]  # asyncio's again


async def test_a_large_request_body(transport: H1Transport) -> None:
    body = b"z" * (3 * 1024 * 1024 + 7)
    async with RawServer(ok) as srv:
        response = await fetch(transport, get(srv.url + "/up", "POST", content=body))
    assert response.content == f"POST /up {len(body)}".encode()
    assert srv.requests[0].body == body
