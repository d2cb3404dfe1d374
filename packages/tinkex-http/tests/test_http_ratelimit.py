"""Byte estimates, the byte-budget semaphore, shared back-off and the sampling dispatch limits."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pydantic import BaseModel

from tinkex_http import (
    ByteEstimator,
    BytesSemaphore,
    Config,
    RateLimiter,
    RetrySemaphore,
    SamplingDispatch,
    response_byte_limiter,
    tenant_key,
)
from tinkex_types import TinkexValidationError


class Chunk(BaseModel):
    tokens: list[int]


class ModelInput(BaseModel):
    chunks: list[Chunk]


def test_byte_estimator_numbers() -> None:
    assert ByteEstimator.chunk_bytes({"tokens": [1, 2, 3]}) == 30
    assert ByteEstimator.chunk_bytes(Chunk(tokens=[1] * 7)) == 70
    assert ByteEstimator.chunk_bytes({"type": "image", "data": "QUJD" * 5, "format": "png"}) == 20
    assert ByteEstimator.chunk_bytes({"data": b"abcd"}) == 8  # base64 length
    assert ByteEstimator.chunk_bytes({"location": "s3://bucket/img.png"}) == 19
    assert ByteEstimator.chunk_bytes({"length": 4}) == 40
    assert ByteEstimator.chunk_bytes({"other": 1}) == 0
    mi = ModelInput(chunks=[Chunk(tokens=[1, 2]), Chunk(tokens=[3])])
    assert ByteEstimator.model_input_bytes(mi) == 30
    assert ByteEstimator.model_input_bytes([1, 2, 3, 4]) == 40
    datum = {
        "model_input": {"chunks": [{"tokens": list(range(10))}]},
        "loss_fn_inputs": {
            "target_tokens": {"data": list(range(10)), "dtype": "int64", "shape": [10]},
            "weights": np.ones(10, dtype=np.float32),
            "advantages": [0.5] * 3,
        },
    }
    assert ByteEstimator.datum_bytes(datum) == 100 + (10 + 10 + 3) * 10
    assert ByteEstimator.data_bytes([datum, datum]) == 2 * 330


async def test_bytes_semaphore_goes_negative_then_queues_fifo() -> None:
    sem = BytesSemaphore(100)
    await sem.acquire(150)  # larger than the whole budget: never starved
    assert sem.budget == -50
    order: list[str] = []

    async def take(name: str, n: int) -> None:
        await sem.acquire(n)
        order.append(name)

    a = asyncio.create_task(take("a", 10))
    b = asyncio.create_task(take("b", 10))
    await asyncio.sleep(0)
    assert order == []
    assert sem.waiting == 2
    sem.release(150)
    await asyncio.gather(a, b)
    assert order == ["a", "b"]
    assert sem.budget == 80


async def test_bytes_semaphore_cancelled_waiter_does_not_leak() -> None:
    sem = BytesSemaphore(10)
    await sem.acquire(20)
    waiter = asyncio.create_task(sem.acquire(5))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    sem.release(20)
    assert sem.budget == 10
    async with sem.hold(4):
        assert sem.budget == 6
    assert sem.budget == 10
    with pytest.raises(TinkexValidationError):
        BytesSemaphore(0)


async def test_rate_limiter_is_shared_per_tenant_and_waits_with_the_sleeper() -> None:
    cfg = Config(api_key="tml-a", base_url="https://x.test/path", env={})
    a = RateLimiter.for_key(cfg)
    b = RateLimiter.for_key("https://X.test:443/other", "tml-a")
    c = RateLimiter.for_key("https://x.test", "tml-b")
    assert a is b
    assert a is not c
    now = [100.0]
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(clock=lambda: now[0], sleep=fake_sleep)
    assert not limiter.should_backoff()
    limiter.set_backoff(5.0)
    limiter.set_backoff(1.0)  # does not shorten
    assert limiter.should_backoff()
    assert limiter.remaining() == 5.0
    await limiter.wait_for_backoff()
    assert slept == [5.0]
    assert not limiter.should_backoff()
    limiter.set_backoff(3.0)
    limiter.clear_backoff()
    assert not limiter.should_backoff()
    assert "tml-a" not in repr(tenant_key("https://x.test", "tml-a"))


async def run_wave(dispatch: SamplingDispatch, n: int, size: int) -> tuple[int, int]:
    """Start ``n`` requests that hold their slot until released; return (max in flight, max bytes held)."""
    release = asyncio.Event()
    inside = 0
    max_inside = 0
    max_bytes = 0
    held = 0

    async def one() -> None:
        nonlocal inside, max_inside, held, max_bytes
        async with dispatch.slot(size):
            inside += 1
            held += size
            max_inside = max(max_inside, inside)
            max_bytes = max(max_bytes, held)
            await release.wait()
            inside -= 1
            held -= size

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    for _ in range(20):
        await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*tasks)
    return max_inside, max_bytes


async def test_dispatch_never_exceeds_the_concurrency_limit() -> None:
    dispatch = SamplingDispatch(concurrency=3, byte_budget=10**9)
    max_inside, _ = await run_wave(dispatch, 20, 10)
    assert max_inside == 3
    assert dispatch.max_in_flight == 3
    assert dispatch.in_flight == 0


async def test_concurrency_limit_is_shared_per_tenant() -> None:
    tenant = ("https://shared.test", "abc")
    d1 = SamplingDispatch(concurrency=2, byte_budget=10**9, tenant=tenant)
    d2 = SamplingDispatch(concurrency=2, byte_budget=10**9, tenant=tenant)
    release = asyncio.Event()
    inside = 0
    peak = 0

    async def one(d: SamplingDispatch) -> None:
        nonlocal inside, peak
        async with d.slot(1):
            inside += 1
            peak = max(peak, inside)
            await release.wait()
            inside -= 1

    tasks = [asyncio.create_task(one(d)) for d in (d1, d2) * 4]
    for _ in range(10):
        await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 2


async def test_dispatch_respects_the_byte_budget() -> None:
    dispatch = SamplingDispatch(concurrency=100, byte_budget=1000)
    max_inside, max_bytes = await run_wave(dispatch, 10, 400)
    # 1000 → 600 → 200 → -200 (third admitted while budget was >= 0), then the rest wait
    assert max_inside == 3
    assert max_bytes < 1000 + 400
    assert dispatch.bytes.budget == 1000


async def test_dispatch_throttles_after_a_backoff() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    dispatch = SamplingDispatch(
        rate_limiter=limiter, concurrency=50, throttled_concurrency=2, byte_budget=10**9
    )
    assert dispatch.set_backoff(1000) == 1.0
    assert dispatch.set_backoff(200 * 1024) == 5.0
    assert limiter.should_backoff()
    max_inside, _ = await run_wave(dispatch, 10, 1)
    assert max_inside == 2
    # backoff ended 9 s ago → still throttled; 11 s after → full concurrency again
    now[0] = 5.0 + 9.0
    assert dispatch.recently_backed_off()
    now[0] = 5.0 + 10.5
    assert not dispatch.recently_backed_off()
    max_inside, _ = await run_wave(dispatch, 10, 1)
    assert max_inside == 10


async def test_backoff_multiplies_the_byte_cost() -> None:
    now = [0.0]
    dispatch = SamplingDispatch(
        rate_limiter=RateLimiter(clock=lambda: now[0]),
        concurrency=50,
        throttled_concurrency=50,
        byte_budget=1000,
    )
    dispatch.set_backoff(10)
    async with dispatch.slot(10):
        assert dispatch.bytes.budget == 1000 - 10 * 20
    _, _ = await run_wave(dispatch, 5, 30)  # 600 bytes each with the penalty
    assert dispatch.bytes.budget == 1000


async def test_retry_semaphore_limits_per_key() -> None:
    peak = 0
    inside = 0
    release = asyncio.Event()

    async def one(key: str) -> None:
        nonlocal inside, peak
        async with RetrySemaphore.hold(key, 2):
            inside += 1
            peak = max(peak, inside)
            await release.wait()
            inside -= 1

    tasks = [asyncio.create_task(one("session-a")) for _ in range(6)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert peak == 2
    release.set()
    await asyncio.gather(*tasks)
    assert RetrySemaphore.get("session-a", 2) is RetrySemaphore.get("session-a", 2)
    assert RetrySemaphore.get("session-b", 2) is not RetrySemaphore.get("session-a", 2)
    with pytest.raises(TinkexValidationError):
        RetrySemaphore.get("x", 0)


async def test_response_byte_limiter_is_per_tenant() -> None:
    a = response_byte_limiter(("https://a.test", "k"))
    assert a is response_byte_limiter(("https://a.test", "k"))
    assert a is not response_byte_limiter(("https://b.test", "k"))
    assert a.max_bytes == 5 * 1024 * 1024


def test_dispatch_validation() -> None:
    with pytest.raises(TinkexValidationError, match="concurrency"):
        SamplingDispatch(concurrency=0)
