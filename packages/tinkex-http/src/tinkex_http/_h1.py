"""HTTP/1.1 over asyncio without anyio or h11: one client connection (:class:`H1Connection`).

The connection is an ``asyncio.Protocol``: the event loop hands it whatever the socket has
(``data_received``), it keeps those chunks as they are (no copy, no re-slicing) and wakes
the one coroutine waiting on it. The coroutine side parses: the response head
(:meth:`H1Connection.read_head`, status line and headers, repeated headers kept) and the
body (:class:`BodyReader`: ``Content-Length``, ``Transfer-Encoding: chunked`` or
close-delimited), taking as many bytes at a time as have arrived, up to :data:`MAX_CHUNK`.
Reading pauses while more than :data:`HIGH_WATER` bytes wait unread (a slow consumer of a
large download holds a few MiB, not the file).

The pool, the request side and the ``httpx`` transport are in :mod:`tinkex_http._h1pool`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Final

import httpx

__all__ = [
    "HIGH_WATER",
    "MAX_CHUNK",
    "BodyReader",
    "H1Connection",
    "Head",
    "NoResponseError",
]

#: The largest chunk a streamed body yields: whatever has arrived, up to this many bytes.
MAX_CHUNK: Final = 1 << 20
#: Reading from the socket pauses while this many bytes wait unread ...
HIGH_WATER: Final = 2 << 20
#: ... and resumes below this many.
LOW_WATER: Final = 512 * 1024
#: A response head (status line + headers) larger than this is refused.
MAX_HEAD: Final = 64 * 1024
#: A chunk-size or trailer line longer than this is refused.
MAX_LINE: Final = 8 * 1024

_NO_BODY_STATUS: Final = frozenset({204, 304})
_LENGTH, _CHUNKED, _CLOSE = 0, 1, 2


class NoResponseError(Exception):
    """The connection ended before a single byte of the response arrived (the server had
    closed a kept-alive connection): the request may be sent again on a fresh one.
    ``error`` is what the caller sees when it is not."""

    def __init__(self, error: httpx.TransportError) -> None:
        super().__init__(str(error))
        self.error = error


class Head:
    """A parsed response head: status, reason, raw headers and the framing of the body."""

    __slots__ = ("headers", "keep_alive", "kind", "length", "reason", "status")

    def __init__(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        kind: int,
        length: int,
        keep_alive: bool,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.kind = kind
        self.length = length
        self.keep_alive = keep_alive


def _protocol_error(message: str) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(message)


def _parse_status(line: bytes) -> tuple[bytes, int, bytes]:
    version, _, rest = line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise _protocol_error(f"the server sent an invalid status line: {line[:80]!r}")
    return version, int(code), reason


def _parse_headers(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not name or name[-1:] in b" \t" or line[:1] in b" \t":
            raise _protocol_error(f"the server sent an invalid header line: {line[:80]!r}")
        headers.append((name, value.strip(b" \t")))
    return headers


def _framing(
    method: str, status: int, version: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[int, int, bool]:
    """``(kind, length, keep_alive)`` of the body that follows this head (RFC 9112 §6)."""
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    tokens: list[bytes] = []
    for name, value in headers:
        if len(name) in (10, 14, 17):  # cheap pre-filter: connection, content-length, t-e
            lower = name.lower()
            if lower == b"content-length":
                lengths.add(value)
            elif lower == b"transfer-encoding":
                codings.extend(c.strip().lower() for c in value.split(b","))
            elif lower == b"connection":
                tokens.extend(t.strip().lower() for t in value.split(b","))
    keep_alive = version == b"HTTP/1.1" and b"close" not in tokens
    if method == "HEAD" or status in _NO_BODY_STATUS or status < 200:
        return _LENGTH, 0, keep_alive
    if codings:
        if codings[-1] != b"chunked":
            raise _protocol_error(
                f"the server sent an unsupported Transfer-Encoding {b', '.join(codings)!r}"
            )
        return _CHUNKED, 0, keep_alive
    if lengths:
        raw = lengths.pop()
        if lengths or not raw.isdigit():
            raise _protocol_error("the server sent an invalid Content-Length header")
        return _LENGTH, int(raw), keep_alive
    return _CLOSE, 0, False


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class H1Connection(asyncio.Protocol):
    """One HTTP/1.1 client connection (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: tuple[str, int]) -> None:
        self.loop = loop
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        #: Unread bytes as received; ``_off`` bytes of the first chunk are already read.
        self._chunks: deque[bytes] = deque()
        self._off = 0
        self.buffered = 0
        #: The peer closed its side (EOF) or the connection is gone.
        self.eof = False
        self.closed = False
        self.error: Exception | None = None
        self._waiter: asyncio.Future[bool] | None = None
        self._paused = False
        self._write_paused = False
        self._drain: asyncio.Future[bool] | None = None
        #: Responses fully read on this connection (``> 0``: a reused connection).
        self.served = 0
        self.idle_since = 0.0
        self._read_size: int | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        size = getattr(transport, "max_size", None)  # asyncio's recv() size (256 KiB)
        self._read_size = size if isinstance(size, int) else None

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(True)

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.closed = True
        self.error = exc
        self._wake()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(True)

    def _wake_writer(self) -> None:
        drain = self._drain
        if drain is not None:
            self._drain = None
            if not drain.done():
                drain.set_result(True)

    def large_reads(self, on: bool) -> None:
        """Ask the socket for up to :data:`MAX_CHUNK` bytes per read while a large body
        streams (fewer, larger chunks); back to asyncio's read size for small answers.
        Only where the transport has asyncio's ``max_size`` (the selector event loop)."""
        if self._read_size is not None and self.transport is not None:
            with contextlib.suppress(AttributeError):  # a transport without the attribute
                self.transport.max_size = MAX_CHUNK if on else self._read_size  # type: ignore[attr-defined]

    # -- state -----------------------------------------------------------------------------
    def idle_ok(self, now: float, expiry: float) -> bool:
        """Whether an idle pooled connection can carry another request: open, no EOF, no
        stray bytes from the server, not idle for longer than ``expiry`` seconds."""
        return not self.eof and not self.buffered and now - self.idle_since <= expiry

    def close(self) -> None:
        """Close the socket (idempotent); a waiting reader wakes up and sees EOF."""
        self.eof = True
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self._chunks.clear()
        self._off = 0
        self.buffered = 0
        self._wake()
        self._wake_writer()

    def describe(self) -> str:
        host, port = self.origin
        return f"{host}:{port}"

    # -- writing ---------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise httpx.WriteError(f"the connection to {self.describe()} is closed")
        self.transport.write(data)

    async def drain(self, seconds: float | None) -> None:
        """Wait until the socket took what was written (only while asyncio paused us)."""
        while self._write_paused and not self.closed:
            waiter = self.loop.create_future()
            self._drain = waiter
            handle = self.loop.call_later(seconds, _expire, waiter) if seconds is not None else None
            try:
                ok = await waiter
            finally:
                if handle is not None:
                    handle.cancel()
            if not ok:
                raise httpx.WriteTimeout(
                    f"writing the request to {self.describe()} took longer than {seconds} s"
                )
        if self.closed:
            raise httpx.WriteError(self._lost_message("while the request was being written"))

    # -- reading ---------------------------------------------------------------------------
    def _lost_message(self, when: str) -> str:
        detail = f" ({self.error})" if self.error is not None else ""
        return f"the server at {self.describe()} closed the connection {when}{detail}"

    async def wait(self, seconds: float | None) -> None:
        """Wait for more bytes (or EOF); ``httpx.ReadTimeout`` after ``seconds``."""
        waiter: asyncio.Future[bool] = self.loop.create_future()
        self._waiter = waiter
        handle = self.loop.call_later(seconds, _expire, waiter) if seconds is not None else None
        try:
            ok = await waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()
        if not ok:
            raise httpx.ReadTimeout(
                f"no data from {self.describe()} for {seconds} s (read timeout)"
            )

    def take(self, limit: int) -> bytes:
        """Up to ``limit`` unread bytes, without waiting (``b""`` when none arrived)."""
        chunks = self._chunks
        if not chunks:
            return b""
        first = chunks[0]
        off = self._off
        if len(chunks) == 1 and len(first) - off <= limit:  # the common case
            chunks.clear()
            self._off = 0
            out = first[off:] if off else first
        else:
            parts: list[bytes] = []
            got = 0
            while chunks and got < limit:
                chunk = chunks[0]
                off = self._off
                room = limit - got
                if len(chunk) - off <= room:
                    parts.append(chunk[off:] if off else chunk)
                    got += len(chunk) - off
                    chunks.popleft()
                    self._off = 0
                else:
                    parts.append(chunk[off : off + room])
                    self._off = off + room
                    got += room
            out = parts[0] if len(parts) == 1 else b"".join(parts)
        self.buffered -= len(out)
        if self._paused and self.buffered < LOW_WATER and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return out

    def take_until(self, sep: bytes, limit: int) -> bytes | None:
        """The unread bytes up to and including ``sep`` (consumed), or ``None`` when
        ``sep`` has not arrived yet; more than ``limit`` bytes without it is an error."""
        chunks = self._chunks
        while chunks:
            first = chunks[0]
            at = first.find(sep, self._off)
            if at >= 0:
                end = at + len(sep)
                out = first[self._off : end]
                if end == len(first):
                    chunks.popleft()
                    self._off = 0
                else:
                    self._off = end
                self.buffered -= len(out)
                return out
            if len(first) - self._off > limit:
                raise _protocol_error(f"the server sent a line or head longer than {limit} bytes")
            if len(chunks) == 1:
                return None
            # the separator may straddle two chunks: merge the first two and look again
            merged = first[self._off :] + chunks[1]
            chunks.popleft()
            chunks[0] = merged
            self._off = 0
        return None

    async def read_until(self, sep: bytes, limit: int, seconds: float | None) -> bytes:
        while True:
            found = self.take_until(sep, limit)
            if found is not None:
                return found
            if self.eof:
                raise _protocol_error(self._lost_message("in the middle of the response"))
            await self.wait(seconds)

    async def read_head(self, method: str, seconds: float | None) -> Head:
        """The next final (non-1xx) response head; raises :class:`NoResponseError` when the
        connection ends before any byte of it arrived."""
        while True:
            raw = self.take_until(b"\r\n\r\n", MAX_HEAD)
            if raw is None:
                if self.eof:
                    if not self.buffered:
                        lost = self._lost_message("without answering")
                        raise NoResponseError(_protocol_error(lost))
                    raise _protocol_error(
                        self._lost_message("in the middle of the response headers")
                    )
                await self.wait(seconds)
                continue
            lines = raw[:-4].split(b"\r\n")
            version, status, reason = _parse_status(lines[0])
            headers = _parse_headers(lines[1:])
            if status == 101:
                raise _protocol_error("the server switched protocols, which is not supported")
            if status < 200:
                continue  # 100 Continue, 103 Early Hints: the final answer follows
            kind, length, keep_alive = _framing(method, status, version, headers)
            return Head(status, reason, headers, kind, length, keep_alive)


class BodyReader:
    """Reads one response body from its connection, a chunk at a time (``None`` at the end).

    ``complete`` turns true once the whole body was read; the connection can then carry
    another request when ``reusable``.
    """

    __slots__ = ("_after_data", "complete", "conn", "kind", "remaining", "reusable", "timeout")

    def __init__(self, conn: H1Connection, head: Head, timeout: float | None) -> None:
        self.conn = conn
        self.kind = head.kind
        self.remaining = head.length
        self.timeout = timeout
        self.complete = head.kind == _LENGTH and head.length == 0
        self.reusable = head.keep_alive
        self._after_data = False

    async def next_chunk(self) -> bytes | None:
        if self.complete:
            return None
        if self.kind == _LENGTH:
            return await self._next_sized()
        if self.kind == _CHUNKED:
            return await self._next_chunked()
        return await self._next_until_close()

    def try_whole(self) -> bytes | None:
        """The whole ``Content-Length`` body when it has arrived already, else ``None``."""
        if self.kind == _LENGTH and not self.complete and self.conn.buffered >= self.remaining:
            body = self.conn.take(self.remaining)
            self.remaining = 0
            self._finish()
            return body
        return None

    def _finish(self) -> None:
        self.complete = True
        if self.conn.buffered or self.conn.eof:
            self.reusable = False  # bytes after the body, or the server is closing

    async def _next_sized(self) -> bytes:
        conn = self.conn
        while not conn.buffered:
            if conn.eof:
                raise _protocol_error(
                    conn._lost_message(f"with {self.remaining} bytes of the body unread")
                )
            await conn.wait(self.timeout)
        chunk = conn.take(min(self.remaining, MAX_CHUNK))
        self.remaining -= len(chunk)
        if not self.remaining:
            self._finish()
        return chunk

    async def _next_until_close(self) -> bytes | None:
        conn = self.conn
        while not conn.buffered:
            if conn.eof:
                self.complete = True
                self.reusable = False
                return None
            await conn.wait(self.timeout)
        return conn.take(MAX_CHUNK)

    async def _next_chunked(self) -> bytes | None:
        conn = self.conn
        parts: list[bytes] = []
        got = 0
        while got < MAX_CHUNK:
            if self.remaining:
                if not conn.buffered:
                    if parts:
                        break  # hand over what arrived rather than wait with it
                    if conn.eof:
                        raise _protocol_error(conn._lost_message("in the middle of a chunk"))
                    await conn.wait(self.timeout)
                    continue
                piece = conn.take(min(self.remaining, MAX_CHUNK - got))
                parts.append(piece)
                got += len(piece)
                self.remaining -= len(piece)
                self._after_data = not self.remaining
                continue
            line = conn.take_until(b"\r\n", MAX_LINE)
            if line is None:
                if parts:
                    break
                line = await conn.read_until(b"\r\n", MAX_LINE, self.timeout)
            if self._after_data:
                if line != b"\r\n":
                    raise _protocol_error("the server sent a chunk without its closing CRLF")
                self._after_data = False
                continue
            size = _chunk_size(line)
            if size == 0:
                await self._trailers()
                break
            self.remaining = size
        if parts:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        return None

    async def _trailers(self) -> None:
        while (await self.conn.read_until(b"\r\n", MAX_LINE, self.timeout)) != b"\r\n":
            pass
        self._finish()


def _chunk_size(line: bytes) -> int:
    raw = line.split(b";", 1)[0].strip()
    try:
        if not raw or raw.startswith((b"-", b"+", b"0x", b"0X")):
            raise ValueError
        return int(raw, 16)
    except ValueError:
        raise _protocol_error(
            f"the server sent an invalid chunk size line: {line[:40]!r}"
        ) from None
