"""A private asyncio event loop running in a daemon thread.

Every ServiceClient owns one: all HTTP work, futures polling, heartbeats and rate limiters
live on it, so the synchronous API never needs the caller's loop (plain scripts, worker
threads and Jupyter's running loop all work the same way) and nothing deadlocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from tinkex_http import get_logger

__all__ = ["EventLoopThread"]

_log = get_logger("tinkex.clients.loop")

_T = TypeVar("_T")


class EventLoopThread:
    """Runs a fresh event loop forever in a daemon thread until :meth:`stop`."""

    def __init__(self, name: str = "tinkex-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopped = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        try:
            self._loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def running(self) -> bool:
        return not self._stopped and self._thread.is_alive()

    def in_loop_thread(self) -> bool:
        """Whether the caller runs on this loop's thread."""
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Schedule ``coro`` on the loop; the coroutine is closed if the loop is gone."""
        with self._lock:
            if self._stopped:
                coro.close()
                raise RuntimeError("the event loop thread is stopped")
            return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel every task still running, stop the loop and join the thread (idempotent)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self.in_loop_thread():
            # Called from a callback on the loop itself: stop asynchronously.
            self._loop.call_soon(self._loop.stop)
            return
        if self._thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(_cancel_all(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            if self._thread.is_alive():  # pragma: no cover - only with a stuck callback
                _log.warning("loop_thread_did_not_stop", thread=self._thread.name)


async def _cancel_all() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
