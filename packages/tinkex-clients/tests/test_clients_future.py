"""APIFuture: sync result with timeout, await, callbacks, the loop-thread guard."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tinkex_clients import APIFuture
from tinkex_clients._loop import EventLoopThread
from tinkex_types import RequestErrorCategory, RequestFailedError


@pytest.fixture
def loop_thread():
    lt = EventLoopThread()
    yield lt
    lt.stop()


def test_completed_and_failed_futures() -> None:
    ok = APIFuture.completed(3)
    assert ok.done()
    assert ok.result() == 3
    assert ok.exception() is None
    err = RequestFailedError("boom", category=RequestErrorCategory.USER, request_id="r1")
    bad: APIFuture[int] = APIFuture.failed(err)
    with pytest.raises(RequestFailedError) as info:
        bad.result()
    assert info.value.request_id == "r1"
    assert info.value.category is RequestErrorCategory.USER
    assert "failed" in repr(bad)
    assert "done" in repr(ok)


def test_result_timeout_leaves_operation_running(loop_thread: EventLoopThread) -> None:
    gate = threading.Event()

    async def slow() -> str:
        while not gate.is_set():  # noqa: ASYNC110 - the gate is a thread event
            await asyncio.sleep(0.01)
        return "finished"

    fut = APIFuture(loop_thread.submit(slow()), loop_thread)
    with pytest.raises(TimeoutError, match=r"did not finish within 0\.05"):
        fut.result(timeout=0.05)
    assert not fut.done()
    gate.set()
    assert fut.result(timeout=5) == "finished"


async def test_await_and_result_async(loop_thread: EventLoopThread) -> None:
    async def value() -> int:
        await asyncio.sleep(0.01)
        return 7

    fut = APIFuture(loop_thread.submit(value()), loop_thread)
    assert await fut == 7
    fut2 = APIFuture(loop_thread.submit(value()), loop_thread)
    assert await fut2.result_async(timeout=5) == 7


async def test_result_async_timeout_does_not_cancel(loop_thread: EventLoopThread) -> None:
    gate = threading.Event()

    async def slow() -> int:
        while not gate.is_set():  # noqa: ASYNC110 - the gate is a thread event
            await asyncio.sleep(0.01)
        return 1

    fut = APIFuture(loop_thread.submit(slow()), loop_thread)
    with pytest.raises(TimeoutError):
        await fut.result_async(timeout=0.02)
    gate.set()
    assert await fut == 1


def test_done_callback_and_cancel(loop_thread: EventLoopThread) -> None:
    seen: list[object] = []
    started = threading.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    fut = APIFuture(loop_thread.submit(forever()), loop_thread)
    fut.add_done_callback(seen.append)
    started.wait(5)
    assert fut.running() or not fut.done()
    assert fut.cancel()
    assert fut.cancelled()
    assert seen == [fut]
    assert fut.future().cancelled()


def test_result_on_loop_thread_is_refused(loop_thread: EventLoopThread) -> None:
    async def never() -> int:
        await asyncio.sleep(3600)
        return 0

    inner = APIFuture(loop_thread.submit(never()), loop_thread)

    async def misuse() -> str:
        try:
            inner.result()
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    message = loop_thread.submit(misuse()).result(5)
    assert "event loop thread" in message
    inner.cancel()


def test_submit_after_stop_closes_coroutine() -> None:
    lt = EventLoopThread()
    lt.stop()

    async def nothing() -> None:
        return None

    with pytest.raises(RuntimeError, match="stopped"):
        lt.submit(nothing())
    assert not lt.running
