"""``ChaosTransport``: an httpx transport wrapper that injects faults deterministically."""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx

from tinkex_chaos._config import FAULT_KINDS, ChaosConfig

__all__ = ["ChaosStats", "ChaosTransport"]


class ChaosStats:
    """Thread-safe counters of what was injected (and of clean passes), by kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._by_path: Counter[tuple[str, str]] = Counter()

    def add(self, kind: str, path: str) -> None:
        with self._lock:
            self._counts[kind] += 1
            self._by_path[(kind, path)] += 1

    def snapshot(self) -> dict[str, int]:
        """Counts by kind: every fault kind, ``latency`` and ``passed`` (always present)."""
        with self._lock:
            out = dict.fromkeys((*FAULT_KINDS, "latency", "passed"), 0)
            out.update(self._counts)
            return out

    def by_path(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._by_path)

    @property
    def total_faults(self) -> int:
        snap = self.snapshot()
        return sum(snap[kind] for kind in FAULT_KINDS)


class _TruncatedStream(httpx.AsyncByteStream):
    """Yields the first half of a body, then fails as a peer closing mid-message would."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        half = self._body[: len(self._body) // 2]
        if half:
            yield half
        raise httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body (chaos: truncate)"
        )


class ChaosTransport(httpx.AsyncBaseTransport):
    """Wraps a transport; each attempt draws one fault (or none) from a seeded RNG.

    Faults before the server (``error``, ``rate_limit``, ``timeout``) never reach the
    inner transport. ``reset_after_send`` and ``truncate`` let the server process the
    request and lose (part of) the answer, the hardest case for exactly-once.

    Every endpoint path draws from its own stream, seeded by ``(config.seed, path)``: the
    faults ``/api/v1/optim_step`` sees do not depend on how often futures were polled in
    between, so a run is reproducible although polling is timing-dependent.
    ``base_path`` (the path of the base URL, e.g. the data directory of
    ``local:///tmp/data``) is removed before matching ``endpoints``/``exclude`` and before
    counting, so paths always read ``/api/v1/...``.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        config: ChaosConfig,
        *,
        stats: ChaosStats | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        base_path: str = "",
    ) -> None:
        self.inner = inner
        self.config = config
        self.stats = stats if stats is not None else ChaosStats()
        self.base_path = base_path.rstrip("/")
        self._rngs: dict[str, random.Random] = {}
        self._lock = threading.Lock()
        self._sleep = sleep

    def endpoint(self, request: httpx.Request) -> str:
        """The request path without the base URL's path (``/api/v1/forward_backward``)."""
        path = request.url.path
        if self.base_path and path.startswith(self.base_path + "/"):
            path = path[len(self.base_path) :]
        return path

    def _draw(self, path: str) -> tuple[str | None, float]:
        with self._lock:
            rng = self._rngs.get(path)
            if rng is None:
                rng = self._rngs[path] = random.Random(f"{self.config.seed}:{path}")
            roll = rng.random()
            lo, hi = self.config.latency_ms
            latency = rng.randint(lo, hi) / 1000.0 if hi > 0 else 0.0
        edge = 0.0
        for kind in FAULT_KINDS:
            edge += self.config.rate(kind)
            if roll < edge:
                return kind, latency
        return None, latency

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = self.endpoint(request)
        if not self.config.enabled or not self.config.applies_to(path):
            return await self.inner.handle_async_request(request)
        fault, latency = self._draw(path)
        if latency > 0:
            self.stats.add("latency", path)
            await self._sleep(latency)
        if fault is None:
            self.stats.add("passed", path)
            return await self.inner.handle_async_request(request)
        self.stats.add(fault, path)
        if fault == "error":
            return _json_response(
                self.config.error_status, {"detail": "chaos: injected server error"}, request
            )
        if fault == "rate_limit":
            headers = {"retry-after": f"{self.config.retry_after_s:g}"}
            return _json_response(429, {"detail": "chaos: injected rate limit"}, request, headers)
        if fault == "timeout":
            return _json_response(408, {"detail": "chaos: injected request timeout"}, request)
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        await response.aclose()
        if fault == "reset_after_send":
            raise httpx.ReadError(
                "connection reset by peer after the request was sent (chaos)", request=request
            )
        kept = [(k, v) for k, v in response.headers.raw if k.lower() != b"content-length"]
        return httpx.Response(
            response.status_code,
            headers=kept,
            stream=_TruncatedStream(body),
            request=request,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


def _json_response(
    status: int,
    body: dict[str, str],
    request: httpx.Request,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers, request=request)
