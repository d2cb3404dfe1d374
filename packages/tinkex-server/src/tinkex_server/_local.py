"""The ``local://`` transport: the server running in-process, no port.

URL forms (``base_url`` of a tinkex client):

* ``local://`` — the data directory is ``$TINKEX_DATA_DIR`` or the platform default
  (``platformdirs.user_data_dir("tinkex")``).
* ``local:///absolute/path/to/data-dir`` — that data directory. The path is the base path of
  the URL, so request paths look like ``/absolute/path/to/data-dir/api/v1/...``; the
  transport strips it before handing the request to the app.

One :class:`LocalServer` (app + engine + store) exists per data directory per process,
shared by every client and connection pool that points at it. It runs on its own thread with
its own event loop, so clients on any event loop (or several) can use it; the engine starts
at the first request. Servers are closed at interpreter exit, or explicitly with
:meth:`LocalServer.close` / :func:`shutdown_local_servers`.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx

from tinkex_server._app import create_app, runtime_of
from tinkex_server._config import ServerConfig, default_data_dir
from tinkex_server._local_stream import open_local_stream, wants_stream
from tinkex_server._runtime import Runtime
from tinkex_types import Hooks, get_hooks

__all__ = [
    "LocalServer",
    "LocalTransport",
    "get_local_server",
    "local_transport_factory",
    "shutdown_local_servers",
]

#: Host name the app sees for in-process requests; its redirects point back to ``local://``.
LOCAL_HOST = "tinkex.local"

_SERVERS: dict[Path, LocalServer] = {}
_SERVERS_LOCK = threading.Lock()


class LocalServer:
    """An app + runtime served on a private event-loop thread (no sockets).

    ``hooks`` receive the server's spans; default: the process-wide hooks at construction
    (``tinkex_types.get_hooks()``).
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        hooks: Hooks | None = None,
        engine_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.config = config if config is not None else ServerConfig()
        # In-process, the server shares the process's hooks (as the client that reaches it
        # through local:// does) unless it is given its own.
        self.hooks = hooks if hooks is not None else get_hooks()
        self.app = create_app(self.config, hooks=self.hooks, engine_factory=engine_factory)
        self.runtime: Runtime = runtime_of(self.app)
        self._asgi = httpx.ASGITransport(
            app=self.app, raise_app_exceptions=False, client=("127.0.0.1", 0)
        )
        self._loop = asyncio.new_event_loop()
        self._closed = False
        self._thread = threading.Thread(
            target=self._run_loop, name="tinkex-local-server", daemon=True
        )
        self._thread.start()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the app runs on."""
        return self._loop

    async def _handle(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        request = httpx.Request(method, url, headers=headers, content=body)
        response = await self._asgi.handle_async_request(request)
        content = await response.aread()
        return response.status_code, list(response.headers.raw), content

    def submit(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> concurrent.futures.Future[tuple[int, list[tuple[bytes, bytes]], bytes]]:
        """Run one request on the server loop; returns a concurrent future."""
        if self._closed:
            raise httpx.ConnectError("the local tinkex server is closed")
        return asyncio.run_coroutine_threadsafe(
            self._handle(method, url, headers, body), self._loop
        )

    def call(self, fn: Callable[[Runtime], Any]) -> Any:
        """Run ``fn(runtime)`` on the server loop (after starting the runtime) and return
        its result; for tests and tools (``fn`` may return an awaitable)."""

        async def run() -> Any:
            await self.runtime.ensure_started()
            out = fn(self.runtime)
            if asyncio.iscoroutine(out):
                out = await out
            return out

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the runtime (scheduler, engine worker, store) and the loop thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(self.runtime.aclose(), self._loop)
            with contextlib.suppress(Exception):  # best effort at shutdown
                fut.result(timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        if not self._loop.is_running():
            self._loop.close()
        with _SERVERS_LOCK:
            for key, server in list(_SERVERS.items()):
                if server is self:
                    del _SERVERS[key]


class LocalTransport(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """An httpx transport (async and sync) that serves requests from a
    :class:`LocalServer`.

    ``prefix`` (a URL path such as ``/tmp/data``) is stripped from request paths first.
    Closing the transport does not close the shared server.
    """

    def __init__(self, server: LocalServer, *, prefix: str = "") -> None:
        self.server = server
        self._prefix = prefix.rstrip("/").encode()

    def _target(self, request: httpx.Request) -> tuple[str, list[tuple[bytes, bytes]]]:
        raw_path = request.url.raw_path
        if self._prefix and raw_path.startswith(self._prefix + b"/"):
            raw_path = raw_path[len(self._prefix) :]
        url = f"http://{LOCAL_HOST}{raw_path.decode('ascii')}"
        headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"host"]
        headers.append((b"host", LOCAL_HOST.encode()))
        return url, headers

    def _submit(
        self, request: httpx.Request, body: bytes
    ) -> concurrent.futures.Future[tuple[int, list[tuple[bytes, bytes]], bytes]]:
        url, headers = self._target(request)
        try:
            return self.server.submit(request.method, url, headers, body)
        except RuntimeError as exc:  # the loop is gone
            raise httpx.ConnectError(str(exc), request=request) from None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        if wants_stream(request):  # server-sent events stream (see _local_stream)
            url, headers = self._target(request)
            server = self.server
            if server.closed:
                raise httpx.ConnectError("the local tinkex server is closed", request=request)
            try:
                return await open_local_stream(server.app, server.loop, request, url, headers, body)
            except RuntimeError as exc:  # the loop is gone
                raise httpx.ConnectError(str(exc), request=request) from None
        cfut = self._submit(request, body)
        try:
            status, headers, content = await asyncio.wrap_future(cfut)
        except asyncio.CancelledError:
            cfut.cancel()
            raise
        return httpx.Response(status, headers=headers, content=content, request=request)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        status, headers, content = self._submit(request, body).result()
        return httpx.Response(status, headers=headers, content=content, request=request)


def get_local_server(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    config: ServerConfig | None = None,
) -> LocalServer:
    """The process-wide :class:`LocalServer` of a data directory (created on first use).

    ``config`` is used only when the server is created (its ``data_dir`` wins over
    ``data_dir``).
    """
    if config is not None:
        directory = config.data_dir
    elif data_dir is not None:
        directory = Path(data_dir).expanduser()
    else:
        directory = default_data_dir()
    key = directory.resolve()
    with _SERVERS_LOCK:
        server = _SERVERS.get(key)
        if server is None or server.closed:
            cfg = config if config is not None else ServerConfig(data_dir=directory)
            server = LocalServer(cfg)
            _SERVERS[key] = server
        return server


def shutdown_local_servers() -> None:
    """Close every process-wide local server (also run at interpreter exit)."""
    with _SERVERS_LOCK:
        servers = list(_SERVERS.values())
    for server in servers:
        server.close()


atexit.register(shutdown_local_servers)


def _data_dir_from_url(base_url: str) -> tuple[Path | None, str]:
    """``(data dir or None, path prefix)`` of a ``local://`` base URL."""
    url = httpx.URL(base_url)
    if url.host:
        raise ValueError(
            f"local URL {base_url!r} names a host ({url.host!r}); use 'local://' or "
            "'local:///absolute/path/to/data-dir'"
        )
    raw = url.raw_path.decode("ascii").rstrip("/")
    if not raw:
        return None, ""
    return Path(unquote(raw)), raw


def local_transport_factory(
    *, config: Any = None, pool: str = "default", **_: Any
) -> LocalTransport:
    """Factory registered for the ``local`` scheme (``factory(config=..., pool=...)``).

    The data directory comes from ``config.data_dir`` if the config has one, else from the
    URL path (``local:///path``), else ``$TINKEX_DATA_DIR``, else the platform default.
    """
    base_url = str(getattr(config, "base_url", "") or "local://")
    data_dir, prefix = _data_dir_from_url(base_url)
    explicit = getattr(config, "data_dir", None)
    if explicit:
        data_dir = Path(explicit)
    server = get_local_server(data_dir)
    return LocalTransport(server, prefix=prefix)
