"""``tinkex serve`` as a subprocess on 127.0.0.1 with a private data directory."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["API_KEY", "ServerProcess"]

#: Any ``tml-`` key is accepted by a server started without ``--api-key``.
API_KEY = "tml-tinkex-bench"

_LISTENING = re.compile(r"tinkex-server listening on (http://\S+)")


class ServerProcess:
    """``python -m tinkex_server serve --port 0`` (the same command as ``tinkex serve``).

    :meth:`start` returns once the server printed its address; ``base_url`` is then set.
    stdout/stderr go to ``server.log`` next to the data directory.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        torch_threads: int | None = None,
        extra_args: tuple[str, ...] = (),
        startup_timeout: float = 120.0,
    ) -> None:
        self.data_dir = data_dir
        self.torch_threads = torch_threads
        self.extra_args = extra_args
        self.startup_timeout = startup_timeout
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.base_url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None, "server not started"
        return self._proc.pid

    @property
    def db_path(self) -> Path:
        """The server's SQLite database (read by P4 for completion timestamps)."""
        return self.data_dir / "tinkex.sqlite3"

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "tinkex_server",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            str(self.data_dir),
            "--log-level",
            "warning",
        ]
        if self.torch_threads is not None:
            cmd += ["--torch-threads", str(self.torch_threads)]
        return [*cmd, *self.extra_args]

    def start(self) -> str:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            match = _LISTENING.search(text)
            if match:
                self.base_url = match.group(1)
                return self.base_url
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"tinkex serve exited with code {self._proc.returncode} before listening:\n"
                    + text[-3000:]
                )
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"tinkex serve did not start within {self.startup_timeout:.0f} s")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
