"""Streamed responses over ``local://`` (requests that accept ``text/event-stream``).

The buffered path of :class:`tinkex_server._local.LocalTransport` (httpx's
``ASGITransport``) returns a response only after the app finished it, so a server-sent-event
stream would arrive all at once, after the whole generation, and closing it early could not
stop anything. Here the app runs as a task on the server loop with ASGI callables of our own:

* each ``http.response.body`` part is handed to the client as soon as it is sent (the
  response is returned once ``http.response.start`` arrived);
* closing the client's response (``aclose``) is a disconnect: the app's pending
  ``receive()`` answers ``http.disconnect`` at once (the scope says ASGI spec 2.3, as
  uvicorn's does, so Starlette's ``StreamingResponse`` listens for it and cancels its body
  iterator even while that waits for the next token) and any later ``send()`` raises
  ``OSError``;
* an app failure before the response started answers 500; after it, the client's read
  raises ``httpx.RemoteProtocolError`` (as a connection broken mid-body would).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

__all__ = ["open_local_stream", "wants_stream"]

_END = object()


class _Failed(str):
    """The name of the exception that ended a started response."""


def wants_stream(request: httpx.Request) -> bool:
    """Whether ``request`` asks for a server-sent-event stream."""
    return "text/event-stream" in request.headers.get("accept", "")


class _Exchange:
    """One streamed request: the app's side lives on the server loop."""

    def __init__(self, app: Any, scope: dict[str, Any], body: bytes) -> None:
        self.app = app
        self.scope = scope
        self.body: bytes | None = body
        self.parts: asyncio.Queue[Any] = asyncio.Queue()  # unbounded: see LocalStream
        self.started: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] | None = None
        self.disconnected = asyncio.Event()
        self.task: asyncio.Future[None] | None = None

    async def receive(self) -> dict[str, Any]:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self.disconnected.is_set():
            raise OSError("the local client closed the stream")
        assert self.started is not None
        if message["type"] == "http.response.start":
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            self.started.set_result((int(message["status"]), headers))
        elif message["type"] == "http.response.body":
            chunk = bytes(message.get("body", b""))
            if chunk:
                self.parts.put_nowait(chunk)
            if not message.get("more_body", False):
                self.parts.put_nowait(_END)

    async def start(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Run the app as a task of this (the server) loop; return its status and headers."""
        self.started = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(self.run())
        try:
            return await self.started
        except asyncio.CancelledError:
            self.disconnected.set()
            raise

    async def run(self) -> None:
        assert self.started is not None
        try:
            await self.app(self.scope, self.receive, self.send)
        except Exception as exc:
            if not self.started.done():
                self.started.set_result((500, [(b"content-type", b"application/json")]))
                self.parts.put_nowait(b'{"detail": "internal server error"}')
            elif not self.disconnected.is_set():
                # The name only: the exception's frames would keep the app's body alive.
                self.parts.put_nowait(_Failed(type(exc).__name__))
        finally:
            if not self.started.done():
                self.started.set_result((500, []))
            self.parts.put_nowait(_END)


async def _on(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    """Await ``coro`` on ``loop`` (the server's) from the caller's loop."""
    fut = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return await asyncio.wrap_future(fut)
    except asyncio.CancelledError:
        fut.cancel()
        raise


class LocalStream(httpx.AsyncByteStream):
    """The body of a streamed local response. The app's parts queue is unbounded: the app
    never waits for the reader (a sampling stream is small), and stops at the first
    ``send`` after the reader closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, exchange: _Exchange) -> None:
        self._loop = loop
        self._exchange = exchange
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self._done:
            part = await _on(self._loop, self._exchange.parts.get())
            if part is _END:
                self._done = True
            elif isinstance(part, _Failed):
                self._done = True
                raise httpx.RemoteProtocolError(f"the local server failed mid-response: {part}")
            else:
                yield part

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            with contextlib.suppress(RuntimeError):  # the server loop is gone
                self._loop.call_soon_threadsafe(self._exchange.disconnected.set)


def _scope(request: httpx.Request, url: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    target = httpx.URL(url)
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "headers": [(k.lower(), v) for k, v in headers],
        "scheme": target.scheme,
        "path": target.path,
        "raw_path": target.raw_path.split(b"?")[0],
        "query_string": target.query,
        "server": (target.host, target.port),
        "client": ("127.0.0.1", 0),
        "root_path": "",
    }


async def open_local_stream(
    app: Any,
    loop: asyncio.AbstractEventLoop,
    request: httpx.Request,
    url: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> httpx.Response:
    """Start ``request`` on the server ``loop`` and return its response as soon as the app
    started it; the body streams (see the module docstring)."""
    exchange = _Exchange(app, _scope(request, url, headers), body)
    status, response_headers = await _on(loop, exchange.start())
    return httpx.Response(
        status,
        headers=response_headers,
        stream=LocalStream(loop, exchange),
        request=request,
    )
