"""The seq_id turnstile on its own: order, waiting, failures, cancellation, abandoning."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from tinkex_clients._turnstile import Turnstile

GUARD = 10.0  # seconds: a hang fails the test instead of blocking the run


async def _settle() -> None:
    """Let every ready task run until none is ready."""
    for _ in range(20):
        await asyncio.sleep(0)


async def _enter(
    gate: Turnstile, number: int, log: list[int], hold: asyncio.Event | None = None
) -> None:
    async with gate.turn(number):
        log.append(number)
        if hold is not None:
            await hold.wait()


def test_reserve_hands_out_unique_contiguous_numbers_across_threads() -> None:
    gate = Turnstile()
    got: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(50):
            numbers = gate.reserve(2)
            assert numbers[1] == numbers[0] + 1
            with lock:
                got.extend(numbers)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(800))
    assert gate.next_number == 800


async def test_requests_enter_in_number_order_whatever_the_start_order() -> None:
    gate = Turnstile()
    numbers = gate.reserve(6)
    log: list[int] = []
    tasks = [asyncio.ensure_future(_enter(gate, n, log)) for n in reversed(numbers)]
    await asyncio.wait_for(asyncio.gather(*tasks), GUARD)
    assert log == numbers
    assert gate.current == 6


async def test_a_request_waits_for_the_previous_one_to_leave() -> None:
    gate = Turnstile()
    gate.reserve(2)
    log: list[int] = []
    hold = asyncio.Event()
    first = asyncio.ensure_future(_enter(gate, 0, log, hold))
    second = asyncio.ensure_future(_enter(gate, 1, log))
    await _settle()
    assert log == [0]  # 1 waits while 0 holds the turn
    assert not second.done()
    hold.set()
    await asyncio.wait_for(asyncio.gather(first, second), GUARD)
    assert log == [0, 1]


async def test_a_failure_propagates_and_passes_the_turn_on() -> None:
    gate = Turnstile()
    gate.reserve(2)
    log: list[int] = []

    async def fail() -> None:
        async with gate.turn(0):
            raise ValueError("boom")

    later = asyncio.ensure_future(_enter(gate, 1, log))
    with pytest.raises(ValueError, match="boom"):
        await fail()
    await asyncio.wait_for(later, GUARD)
    assert log == [1]


async def test_cancelling_a_waiter_does_not_deadlock_the_next() -> None:
    gate = Turnstile()
    gate.reserve(3)
    log: list[int] = []
    hold = asyncio.Event()
    first = asyncio.ensure_future(_enter(gate, 0, log, hold))
    cancelled = asyncio.ensure_future(_enter(gate, 1, log))
    third = asyncio.ensure_future(_enter(gate, 2, log))
    await _settle()
    cancelled.cancel()
    await _settle()
    assert cancelled.cancelled()
    hold.set()
    await asyncio.wait_for(asyncio.gather(first, third), GUARD)
    assert log == [0, 2]


async def test_cancelling_the_holder_passes_the_turn_on() -> None:
    gate = Turnstile()
    gate.reserve(2)
    log: list[int] = []
    holder = asyncio.ensure_future(_enter(gate, 0, log, asyncio.Event()))  # never released
    nxt = asyncio.ensure_future(_enter(gate, 1, log))
    await _settle()
    assert log == [0]
    holder.cancel()
    await asyncio.wait_for(nxt, GUARD)
    assert log == [0, 1]


async def test_cancelled_right_after_being_woken_still_passes_the_turn_on() -> None:
    gate = Turnstile()
    gate.reserve(3)
    log: list[int] = []
    woken = asyncio.ensure_future(_enter(gate, 1, log))
    third = asyncio.ensure_future(_enter(gate, 2, log))
    await _settle()
    async with gate.turn(0):
        log.append(0)
    woken.cancel()  # 0 left and woke 1, which has not resumed yet
    await asyncio.wait_for(third, GUARD)
    assert woken.cancelled()
    assert log == [0, 2]


async def test_abandoned_numbers_are_skipped_and_sent_ones_unaffected() -> None:
    gate = Turnstile()
    gate.reserve(4)
    log: list[int] = []
    await _enter(gate, 0, log)
    gate.abandon([0, 1, 2])  # 0 was sent: ignored; 1 and 2 will never be
    assert gate.current == 3
    await asyncio.wait_for(_enter(gate, 3, log), GUARD)
    assert log == [0, 3]


async def test_abandon_while_a_number_is_held_waits_for_it() -> None:
    gate = Turnstile()
    gate.reserve(3)
    log: list[int] = []
    hold = asyncio.Event()
    first = asyncio.ensure_future(_enter(gate, 0, log, hold))
    await _settle()
    gate.abandon([0, 1])  # 0 is held: only 1 is given up
    last = asyncio.ensure_future(_enter(gate, 2, log))
    await _settle()
    assert log == [0]
    hold.set()
    await asyncio.wait_for(asyncio.gather(first, last), GUARD)
    assert log == [0, 2]


async def test_abandon_when_done_releases_an_operation_that_never_sent() -> None:
    gate = Turnstile()
    failed_op = gate.reserve(2)
    (nxt,) = gate.reserve(1)
    log: list[int] = []
    waiting = asyncio.ensure_future(_enter(gate, nxt, log))
    future: concurrent.futures.Future[object] = concurrent.futures.Future()
    gate.abandon_when_done(future, failed_op, asyncio.get_running_loop())
    await _settle()
    assert log == []
    threading.Thread(target=future.set_exception, args=(RuntimeError("failed"),)).start()
    await asyncio.wait_for(waiting, GUARD)
    assert log == [nxt]


def test_abandon_when_done_after_the_loop_closed_is_harmless() -> None:
    gate = Turnstile()
    loop = asyncio.new_event_loop()
    loop.close()
    future: concurrent.futures.Future[object] = concurrent.futures.Future()
    gate.abandon_when_done(future, gate.reserve(1), loop)
    future.set_result(None)  # the callback finds the loop closed and does nothing
    assert gate.current == 0


async def test_abandon_when_done_on_the_owning_loop_hands_back_at_once() -> None:
    """An operation that finishes on the owning loop (the usual case: it ran there) gives
    its unsent numbers back before the callback returns, with no self-pipe wake-up."""
    gate = Turnstile()
    failed_op = gate.reserve(2)
    (nxt,) = gate.reserve(1)
    log: list[int] = []
    waiting = asyncio.ensure_future(_enter(gate, nxt, log))
    await _settle()
    future: concurrent.futures.Future[object] = concurrent.futures.Future()
    gate.abandon_when_done(future, failed_op, asyncio.get_running_loop())
    future.set_exception(RuntimeError("failed"))  # on the loop: released synchronously
    assert gate.current == nxt
    await asyncio.wait_for(waiting, GUARD)
    assert log == [nxt]


async def test_abandon_when_done_after_sending_changes_nothing() -> None:
    gate = Turnstile()
    sent = gate.reserve(1)
    async with gate.turn(sent[0]):
        pass
    future: concurrent.futures.Future[object] = concurrent.futures.Future()
    gate.abandon_when_done(future, sent, asyncio.get_running_loop())
    future.set_result(None)
    assert gate.current == 1
    (nxt,) = gate.reserve(1)
    async with gate.turn(nxt):
        assert gate.current == nxt
