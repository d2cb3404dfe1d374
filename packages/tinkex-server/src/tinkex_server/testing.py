"""Run ``tinkex serve`` in a subprocess for tests and benchmarks.

Every package's end-to-end tests (and ``bench/``) need the real server on 127.0.0.1: this
is the one way to start it, wait for its ``listening on`` line, and stop it::

    with ServeProcess(tmp_path / "data", "--api-key", KEY) as served:
        client = ServiceClient(base_url=served.url, api_key=KEY)

The server's output (stdout and stderr, merged) is kept in :attr:`ServeProcess.lines` and,
when ``log`` is given, also written to that file. The child's environment drops the
``TINKER_*``/``TINKEX_*`` variables of the calling process (a test's settings must not leak
into the server) unless ``env`` is given.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["ServeProcess", "ServeStartError", "clean_env", "serve_app"]

_LISTENING = re.compile(r"listening on (http://\S+)")


class ServeStartError(RuntimeError):
    """``tinkex serve`` exited or stayed silent before printing its ``listening on`` line."""


def clean_env(drop: Sequence[str] = ("TINKER_", "TINKEX_")) -> dict[str, str]:
    """The current environment without variables starting with any prefix in ``drop``,
    with ``PYTHONUNBUFFERED=1`` so the server's lines arrive as they are printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ServeProcess:
    """One ``python -m tinkex_server serve`` child on ``host`` (``port=0``: a free port).

    ``flags`` follow ``serve`` on the command line as given (``"--api-key", KEY``,
    ``"--enable-test-routes"``, ...); ``--host``, ``--port`` and ``--data-dir`` come last, so
    they win over the same options in ``flags``. ``module="tinkex_cli"`` starts the command
    through the CLI (``tinkex serve``) instead of ``python -m tinkex_server``. The constructor returns once the server printed its
    address (and answered ``/api/v1/healthz`` when ``wait_healthy``); it raises
    :class:`ServeStartError` with the server's output otherwise.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *flags: str,
        host: str = "127.0.0.1",
        port: int = 0,
        python: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        startup_timeout: float = 120.0,
        wait_healthy: bool = True,
        module: str = "tinkex_server",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.log = log
        cmd = [
            *(str(python or sys.executable), "-m", module, "serve", *flags),
            *("--host", host, "--port", str(port), "--data-dir", str(self.data_dir)),
        ]
        self.lines: list[str] = []
        self._url: str | None = None
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else clean_env(),
            text=True,
        )
        self._pump = threading.Thread(target=self._read, name="tinkex-serve-output", daemon=True)
        self._pump.start()
        if not self._ready.wait(startup_timeout) or self._url is None:
            self.kill()
            raise ServeStartError(
                f"tinkex serve did not start (exit {self.proc.poll()}):\n" + self.output()
            )
        self.url: str = self._url
        self.port = int(self.url.rsplit(":", 1)[1])
        if wait_healthy:
            self.wait_healthy(startup_timeout)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        sink = self.log.open("w", encoding="utf-8") if self.log is not None else None
        try:
            for line in self.proc.stdout:
                self.lines.append(line)
                if sink is not None:
                    sink.write(line)
                    sink.flush()
                found = _LISTENING.search(line)
                if found and self._url is None:
                    self._url = found.group(1).rstrip("/")
                    self._ready.set()
        finally:
            if sink is not None:
                sink.close()
            self._ready.set()

    def output(self) -> str:
        """Everything the server printed so far."""
        return "".join(self.lines)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Block until ``GET /api/v1/healthz`` answers 200."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/api/v1/healthz", timeout=5) as resp:
                    if resp.status == 200:
                        return
                    last = resp.status
            except OSError as exc:
                last = exc
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise ServeStartError(f"/api/v1/healthz never answered 200 ({last!r}):\n{self.output()}")

    def stop(self, timeout: float = 30.0, sig: int = signal.SIGTERM) -> int | None:
        """``sig`` (SIGTERM, or SIGINT for Ctrl-C: a graceful shutdown), then SIGKILL after
        ``timeout`` seconds; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: the server dies without any shutdown work (a crash)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._close()

    def _close(self) -> None:
        self._pump.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def serve_app(app: Any, *, startup_timeout: float = 60.0) -> Iterator[str]:
    """Serve an ASGI ``app`` (e.g. ``create_app(...)`` with a test engine, or a wrapper
    around it) with uvicorn on a thread of this process, on 127.0.0.1 and a free port;
    yields its base URL and stops the server when the block ends."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        if not server.started:
            raise ServeStartError("uvicorn did not start the app (see the log above)")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
