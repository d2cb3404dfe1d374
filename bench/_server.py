"""``tinkex serve`` as a subprocess on 127.0.0.1 with a private data directory (through
:class:`tinkex_server.testing.ServeProcess`, the one way tests and benchmarks start it)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tinkex_server.testing import ServeProcess

__all__ = ["API_KEY", "ServerProcess"]

#: Any ``tml-`` key is accepted by a server started without ``--api-key``.
API_KEY = "tml-tinkex-bench"


class ServerProcess:
    """``python -m tinkex_server serve --port 0`` (the same command as ``tinkex serve``).

    :meth:`start` returns once the server printed its address; ``base_url`` is then set.
    Its output goes to ``<data_dir>.log`` next to the data directory.
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
        self._served: ServeProcess | None = None

    @property
    def pid(self) -> int:
        assert self._served is not None, "server not started"
        return self._served.proc.pid

    @property
    def alive(self) -> bool:
        """Whether the server process is running (started and not exited)."""
        return self._served is not None and self._served.proc.poll() is None

    @property
    def db_path(self) -> Path:
        """The server's SQLite database (read by P4 for completion timestamps)."""
        return self.data_dir / "tinkex.sqlite3"

    def flags(self) -> list[str]:
        flags = ["--log-level", "warning"]
        if self.torch_threads is not None:
            flags += ["--torch-threads", str(self.torch_threads)]
        return [*flags, *self.extra_args]

    def start(self) -> str:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._served = ServeProcess(
            self.data_dir,
            *self.flags(),
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            log=self.log_path,
            startup_timeout=self.startup_timeout,
            wait_healthy=False,
        )
        self.base_url = self._served.url
        return self.base_url

    def log_tail(self, chars: int = 3000) -> str:
        return self._served.output()[-chars:] if self._served is not None else ""

    def stop(self) -> None:
        served, self._served = self._served, None
        if served is not None:
            served.stop(timeout=15, sig=signal.SIGINT)
