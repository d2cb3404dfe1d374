"""The lean HTTP/1.1 transport: :class:`H1Transport`, an ``httpx.AsyncBaseTransport`` with a
keep-alive connection pool over :class:`tinkex_http._h1.H1Connection`.

* One socket write per request for the head and a bytes body; an async-iterator body is
  sent with its ``Content-Length`` or chunked, as the request's headers say.
* The pool holds at most ``max_connections`` connections (open or opening); a request
  past the limit waits for one (``pool`` timeout → ``httpx.PoolTimeout``), handed over
  directly when a response finishes. Idle connections are reused newest first and dropped
  after ``keepalive_expiry`` seconds, or when the server closed them (EOF seen on checkout).
* A kept-alive connection that ends before a single byte of the response arrived (the
  server closed it as the request went out) is retried once on a fresh connection when the
  body can be sent again; never once response bytes arrived.
* A response's connection goes back to the pool only when its body was read to the end
  and the connection is reusable; a response closed early, a failed or cancelled request
  closes its connection.
* Timeouts come from ``request.extensions["timeout"]`` (``connect``/``read``/``write``/
  ``pool``); failures raise the ``httpx`` transport errors, so callers map them as before.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any, Final

import httpx

from tinkex_http._h1 import MAX_CHUNK, BodyReader, H1Connection, Head, NoResponseError

__all__ = ["H1Transport"]

Origin = tuple[str, int]

#: A bytes body up to this size is joined to the head and written in one call; a larger
#: one follows the head in a second write (cheaper than copying it).
_JOIN_LIMIT: Final = 256 * 1024
_SLOT: Final = object()  # a waiter was given a free slot (it opens a connection)
_HTTP11: Final = {"http_version": b"HTTP/1.1"}


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _timeouts(request: httpx.Request) -> dict[str, float | None]:
    timeout = request.extensions.get("timeout")
    return timeout if isinstance(timeout, dict) else {}


def _head_bytes(request: httpx.Request) -> tuple[bytes, bool]:
    """The request line and headers, as httpx prepared them (names as given), and whether
    the request asks to close the connection after it (``Connection: close``)."""
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    raw = request.headers.raw
    close = False
    for name, value in raw:
        parts += (name, b": ", value, b"\r\n")
        if len(name) == 10 and name.lower() == b"connection":
            close = close or b"close" in value.lower()
    parts.append(b"\r\n")
    head = b"".join(parts)
    # a CR or LF inside a name, value or target would split the head: refuse it
    lines = len(raw) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise httpx.LocalProtocolError("a request header or the URL contains CR or LF")
    return head, close


class H1Stream(httpx.AsyncByteStream):
    """The body of one response; gives the connection back when read to the end."""

    def __init__(
        self,
        transport: H1Transport,
        request: httpx.Request,
        reader: BodyReader | None,
        body: bytes,
    ) -> None:
        self._transport = transport
        self._request = request
        self._reader = reader
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._body:
            body, self._body = self._body, b""
            yield body
        reader = self._reader
        if reader is None:
            return
        try:
            while True:
                chunk = await reader.next_chunk()
                if chunk is None:
                    break
                yield chunk
        except BaseException as exc:
            self._reader = None
            self._transport.discard(reader.conn)
            if isinstance(exc, httpx.RequestError):
                exc.request = self._request
            raise
        self._reader = None
        self._transport.release(reader.conn, reader.reusable)

    async def aclose(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            if reader.complete:
                self._transport.release(reader.conn, reader.reusable)
            else:
                self._transport.discard(reader.conn)  # closed early: the rest is unread


class H1Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 for ``http://`` URLs over asyncio (see the module docstring)."""

    def __init__(
        self,
        *,
        max_connections: int = 16,
        keepalive_expiry: float = 30.0,
        fallback: Callable[[], httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._make_fallback = fallback
        self._fallback: httpx.AsyncBaseTransport | None = None
        self._idle: dict[Origin, list[H1Connection]] = {}
        self._open: set[H1Connection] = set()
        self._count = 0  # connections open or opening (slots taken)
        self._waiters: deque[tuple[Origin, asyncio.Future[Any]]] = deque()
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"H1Transport(max_connections={self.max_connections}, open={self._count}, "
            f"idle={sum(len(v) for v in self._idle.values())})"
        )

    @property
    def connections(self) -> int:
        """Connections open or opening."""
        return self._count

    @property
    def idle_connections(self) -> int:
        return sum(len(conns) for conns in self._idle.values())

    # -- the request -----------------------------------------------------------------------
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            return await self._other_scheme(request)
        if self._closed:
            raise httpx.ConnectError("the transport is closed", request=request)
        timeouts = _timeouts(request)
        head, close = _head_bytes(request)
        try:
            body: bytes | None = request.content
        except httpx.RequestNotRead:
            body = None  # a streamed body: sent once, never replayed
        origin = (url.host, url.port or 80)
        try:
            conn = await self._acquire(origin, timeouts)
            try:
                return await self._exchange(conn, request, head, body, timeouts, close)
            except NoResponseError as exc:
                if not conn.served or body is None:
                    raise exc.error from None
            # the server closed a kept-alive connection as the request went out: once more
            conn = await self._acquire(origin, timeouts, fresh=True)
            try:
                return await self._exchange(conn, request, head, body, timeouts, close)
            except NoResponseError as exc:
                raise exc.error from None
        except httpx.TransportError as exc:
            exc.request = request
            raise

    async def _other_scheme(self, request: httpx.Request) -> httpx.Response:
        """``https://`` (a signed download URL...): the fallback transport, if any."""
        if self._fallback is None and self._make_fallback is not None and not self._closed:
            self._fallback = self._make_fallback()
        if self._fallback is None:
            raise httpx.UnsupportedProtocol(
                f"the HTTP/1.1 transport speaks plain http://, not {request.url.scheme}://",
                request=request,
            )
        return await self._fallback.handle_async_request(request)

    async def _exchange(
        self,
        conn: H1Connection,
        request: httpx.Request,
        head: bytes,
        body: bytes | None,
        timeouts: dict[str, float | None],
        close: bool,
    ) -> httpx.Response:
        try:
            try:
                await self._send(conn, request, head, body, timeouts.get("write"))
            except httpx.WriteError as exc:
                if conn.served and not conn.buffered:  # a kept-alive connection was closed
                    raise NoResponseError(exc) from None
                raise
            reply = await conn.read_head(request.method, timeouts.get("read"))
        except BaseException:
            self.discard(conn)  # failed or cancelled half way: never back to the pool
            raise
        return self._response(conn, request, reply, timeouts.get("read"), close)

    async def _send(
        self,
        conn: H1Connection,
        request: httpx.Request,
        head: bytes,
        body: bytes | None,
        seconds: float | None,
    ) -> None:
        if body is None:
            conn.write(head)
            await self._send_stream(conn, request, seconds)
        elif len(body) <= _JOIN_LIMIT:
            conn.write(head + body if body else head)
        else:
            conn.write(head)
            conn.write(body)
        await conn.drain(seconds)

    async def _send_stream(
        self, conn: H1Connection, request: httpx.Request, seconds: float | None
    ) -> None:
        stream = request.stream
        if not isinstance(stream, AsyncIterable):
            raise httpx.LocalProtocolError("the request body is not an async byte stream")
        chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        async for chunk in stream:
            if chunk:
                conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await conn.drain(seconds)
        if chunked:
            conn.write(b"0\r\n\r\n")

    def _response(
        self,
        conn: H1Connection,
        request: httpx.Request,
        head: Head,
        timeout: float | None,
        close: bool,
    ) -> httpx.Response:
        reader = BodyReader(conn, head, timeout)
        if close:  # the request said Connection: close
            reader.reusable = False
        body = reader.try_whole() if not reader.complete else b""
        if reader.complete:  # the whole body is here: the connection is free already
            self.release(conn, reader.reusable)
            stream = H1Stream(self, request, None, body or b"")
        else:
            if head.length > MAX_CHUNK or not head.length:  # large or unknown: bigger reads
                conn.large_reads(True)
            stream = H1Stream(self, request, reader, b"")
        extensions = {**_HTTP11, "reason_phrase": head.reason}
        return httpx.Response(
            head.status, headers=head.headers, stream=stream, extensions=extensions
        )

    # -- the pool --------------------------------------------------------------------------
    async def _acquire(
        self, origin: Origin, timeouts: dict[str, float | None], fresh: bool = False
    ) -> H1Connection:
        loop = asyncio.get_running_loop()
        while True:
            if not fresh:
                conn = self._checkout(origin, loop.time())
                if conn is not None:
                    return conn
            if self._count < self.max_connections or self._evict_other(origin):
                self._count += 1
                return await self._connect(loop, origin, timeouts.get("connect"))
            got = await self._wait_turn(loop, origin, timeouts.get("pool"))
            if got is _SLOT:
                return await self._connect(loop, origin, timeouts.get("connect"))
            assert isinstance(got, H1Connection)
            if not fresh:
                return got
            self.discard(got)  # a retry wants a fresh connection: trade this one for a slot

    def _checkout(self, origin: Origin, now: float) -> H1Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.idle_ok(now, self.keepalive_expiry):
                return conn
            self.discard(conn)
        return None

    def _evict_other(self, origin: Origin) -> bool:
        """Close the oldest idle connection to another origin to make room (pool full)."""
        for other, idle in self._idle.items():
            if other != origin and idle:
                conn = idle.pop(0)
                self._close(conn)
                self._count -= 1
                return True
        return False

    async def _wait_turn(
        self, loop: asyncio.AbstractEventLoop, origin: Origin, seconds: float | None
    ) -> object:
        waiter: asyncio.Future[Any] = loop.create_future()
        self._waiters.append((origin, waiter))
        handle = loop.call_later(seconds, _expire, waiter) if seconds is not None else None
        try:
            got = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give_back(waiter.result())
            raise
        finally:
            if handle is not None:
                handle.cancel()
        if got is None:
            raise httpx.PoolTimeout(
                f"no connection of the pool ({self.max_connections}) came free within "
                f"{seconds} s (pool timeout)"
            )
        return got

    def _give_back(self, got: object) -> None:
        """A waiter was cancelled after being handed a connection or a slot."""
        if isinstance(got, H1Connection):
            self._park(got)
        elif got is _SLOT:
            self._count -= 1
            self._pass_slot()

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, origin: Origin, seconds: float | None
    ) -> H1Connection:
        """Open a connection for a slot already counted (given back on failure)."""
        host, port = origin
        conn = H1Connection(loop, origin)
        try:
            async with asyncio.timeout(seconds):
                await loop.create_connection(lambda: conn, host, port)
        except BaseException as exc:
            self._count -= 1
            self._pass_slot()
            conn.close()
            if isinstance(exc, TimeoutError):
                raise httpx.ConnectTimeout(
                    f"connecting to {host}:{port} took longer than {seconds} s (connect timeout)"
                ) from None
            if isinstance(exc, OSError):
                raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from None
            raise
        if self._closed:
            self._count -= 1
            conn.close()
            raise httpx.ConnectError("the transport was closed while connecting")
        self._open.add(conn)
        return conn

    def release(self, conn: H1Connection, reusable: bool) -> None:
        """A response was read to its end: pool the connection, or close it."""
        conn.served += 1
        conn.large_reads(False)
        if reusable and not conn.eof and not conn.buffered and not self._closed:
            self._park(conn)
        else:
            self.discard(conn)

    def _park(self, conn: H1Connection) -> None:
        waiters = self._waiters
        while waiters:
            origin, waiter = waiters[0]
            if waiter.done():
                waiters.popleft()
                continue
            if origin == conn.origin:
                waiters.popleft()
                waiter.set_result(conn)  # straight to the next request, no idle round trip
                return
            break
        if waiters:  # the next in line wants another origin: its slot is this connection's
            self.discard(conn)
            return
        conn.idle_since = conn.loop.time()
        self._idle.setdefault(conn.origin, []).append(conn)

    def discard(self, conn: H1Connection) -> None:
        """Close ``conn`` and free its slot (idempotent per connection)."""
        if conn in self._open:
            self._close(conn)
            self._count -= 1
            self._pass_slot()
        else:
            conn.close()

    def _close(self, conn: H1Connection) -> None:
        self._open.discard(conn)
        conn.close()

    def _pass_slot(self) -> None:
        waiters = self._waiters
        while waiters and self._count < self.max_connections:
            _, waiter = waiters.popleft()
            if not waiter.done():
                self._count += 1
                waiter.set_result(_SLOT)

    async def aclose(self) -> None:
        """Close every connection, idle or in use (idempotent)."""
        self._closed = True
        conns: Iterable[H1Connection] = list(self._open)
        self._idle.clear()
        for conn in conns:
            self._close(conn)
        self._count = 0
        fallback, self._fallback = self._fallback, None
        if fallback is not None:
            await fallback.aclose()
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(httpx.ConnectError("the transport was closed"))
