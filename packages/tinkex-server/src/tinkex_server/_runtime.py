"""The lifecycle of one server: it opens the data directory and wires the services.

:class:`Runtime` owns the store, the checkpoint files, the engine worker and the scheduler
of one data directory, started lazily on the running event loop, and the services that do
the work of the endpoints:

* :attr:`Runtime.sessions` (:mod:`~tinkex_server._sessions`): sessions, heartbeats,
  telemetry, future polls;
* :attr:`Runtime.training` (:mod:`~tinkex_server._training`): training runs and their
  ``seq_id``-ordered steps;
* :attr:`Runtime.sampling` (:mod:`~tinkex_server._sampling`): samplers and ``asample``;
* :attr:`Runtime.rest` (:mod:`~tinkex_server._rest`): REST listings, checkpoints, archives.

What survives a restart (kill -9 included): sessions, training runs with their LoRA config
and seed, every completed future result (until ``result_ttl_s``), every saved checkpoint and
sampler, de-duplication keys, telemetry and the applied-steps log. Futures that were still
pending are answered 410 afterwards; models are rebuilt lazily
(:mod:`~tinkex_server._restore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tinkex_server._checkpoints import CheckpointFiles
from tinkex_server._config import ServerConfig
from tinkex_server._context import Desk, ServerParts
from tinkex_server._external import ExternalWeightsService
from tinkex_server._rest import RestService
from tinkex_server._sampling import SamplingService
from tinkex_server._scheduler import FutureHub, Scheduler
from tinkex_server._sessions import SessionService
from tinkex_server._store import Store
from tinkex_server._training import TrainingService
from tinkex_server._usage import prepare as prepare_usage
from tinkex_server._worker import EngineWorker
from tinkex_types import Hooks, make_plugin_manager

if TYPE_CHECKING:
    from tinkex_server._engine import Engine

__all__ = ["Runtime"]

_log = logging.getLogger("tinkex_server")


class _DataDirLock:
    """An exclusive lock on ``<data_dir>/server.lock`` (one server per data directory)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "server.lock"
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            owner = fh.read().strip() or "unknown"
            fh.close()
            raise RuntimeError(
                f"data directory {self.path.parent} is in use by another tinkex-server "
                f"(pid {owner}); stop it or choose another --data-dir / TINKEX_DATA_DIR"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None


class Runtime:
    """The lifecycle of one server (one data directory) and its services.

    ``hooks`` receive the server's spans (default: no plugins); ``engine_factory`` replaces
    the default ``Engine()``.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        hooks: Hooks | None = None,
        engine_factory: Callable[[], Engine] | None = None,
    ) -> None:
        self.config = config
        self.hooks = (
            hooks if hooks is not None else Hooks(make_plugin_manager(load_entrypoints=False))
        )
        self._engine_factory = engine_factory
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._lock = _DataDirLock(config.data_dir)
        self._janitor: asyncio.Task[None] | None = None
        # Created by start():
        self.store: Store
        self.files: CheckpointFiles
        self.worker: EngineWorker
        self.hub: FutureHub
        self.scheduler: Scheduler
        self.sessions: SessionService
        self.training: TrainingService
        self.sampling: SamplingService
        self.rest: RestService
        self.external: ExternalWeightsService

    @property
    def started(self) -> bool:
        return self._started

    async def ensure_started(self) -> None:
        """Open the store and start the scheduler on the running loop (once)."""
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            self._start()

    def _start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self.store = Store.open(self.config.db_path)
            prepare_usage(self.store)
            lost = self.store.recover_after_restart()
            if lost:
                _log.warning("%d futures were pending when the server stopped: now 410", len(lost))
            self.files = CheckpointFiles(self.config.data_dir, self.store.secret())
            self.worker = EngineWorker(self._engine_factory, hooks=self.hooks)
            self.hub = FutureHub()
            self.scheduler = Scheduler(
                self.store,
                self.worker,
                self.hub,
                hooks=self.hooks,
                grace_s=self.config.seq_gap_grace_s,
                max_batch=self.config.max_sample_batch,
            )
            self._wire()
            self.scheduler.start()
            self._janitor = asyncio.get_running_loop().create_task(self._janitor_loop())
        except BaseException:
            self._lock.release()
            raise
        self._started = True

    def _wire(self) -> None:
        parts = ServerParts(
            config=self.config,
            store=self.store,
            files=self.files,
            hub=self.hub,
            scheduler=self.scheduler,
            hooks=self.hooks,
        )
        desk = Desk(parts)
        self.sessions = SessionService(parts, desk)
        self.training = TrainingService(parts, desk)
        self.sampling = SamplingService(parts, desk)
        self.rest = RestService(parts, desk)
        self.external = ExternalWeightsService(parts, desk, self.training)

    async def aclose(self) -> None:
        """Stop the scheduler and the engine worker, close the store, release the lock."""
        if not self._started:
            return
        self._started = False
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
        await self.scheduler.stop()
        await asyncio.get_running_loop().run_in_executor(None, self.worker.close)
        self.store.close()
        self._lock.release()

    async def _janitor_loop(self) -> None:
        while True:
            try:
                self.housekeeping()
            except Exception:
                _log.exception("housekeeping failed")
            await asyncio.sleep(min(3600.0, self.config.result_ttl_s))

    def housekeeping(self) -> None:
        """Expire old results, forget old create_session answers, delete expired
        checkpoints' files."""
        now = time.time()
        self.store.expire_results(now - self.config.result_ttl_s)
        self.store.dedup_purge("idem:create_session:", now - self.config.idempotency_ttl_s)
        for ckpt in self.store.expired_checkpoints(now):
            self.files.remove(ckpt.training_run_id, ckpt.kind, ckpt.name)
            self.store.delete_checkpoint(ckpt.training_run_id, ckpt.kind, ckpt.name)
