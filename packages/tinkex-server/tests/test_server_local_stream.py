"""``local://`` streams event-stream responses part by part (tinkex_server._local_stream):
each part reaches the client before the app sent the next, closing the response is a
disconnect the app sees, app failures are a 500 or a broken body."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from tinkex_server._local_stream import open_local_stream, wants_stream


class Probe:
    """A streaming app whose parts after the first wait for ``release``."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sent: list[int] = []
        self.stopped = threading.Event()
        self.fail_at: int | None = None
        self.fail_before = False

    def app(self) -> Starlette:
        async def parts() -> Any:
            try:
                for i in range(3):
                    if i > 0:
                        while not self.release.is_set():  # noqa: ASYNC110 - a thread sets it
                            await asyncio.sleep(0.005)
                    if self.fail_at == i:
                        raise RuntimeError("boom")
                    self.sent.append(i)
                    yield f"data: {i}\n\n".encode()
            finally:
                self.stopped.set()

        async def route(request: Request) -> StreamingResponse:
            body = await request.body()
            if self.fail_before:
                raise RuntimeError("before")
            assert body == b'{"x": 1}'
            return StreamingResponse(parts(), media_type="text/event-stream")

        return Starlette(routes=[Route("/s", route, methods=["POST"])])


@pytest.fixture
def server_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def request() -> httpx.Request:
    return httpx.Request(
        "POST", "local://x/s", headers={"accept": "text/event-stream"}, content=b'{"x": 1}'
    )


async def open_(probe: Probe, loop: asyncio.AbstractEventLoop) -> httpx.Response:
    req = request()
    assert wants_stream(req)
    return await open_local_stream(
        probe.app(), loop, req, "http://tinkex.local/s", list(req.headers.raw), b'{"x": 1}'
    )


def test_parts_arrive_before_the_app_sends_the_next(server_loop: asyncio.AbstractEventLoop) -> None:
    probe = Probe()

    async def main() -> list[bytes]:
        response = await open_(probe, server_loop)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        got = []
        async for part in response.aiter_raw():
            got.append(part)
            if len(got) == 1:
                assert probe.sent == [0]  # the second part is still held by the app
                probe.release.set()
        return got

    assert b"".join(asyncio.run(main())) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert probe.stopped.wait(5)


def test_closing_the_response_stops_the_app(server_loop: asyncio.AbstractEventLoop) -> None:
    probe = Probe()

    async def main() -> None:
        response = await open_(probe, server_loop)
        async for _part in response.aiter_raw():
            break
        await response.aclose()

    asyncio.run(main())
    # The app is still waiting for ``release``: the disconnect cancels it right there.
    assert probe.stopped.wait(10)
    assert probe.sent == [0]


def test_app_failures(server_loop: asyncio.AbstractEventLoop) -> None:
    probe = Probe()
    probe.fail_before = True

    async def status() -> int:
        response = await open_(probe, server_loop)
        await response.aread()
        return response.status_code

    assert asyncio.run(status()) == 500

    probe = Probe()
    probe.fail_at = 1
    probe.release.set()

    async def body() -> None:
        response = await open_(probe, server_loop)
        await response.aread()

    with pytest.raises(httpx.RemoteProtocolError, match="failed mid-response: RuntimeError"):
        asyncio.run(body())
