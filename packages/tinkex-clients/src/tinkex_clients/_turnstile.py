"""The seq_id turnstile of a TrainingClient: requests are sent in the order they were made.

A caller reserves request numbers synchronously, on any thread, when a method is called
(:meth:`Turnstile.reserve`); the request then runs on the background loop and sends inside
``async with turnstile.turn(number)``, which waits until every lower number has either
been sent or abandoned. A number is abandoned when its operation ends without sending it
(a validation error, a failure of an earlier chunk, a cancellation): the turn skips it,
so one failed or cancelled request never blocks those after it.

Everything but :meth:`reserve` and :attr:`next_number` runs on the loop that owns the
turnstile; :meth:`abandon_when_done` hands a finished future's numbers back to that loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Iterable
from typing import Any

__all__ = ["Turnstile"]


class Turnstile:
    """Admits request numbers 0, 1, 2, … one at a time, in order (module docstring)."""

    def __init__(self) -> None:
        self._reserve_lock = threading.Lock()
        self._next_number = 0
        # Bookkeeping below is touched only on the owning event loop.
        self._turn = 0
        self._holding: int | None = None
        self._abandoned: set[int] = set()
        self._waiters: dict[int, asyncio.Future[None]] = {}

    def __repr__(self) -> str:
        return f"Turnstile(turn={self._turn}, next_number={self._next_number})"

    # -- any thread -------------------------------------------------------------------------
    def reserve(self, count: int = 1) -> list[int]:
        """The next ``count`` numbers, in call order (thread-safe)."""
        with self._reserve_lock:
            start = self._next_number
            self._next_number += count
        return list(range(start, start + count))

    @property
    def next_number(self) -> int:
        """The number the next :meth:`reserve` hands out."""
        with self._reserve_lock:
            return self._next_number

    def abandon_when_done(
        self,
        future: concurrent.futures.Future[Any],
        numbers: Iterable[int],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """When ``future`` finishes, abandon those of ``numbers`` that were never sent (on
        ``loop``; a closed loop means nothing is waiting any more). The future usually
        finishes on ``loop`` itself (its operation ran there): then the numbers are handed
        back at once, without waking the loop through its self-pipe once per request."""
        pending = list(numbers)
        if not pending:
            return

        def release(_f: object) -> None:
            if _running_loop() is loop:
                self.abandon(pending)
                return
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.abandon, pending)

        future.add_done_callback(release)

    # -- the owning loop ----------------------------------------------------------------------
    @property
    def current(self) -> int:
        """The number whose turn it is (or will be once the holder leaves)."""
        return self._turn

    def abandon(self, numbers: Iterable[int]) -> None:
        """Give up numbers that will never be sent; sent or held ones are unaffected."""
        for n in numbers:
            if n >= self._turn and n != self._holding:
                self._abandoned.add(n)
        self._advance()

    def _advance(self) -> None:
        if self._holding is not None:
            return
        while self._turn in self._abandoned:
            self._abandoned.discard(self._turn)
            self._turn += 1
        waiter = self._waiters.pop(self._turn, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @contextlib.asynccontextmanager
    async def turn(self, number: int) -> AsyncIterator[None]:
        """Wait for ``number``'s turn and hold it for the block; leaving it (normally, by an
        exception or by cancellation) passes the turn on. Cancelled while waiting, the
        number is abandoned."""
        if self._turn < number:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[number] = waiter
            try:
                await waiter
            except asyncio.CancelledError:
                self._waiters.pop(number, None)
                self.abandon([number])
                raise
        if self._turn != number or self._holding is not None:
            raise RuntimeError(f"request {number} lost its turn (turn is {self._turn})")
        self._holding = number
        try:
            yield
        finally:
            self._holding = None
            self._turn = number + 1
            self._advance()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
