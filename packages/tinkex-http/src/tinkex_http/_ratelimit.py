"""Client-side admission control (tinkex-features.md §3).

* :class:`ByteEstimator` -- request size estimates: 10 bytes per token and per
  ``loss_fn_inputs`` element, the base64 length of image data, the length of an asset
  location.
* :class:`BytesSemaphore` -- a byte budget (5 MiB) that may go negative so large requests
  are never starved; waiters queue FIFO while it is negative.
* :class:`RateLimiter` -- one shared "back off until" instant per (base URL, API key).
* :class:`SamplingDispatch` -- the layered sampling admission: a concurrency limit (400,
  shared per tenant), a throttled limit (10) and a ×20 byte penalty for 10 s after a back-off,
  then the per-client byte budget.
* :class:`RetrySemaphore` -- keyed counting semaphores (1000 per sampling session).
* :func:`response_byte_limiter` -- the 5 MiB per-tenant budget for ``complete_metadata``
  future payloads.

asyncio primitives are bound to an event loop, so the shared registries are kept per loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import math
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar

from tinkex_http._config import Config, normalize_base_url
from tinkex_types import EncodedTextChunk, TinkexValidationError

__all__ = [
    "DEFAULT_BYTE_BUDGET",
    "ByteEstimator",
    "BytesSemaphore",
    "RateLimiter",
    "RetrySemaphore",
    "SamplingDispatch",
    "response_byte_limiter",
    "tenant_key",
]

DEFAULT_BYTE_BUDGET = 5 * 1024 * 1024
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def tenant_key(base_url: str, api_key: str) -> tuple[str, str]:
    """``(normalized base URL, key fingerprint)``; never holds the key itself."""
    return (normalize_base_url(base_url), hashlib.sha256(api_key.encode()).hexdigest()[:16])


def _get(obj: Any, name: str) -> Any:
    if type(obj) is dict:
        return obj.get(name)
    if hasattr(type(obj), "__pydantic_fields__"):  # a model (no slow ABC check)
        return getattr(obj, name, None)
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


class ByteEstimator:
    """Estimated request bytes, the unit of chunking and of the sampling byte budget."""

    BYTES_PER_TOKEN: ClassVar[int] = 10
    BYTES_PER_ELEMENT: ClassVar[int] = 10

    @classmethod
    def chunk_bytes(cls, chunk: Any) -> int:
        """One model-input chunk: tokens × 10, image base64 length, asset location length."""
        if isinstance(chunk, EncodedTextChunk):  # its count: no list built for an array
            return chunk.length * cls.BYTES_PER_TOKEN
        tokens = _get(chunk, "tokens")
        if tokens is not None:
            return len(tokens) * cls.BYTES_PER_TOKEN
        location = _get(chunk, "location")
        if isinstance(location, str):
            return len(location)
        data = _get(chunk, "data")
        if isinstance(data, str):
            return len(data)
        if isinstance(data, (bytes, bytearray, memoryview)):
            return 4 * math.ceil(len(data) / 3)  # its base64 length on the wire
        length = _get(chunk, "length")
        if isinstance(length, int) and not isinstance(length, bool):
            return length * cls.BYTES_PER_TOKEN
        return 0

    @classmethod
    def model_input_bytes(cls, model_input: Any) -> int:
        """A ModelInput (object or dict with ``chunks``) or a plain list of chunks/tokens."""
        if model_input is None:
            return 0
        chunks = _get(model_input, "chunks") if not isinstance(model_input, list) else model_input
        if chunks is None:
            return cls.chunk_bytes(model_input)
        if chunks and isinstance(chunks[0], int):
            return len(chunks) * cls.BYTES_PER_TOKEN
        return sum(cls.chunk_bytes(c) for c in chunks)

    @classmethod
    def _elements(cls, value: Any) -> int:
        size = getattr(value, "size", None)
        if isinstance(size, int) and not isinstance(size, bool):  # numpy
            return size
        numel = getattr(value, "numel", None)
        if callable(numel):  # torch
            return int(numel())
        data = _get(value, "data") if not isinstance(value, (list, tuple)) else value
        if isinstance(data, (list, tuple)):
            if data and isinstance(data[0], (list, tuple)):
                return sum(len(row) for row in data)
            return len(data)
        return 0

    @classmethod
    def loss_fn_inputs_bytes(cls, inputs: Mapping[str, Any] | None) -> int:
        """Element count × 10 summed over the ``loss_fn_inputs`` values."""
        if not inputs:
            return 0
        return sum(cls._elements(v) for v in inputs.values()) * cls.BYTES_PER_ELEMENT

    @classmethod
    def datum_bytes(cls, datum: Any) -> int:
        """``model_input`` bytes + ``loss_fn_inputs`` bytes."""
        return cls.model_input_bytes(_get(datum, "model_input")) + cls.loss_fn_inputs_bytes(
            _get(datum, "loss_fn_inputs")
        )

    @classmethod
    def data_bytes(cls, data: Iterable[Any]) -> int:
        """The sum over a list of datums."""
        return sum(cls.datum_bytes(d) for d in data)


class BytesSemaphore:
    """A byte budget. :meth:`acquire` succeeds at once whenever the budget is ≥ 0 (it may go
    negative: big requests are never starved); while it is negative callers wait FIFO."""

    def __init__(self, max_bytes: int = DEFAULT_BYTE_BUDGET) -> None:
        if max_bytes <= 0:
            raise TinkexValidationError("max_bytes", f"must be > 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._budget = max_bytes
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def budget(self) -> int:
        """Bytes left (negative while over-committed)."""
        return self._budget

    @property
    def waiting(self) -> int:
        return sum(1 for _, f in self._waiters if not f.done())

    async def acquire(self, n: int) -> None:
        if n < 0:
            raise TinkexValidationError("n", f"byte count must be >= 0, got {n}")
        if self._budget >= 0 and not self._waiters:
            self._budget -= n
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted just before the cancellation landed
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                self._wake()
            raise

    def release(self, n: int) -> None:
        self._budget += n
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._budget >= 0:
            n, fut = self._waiters.popleft()
            if fut.done():
                continue
            self._budget -= n
            fut.set_result(None)

    @contextlib.asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[None]:
        """``async with sem.hold(n):`` acquire ``n`` bytes for the block."""
        await self.acquire(n)
        try:
            yield
        finally:
            self.release(n)


class RateLimiter:
    """A shared back-off window ("do not send before ...") per (base URL, API key)."""

    _registry: ClassVar[dict[tuple[str, str], RateLimiter]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self.clock = clock
        self.sleep = sleep
        self._until = 0.0

    @classmethod
    def for_key(cls, config_or_url: Config | str, api_key: str | None = None) -> RateLimiter:
        """The process-wide limiter of a tenant (``Config`` or ``(base_url, api_key)``)."""
        if isinstance(config_or_url, Config):
            key = config_or_url.tenant_key
        else:
            key = tenant_key(config_or_url, api_key or "")
        with cls._registry_lock:
            limiter = cls._registry.get(key)
            if limiter is None:
                limiter = cls._registry[key] = cls()
            return limiter

    @property
    def backoff_until(self) -> float:
        return self._until

    def set_backoff(self, seconds: float) -> None:
        """Back off for ``seconds`` from now (never shortens a longer window)."""
        self._until = max(self._until, self.clock() + max(seconds, 0.0))

    def clear_backoff(self) -> None:
        self._until = 0.0

    def remaining(self) -> float:
        return max(self._until - self.clock(), 0.0)

    def should_backoff(self) -> bool:
        return self.remaining() > 0

    async def wait_for_backoff(self) -> None:
        """Sleep until the window is over (re-checks: the window may have grown)."""
        while (left := self.remaining()) > 0:
            await self.sleep(left)


_LoopRegistry = weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, Any]]
_semaphores: _LoopRegistry = weakref.WeakKeyDictionary()
_semaphores_lock = threading.Lock()


def _per_loop(key: Any, factory: Callable[[], Any]) -> Any:
    loop = asyncio.get_running_loop()
    with _semaphores_lock:
        table = _semaphores.get(loop)
        if table is None:
            table = _semaphores[loop] = {}
        item = table.get(key)
        if item is None:
            item = table[key] = factory()
        return item


def response_byte_limiter(
    key: tuple[str, str], max_bytes: int = DEFAULT_BYTE_BUDGET
) -> BytesSemaphore:
    """The per-tenant budget for ``complete_metadata`` future payloads (call inside a loop)."""
    sem: BytesSemaphore = _per_loop(
        ("response-bytes", key, max_bytes), lambda: BytesSemaphore(max_bytes)
    )
    return sem


class RetrySemaphore:
    """Keyed counting semaphores: at most ``max_connections`` holders per key (per loop)."""

    @staticmethod
    def get(key: Any, max_connections: int = 1000) -> asyncio.Semaphore:
        if max_connections < 1:
            raise TinkexValidationError("max_connections", f"must be >= 1, got {max_connections}")
        sem: asyncio.Semaphore = _per_loop(
            ("retry", key, max_connections), lambda: asyncio.Semaphore(max_connections)
        )
        return sem

    @staticmethod
    @contextlib.asynccontextmanager
    async def hold(key: Any, max_connections: int = 1000) -> AsyncIterator[None]:
        async with RetrySemaphore.get(key, max_connections):
            yield


class SamplingDispatch:
    """Layered admission for sampling requests of one SamplingClient.

    ``async with dispatch.slot(estimated_bytes):`` holds, in order: a slot of the tenant-wide
    concurrency semaphore (``concurrency``, default 400); when a back-off happened recently
    (still active or ended less than ``recent_window`` seconds ago) also a slot of the
    throttled semaphore (``throttled_concurrency``, 10) with the byte cost multiplied by
    ``backoff_byte_penalty`` (20); then the bytes from this client's budget (5 MiB).
    """

    def __init__(
        self,
        *,
        rate_limiter: RateLimiter | None = None,
        tenant: tuple[str, str] | None = None,
        concurrency: int = 400,
        throttled_concurrency: int = 10,
        byte_budget: int = DEFAULT_BYTE_BUDGET,
        backoff_byte_penalty: int = 20,
        recent_window: float = 10.0,
        small_request_bytes: int = 128 * 1024,
        small_backoff: float = 1.0,
        large_backoff: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        for name, value in (
            ("concurrency", concurrency),
            ("throttled_concurrency", throttled_concurrency),
            ("byte_budget", byte_budget),
            ("backoff_byte_penalty", backoff_byte_penalty),
        ):
            if value < 1:
                raise TinkexValidationError(name, f"must be >= 1, got {value}")
        self.rate_limiter = rate_limiter or RateLimiter()
        self.clock = clock or self.rate_limiter.clock
        self.tenant = tenant if tenant is not None else ("", str(id(self)))
        self.concurrency = concurrency
        self.throttled_concurrency = throttled_concurrency
        self.bytes = BytesSemaphore(byte_budget)
        self.backoff_byte_penalty = backoff_byte_penalty
        self.recent_window = recent_window
        self.small_request_bytes = small_request_bytes
        self.small_backoff = small_backoff
        self.large_backoff = large_backoff
        self._own_until = 0.0
        self.in_flight = 0
        self.max_in_flight = 0

    @classmethod
    def from_config(
        cls,
        config: Any,
        *,
        rate_limiter: RateLimiter | None = None,
        concurrency: int | None = None,
        throttled_concurrency: int | None = None,
        byte_budget: int | None = None,
    ) -> SamplingDispatch:
        """The dispatch of a client with ``config`` (a :class:`tinkex_http.Config`): its
        ``sampling_concurrency``, ``sampling_throttled_concurrency`` and
        ``sampling_byte_budget`` (the arguments win), the shared :class:`RateLimiter` of
        its server and key, and its tenant key."""
        return cls(
            rate_limiter=rate_limiter or RateLimiter.for_key(config),
            tenant=config.tenant_key,
            concurrency=config.sampling_concurrency if concurrency is None else concurrency,
            throttled_concurrency=(
                config.sampling_throttled_concurrency
                if throttled_concurrency is None
                else throttled_concurrency
            ),
            byte_budget=config.sampling_byte_budget if byte_budget is None else byte_budget,
        )

    def _semaphore(self, kind: str, limit: int) -> asyncio.Semaphore:
        sem: asyncio.Semaphore = _per_loop(
            ("sampling", kind, self.tenant, limit), lambda: asyncio.Semaphore(limit)
        )
        return sem

    def recently_backed_off(self) -> bool:
        """A back-off is active or ended less than ``recent_window`` seconds ago."""
        until = max(self._own_until, self.rate_limiter.backoff_until)
        return until > 0 and self.clock() < until + self.recent_window

    def set_backoff(self, estimated_bytes: int) -> float:
        """Record a 429: back off 1 s (≤ 128 KiB request) or 5 s; returns the seconds."""
        seconds = (
            self.small_backoff
            if estimated_bytes <= self.small_request_bytes
            else self.large_backoff
        )
        self.rate_limiter.set_backoff(seconds)
        self._own_until = max(self._own_until, self.clock() + seconds)
        return seconds

    @contextlib.asynccontextmanager
    async def slot(self, estimated_bytes: int) -> AsyncIterator[None]:
        async with self._semaphore("concurrency", self.concurrency):
            async with contextlib.AsyncExitStack() as stack:
                cost = estimated_bytes
                if self.recently_backed_off():
                    await stack.enter_async_context(
                        self._semaphore("throttled", self.throttled_concurrency)
                    )
                    cost = estimated_bytes * self.backoff_byte_penalty
                await stack.enter_async_context(self.bytes.hold(cost))
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    yield
                finally:
                    self.in_flight -= 1
