"""The one thread that runs the torch engine.

Every engine call of a server goes through :meth:`EngineWorker.run`, which executes it on a
single dedicated thread (torch work is never interleaved) wrapped in the
``server.engine_step`` span hook. The engine itself (and torch) is imported and built lazily,
on the worker thread, at the first call.

While the engine exists, the interpreter's GIL switch interval is at most
:data:`ENGINE_SWITCH_INTERVAL_S` (restored on :meth:`EngineWorker.close`). A decode is
Python-heavy and holds the GIL between its many small torch ops; with the default 5 ms
interval, every time the event loop gave the GIL up (a socket read, a SQLite statement) it
waited up to 5 ms to get it back, so requests trickled in while the engine ran, sampling
batches stayed small and the engine spent its time on per-step overhead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from tinkex_types import Hooks, make_plugin_manager

if TYPE_CHECKING:
    from tinkex_server._engine import Engine

__all__ = ["ENGINE_SWITCH_INTERVAL_S", "EngineWorker"]

#: The GIL switch interval (seconds) while an engine exists (see the module docstring).
ENGINE_SWITCH_INTERVAL_S = 0.0005


class _SwitchInterval:
    """The process-wide switch interval, lowered while any engine worker holds it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._before = 0.0

    def hold(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._before = sys.getswitchinterval()
                sys.setswitchinterval(min(self._before, ENGINE_SWITCH_INTERVAL_S))
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            ours = min(self._before, ENGINE_SWITCH_INTERVAL_S)
            if self._holders == 0 and sys.getswitchinterval() == ours:
                sys.setswitchinterval(self._before)


_SWITCH = _SwitchInterval()

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
        self._holds_switch = False

    @property
    def started(self) -> bool:
        """Whether the engine has been built."""
        return self._engine is not None

    def _get_engine(self) -> Engine:
        if self._engine is None:
            with self._lock:
                if not self._holds_switch and not self._closed:
                    self._holds_switch = True
                    _SWITCH.hold()
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

    def submit(self, fn: Callable[[], _T]) -> concurrent.futures.Future[_T]:
        """Start ``fn()`` on the worker thread; it runs engine steps with :meth:`step`."""
        if self._closed:
            raise RuntimeError("the engine worker is closed")
        return self._executor.submit(fn)

    def step(
        self,
        fn: Callable[[Engine], _T],
        *,
        operation: str = "server.engine_step",
        attributes: Mapping[str, Any] | None = None,
        carrier: Mapping[str, str] | None = None,
    ) -> _T:
        """Run ``fn(engine)`` in its span, on the calling thread: only from a function
        :meth:`submit` runs (the worker thread)."""
        return self._call(fn, operation, dict(attributes or {}), carrier)

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
        with self._lock:
            holds, self._holds_switch = self._holds_switch, False
        if holds:
            _SWITCH.release()
