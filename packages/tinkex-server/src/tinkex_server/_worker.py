"""The one thread that runs the torch engine.

Every engine call of a server goes through :meth:`EngineWorker.run`, which executes it on a
single dedicated thread (torch work is never interleaved) wrapped in the
``server.engine_step`` span hook. The engine itself (and torch) is imported and built lazily,
on the worker thread, at the first call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from tinkex_types import Hooks, make_plugin_manager

if TYPE_CHECKING:
    from tinkex_server._engine import Engine

__all__ = ["EngineWorker"]

_T = TypeVar("_T")


class EngineWorker:
    """A lazily created :class:`~tinkex_server._engine.Engine` plus its worker thread.

    ``engine_factory`` builds the engine (default: ``Engine()``); it runs on the worker
    thread at the first call. ``hooks`` open the ``server.engine_step`` spans (default: no
    plugins).
    """

    def __init__(
        self,
        engine_factory: Callable[[], Engine] | None = None,
        *,
        hooks: Hooks | None = None,
    ) -> None:
        self._factory = engine_factory
        self._hooks = (
            hooks if hooks is not None else Hooks(make_plugin_manager(load_entrypoints=False))
        )
        self._engine: Engine | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="tinkex-engine"
        )
        self._closed = False
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        """Whether the engine has been built."""
        return self._engine is not None

    def _get_engine(self) -> Engine:
        if self._engine is None:
            if self._factory is not None:
                self._engine = self._factory()
            else:
                from tinkex_server._engine import Engine

                self._engine = Engine()
        return self._engine

    def _call(
        self,
        fn: Callable[[Engine], _T],
        operation: str,
        attributes: Mapping[str, Any],
        carrier: Mapping[str, str] | None,
    ) -> _T:
        engine = self._get_engine()
        with self._hooks.operation_span(operation, attributes, carrier=carrier):
            return fn(engine)

    async def run(
        self,
        fn: Callable[[Engine], _T],
        *,
        operation: str = "server.engine_step",
        attributes: Mapping[str, Any] | None = None,
        carrier: Mapping[str, str] | None = None,
    ) -> _T:
        """Run ``fn(engine)`` on the worker thread and await its result."""
        if self._closed:
            raise RuntimeError("the engine worker is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._call, fn, operation, dict(attributes or {}), carrier
        )

    def run_sync(self, fn: Callable[[Engine], _T]) -> _T:
        """Run ``fn(engine)`` on the worker thread and block until it is done."""
        if self._closed:
            raise RuntimeError("the engine worker is closed")
        return self._executor.submit(self._call, fn, "server.engine_step", {}, None).result()

    def close(self, *, wait: bool = True) -> None:
        """Stop accepting work; with ``wait``, let the running call finish first."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._executor.shutdown(wait=wait, cancel_futures=True)
        self._engine = None
