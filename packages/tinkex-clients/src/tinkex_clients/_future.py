"""APIFuture: the handle every long operation returns (sync ``.result()`` or ``await``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    from tinkex_clients._loop import EventLoopThread

__all__ = ["APIFuture"]

T = TypeVar("T")


class APIFuture(Generic[T]):
    """The result of an operation running on the client's background event loop.

    * ``future.result(timeout=None)`` blocks the calling thread (raises ``TimeoutError``
      when ``timeout`` seconds pass; the operation keeps running);
    * ``await future`` / ``await future.result_async(timeout=None)`` waits without blocking
      the caller's event loop;
    * ``done()``, ``cancelled()``, ``cancel()``, ``exception()``, ``add_done_callback()``
      and ``future()`` behave like ``concurrent.futures.Future`` (what the official SDK
      returns from ``sample`` and the REST calls).

    Errors are the tinkex errors (:class:`tinkex_types.APIError` subclasses carry
    ``request_id``; :class:`tinkex_types.RequestFailedError` also ``category``).
    """

    __slots__ = ("_future", "_owner")

    def __init__(
        self,
        future: concurrent.futures.Future[T],
        owner: EventLoopThread | None = None,
    ) -> None:
        self._future = future
        self._owner = owner

    @classmethod
    def completed(cls, value: T) -> APIFuture[T]:
        """A future that already holds ``value``."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        fut.set_result(value)
        return cls(fut)

    @classmethod
    def failed(cls, error: BaseException) -> APIFuture[T]:
        """A future that already failed with ``error``."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        fut.set_exception(error)
        return cls(fut)

    def _guard(self) -> None:
        if self._owner is not None and not self._future.done() and self._owner.in_loop_thread():
            raise RuntimeError(
                "APIFuture.result() was called on the tinkex event loop thread (from a "
                "callback?): it would wait forever; use `await future` there instead"
            )

    def result(self, timeout: float | None = None) -> T:
        """Block until the operation finishes and return its value (or raise its error)."""
        self._guard()
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(
                f"the operation did not finish within {timeout} s (it is still running; "
                "call result() again or cancel() it)"
            ) from None

    async def result_async(self, timeout: float | None = None) -> T:  # noqa: ASYNC109
        """Wait without blocking the running event loop; ``TimeoutError`` after ``timeout``.

        A timeout does not cancel the operation (use :meth:`cancel` for that).
        """
        wrapped = asyncio.wrap_future(self._future)
        try:
            return await asyncio.wait_for(asyncio.shield(wrapped), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"the operation did not finish within {timeout} s (it is still running)"
            ) from None

    async def coroutine(self) -> T:
        """A coroutine that waits for the value (tinker 0.38's ``APIFuture.coroutine()``)."""
        return await self.result_async()

    def __await__(self) -> Generator[Any, None, T]:
        return self.result_async().__await__()

    def done(self) -> bool:
        return self._future.done()

    def cancelled(self) -> bool:
        return self._future.cancelled()

    def running(self) -> bool:
        return self._future.running()

    def cancel(self) -> bool:
        """Cancel the operation (its coroutine on the background loop is cancelled too)."""
        return self._future.cancel()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._guard()
        return self._future.exception(timeout)

    def add_done_callback(self, fn: Callable[[APIFuture[T]], object]) -> None:
        """Call ``fn(self)`` when the operation finishes (on the thread that finished it)."""
        self._future.add_done_callback(lambda _f: fn(self))

    def future(self) -> concurrent.futures.Future[T]:
        """The underlying ``concurrent.futures.Future``."""
        return self._future

    def __repr__(self) -> str:
        if self._future.cancelled():
            state = "cancelled"
        elif self._future.done():
            state = "failed" if self._future.exception() is not None else "done"
        else:
            state = "pending"
        return f"<APIFuture {state}>"
