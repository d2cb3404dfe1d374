"""Futures and the per-model ``seq_id`` queues that feed the engine worker.

* :class:`FutureHub` lets ``retrieve_future`` long-poll: one ``asyncio.Event`` per pending
  request id, set when its result is stored.
* :class:`Scheduler` keeps, per model, the next expected ``seq_id`` (persisted in the
  store) and buffers early arrivals. A job whose number is next becomes *ready*; when the
  expected number has not arrived within the grace window, the gap is skipped. A number
  whose request was refused at submission (:meth:`Scheduler.void`) is skipped at once: the
  client moved its counter past it and will not send it again. Jobs without a ``seq_id``
  are ready at once (arrival order). Ready jobs run one at a time on the engine worker
  thread, alternating with batches of sampling jobs (every sampling job queued at that
  moment, up to ``max_batch``, goes to the engine as one batch). An ordered job ready while
  the engine is idle starts from its submission; after a job that ``chains`` (a training
  step) the next ready ordered job starts on the engine thread at once, while the loop
  stores the finished one (unless sampling jobs wait: they go first). Results, failures and the applied-steps log entry of a job are stored in one
  transaction (one for a whole sampling batch) before its waiters wake; the polls waiting
  then are handed the stored answer. A job's ``server.queue_wait`` span runs from its
  submission to its start.

:meth:`Scheduler.queue_place` answers where a pending ordered request stands (for the
``try_again`` answers of ``retrieve_future``, docs/queue.md): ``queue_position`` counts the
model's requests that run before it (the one running, the ready ones ahead of it and, for a
request still waiting for its turn, every ``seq_id`` between the model's next expected
number and its own, arrived or not, except refused ones); ``estimated_wait_s`` is
``round(queue_position * mean(step_times), 3)`` over the engine time of the model's last
:data:`STEP_HISTORY` successful ``seq_id`` requests, omitted without history.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections import deque
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from tinkex_server._dispatch import STEP_HISTORY, EngineDispatch, Outcome, failure_body
from tinkex_server._jobs import Job, SampleJob
from tinkex_server._store import Store
from tinkex_server._worker import EngineWorker
from tinkex_types import Hooks, TinkexValidationError

__all__ = ["STEP_HISTORY", "FutureHub", "Outcome", "QueuePlace", "Scheduler", "failure_body"]


_log = logging.getLogger("tinkex_server.scheduler")


class _Pending:
    """The wake-up event of one pending future, and its outcome once stored."""

    __slots__ = ("event", "outcome")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.outcome: Outcome | None = None


class FutureHub:
    """In-memory wake-up events of pending futures (results themselves live in the store).

    A future is in the hub from its submission (after its row exists) until its result is
    stored: :meth:`is_pending` is true only for a future whose row is still pending. The
    polls waiting when the result is stored are handed it (:meth:`wait` returns the
    :data:`Outcome`), so they answer without reading it back from the store.
    """

    def __init__(self) -> None:
        self._events: dict[str, _Pending] = {}
        self._released = False
        #: polls being held right now (``GET /api/v1/_test/held_polls``)
        self.held = 0

    def release_waiters(self) -> None:
        """The server is shutting down: every held poll answers now (still pending, so
        "try again") and no new poll is held, instead of being cut off mid-hold."""
        self._released = True
        for pending in self._events.values():
            pending.event.set()

    def add(self, request_id: str) -> None:
        self._events.setdefault(request_id, _Pending())

    def resolve(self, request_id: str, outcome: Outcome | None = None) -> None:
        """The future's result is stored (``outcome``: what it answers; ``None`` when
        storing it failed): wake its polls."""
        pending = self._events.pop(request_id, None)
        if pending is not None:
            pending.outcome = outcome
            pending.event.set()

    def is_pending(self, request_id: str) -> bool:
        return request_id in self._events

    async def wait(self, request_id: str, hold_s: float) -> Outcome | None:
        """Wait up to ``hold_s`` for ``request_id`` to resolve: its outcome, or ``None``
        when it did not resolve in time (or the server is shutting down, or it was not
        pending, or its result could not be stored): read the store then."""
        pending = self._events.get(request_id)
        if pending is None or self._released:
            return None
        self.held += 1
        try:
            async with asyncio.timeout(hold_s):
                await pending.event.wait()
        except TimeoutError:
            return None
        finally:
            self.held -= 1
        return pending.outcome

    def __len__(self) -> int:
        return len(self._events)


@dataclass(frozen=True)
class QueuePlace:
    """Where a pending request stands: ``position`` requests of its model run before it;
    ``estimated_wait_s`` is ``None`` until the model has step-time history."""

    position: int
    estimated_wait_s: float | None = None


@dataclass
class _ModelQueue:
    next_expected: int
    buffered: dict[int, Job] = field(default_factory=dict)
    voided: set[int] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None


class Scheduler(EngineDispatch):
    """Per-model ordering plus the single dispatcher (see the module docstring; running
    the work on the engine thread is :class:`~tinkex_server._dispatch.EngineDispatch`)."""

    def __init__(
        self,
        store: Store,
        worker: EngineWorker,
        hub: FutureHub,
        *,
        hooks: Hooks,
        grace_s: float,
        max_batch: int,
    ) -> None:
        self._store = store
        self._worker = worker
        self._hub = hub
        self._hooks = hooks
        self.grace_s = grace_s
        self.max_batch = max_batch
        self._queues: dict[str, _ModelQueue] = {}
        self._ready: deque[Job] = deque()
        self._samples: deque[SampleJob] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Guards ``_ready`` and ``_running``: the engine thread takes chained jobs.
        self._lock = threading.Lock()
        #: The work on the engine thread now (its jobs, and what the dispatcher awaits).
        self._active: tuple[list[Job], asyncio.Future[Any]] | None = None
        self._last_was_training = False
        self._closing = False
        #: The open ``server.queue_wait`` span of each queued job, with its context.
        self._waiting: dict[Job, tuple[contextvars.Context, AbstractContextManager[None]]] = {}
        self._running: Job | None = None
        self._step_times: dict[str, deque[float]] = {}

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._dispatch(), name="tinkex-scheduler"
            )

    async def stop(self) -> None:
        self._closing = True
        for queue in self._queues.values():
            if queue.timer is not None:
                queue.timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for job in list(self._waiting):
            self._end_wait(job, asyncio.CancelledError())

    # -- introspection ----------------------------------------------------------------------
    @property
    def queued_samples(self) -> int:
        return len(self._samples)

    def next_expected(self, target: str) -> int:
        return self._queue(target).next_expected

    def step_times(self, target: str) -> tuple[float, ...]:
        """Engine seconds of ``target``'s last successful ``seq_id`` requests, oldest first."""
        return tuple(self._step_times.get(target, ()))

    def estimate_wait(self, target: str, position: int) -> float | None:
        """``round(position * mean(step_times(target)), 3)``, or ``None`` without history."""
        times = self._step_times.get(target)
        if not times:
            return None
        return round(position * (sum(times) / len(times)), 3)

    def queue_place(self, request_id: str) -> QueuePlace | None:
        """Where the queued ordered request ``request_id`` stands (module docstring), or
        ``None`` when it is not waiting in a model queue (running, sampling, unknown)."""
        with self._lock:
            return self._queue_place(request_id)

    def _queue_place(self, request_id: str) -> QueuePlace | None:
        running = self._running
        for job in self._ready:
            if job.request_id == request_id:
                return self._place(job.target, self._ahead_in_ready(job))
        for target, queue in self._queues.items():
            for seq_id, job in queue.buffered.items():
                if job.request_id != request_id:
                    continue
                gap = range(queue.next_expected, seq_id)
                ahead = sum(1 for n in gap if n not in queue.voided)
                ready = sum(1 for other in self._ready if other.target == target)
                busy = int(running is not None and running.target == target)
                return self._place(target, ahead + ready + busy)
        return None

    def _ahead_in_ready(self, job: Job) -> int:
        ahead = int(self._running is not None and self._running.target == job.target)
        for other in self._ready:
            if other is job:
                break
            ahead += other.target == job.target
        return ahead

    def _place(self, target: str, position: int) -> QueuePlace:
        return QueuePlace(position, self.estimate_wait(target, position))

    def _queue(self, target: str) -> _ModelQueue:
        queue = self._queues.get(target)
        if queue is None:
            row = self._store.get_model(target)
            queue = _ModelQueue(next_expected=row.next_seq_id if row is not None else 1)
            self._queues[target] = queue
        return queue

    # -- submission -------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue ``job`` (its future row must already exist in the store)."""
        self._span_queue_wait(job)
        if isinstance(job, SampleJob):
            self._samples.append(job)
            self._launch()  # an idle engine starts sampling before the request is answered
            return
        if job.seq_id is None:
            with self._lock:
                self._ready.append(job)
            self._launch()
            return
        queue = self._queue(job.target)
        if job.seq_id < queue.next_expected:
            self._late(job, queue.next_expected)
            return
        queue.buffered[job.seq_id] = job
        self._drain(job.target, queue)

    def void(self, target: str, seq_id: int | None) -> None:
        """``seq_id`` of ``target`` was refused at submission (a 4xx): it will never run.

        Clients advance their counter past a refused request and never re-send it (tinker
        0.16.1 does not retry a 400), so waiting the grace window for it would only stall
        every later request of the model. A number that is already queued or behind
        ``next_expected`` (a refused duplicate) changes nothing. If the number does arrive
        later with a valid body before it is passed, it still runs.
        """
        if not isinstance(seq_id, int) or not 0 <= seq_id < 2**63:
            return
        if self._store.get_model(target) is None:
            return
        queue = self._queue(target)
        if seq_id < queue.next_expected or seq_id in queue.buffered:
            return
        queue.voided.add(seq_id)
        self._drain(target, queue)

    def _late(self, job: Job, expected: int) -> None:
        exc = TinkexValidationError(
            "seq_id",
            f"seq_id {job.seq_id} for {job.target!r} arrived after the server had moved on "
            f"(next expected {expected}; a missing seq_id is skipped after "
            f"{self.grace_s:g} s)",
            "send each model's requests with increasing seq_id, without long gaps",
        )
        body = failure_body(exc)
        self._store.complete_future(job.request_id, body, failed=True)
        self._start(job)
        self._hub.resolve(job.request_id, ("failed", job.request_type, body))

    def _drain(self, target: str, queue: _ModelQueue) -> None:
        moved = False
        while True:
            expected = queue.next_expected
            if expected in queue.buffered:
                with self._lock:
                    self._ready.append(queue.buffered.pop(expected))
            elif expected not in queue.voided:
                break
            queue.voided.discard(expected)
            queue.next_expected += 1
            moved = True
        if moved:
            self._persist_next(target, queue.next_expected)
            self._launch()
            if queue.timer is not None:
                queue.timer.cancel()
                queue.timer = None
        if queue.buffered and queue.timer is None:
            loop = asyncio.get_running_loop()
            queue.timer = loop.call_later(self.grace_s, self._gap_expired, target)

    def _gap_expired(self, target: str) -> None:
        queue = self._queues.get(target)
        if queue is None:
            return
        queue.timer = None
        if not queue.buffered:
            return
        first = min(queue.buffered)
        if first > queue.next_expected:
            _log.warning(
                "seq_id gap skipped: %s waited %.1f s for seq_id %d..%d, continuing at %d",
                target,
                self.grace_s,
                queue.next_expected,
                first - 1,
                first,
            )
            queue.next_expected = first
            queue.voided = {v for v in queue.voided if v >= first}
        self._drain(target, queue)

    def _persist_next(self, target: str, next_seq: int) -> None:
        if self._store.get_model(target) is not None:
            self._store.update_model(target, next_seq_id=next_seq)

    def _span_queue_wait(self, job: Job) -> None:
        """Open the job's ``server.queue_wait`` span (closed by :meth:`_start`), in a copy of
        the submitting context as a task would run it, without a task per job."""
        attrs = {**job.attributes, "request_type": job.request_type}
        span = self._hooks.operation_span("server.queue_wait", attrs, carrier=job.carrier)
        context = contextvars.copy_context()
        try:
            context.run(span.__enter__)
        except Exception:
            _log.exception("the queue_wait span of %s could not start", job.request_type)
            return
        self._waiting[job] = (context, span)

    def _end_wait(self, job: Job, error: BaseException | None = None) -> None:
        entry = self._waiting.pop(job, None)
        if entry is None:
            return
        context, span = entry
        try:
            if error is None:
                context.run(span.__exit__, None, None, None)
            else:
                context.run(span.__exit__, type(error), error, None)
        except BaseException:
            _log.exception("the queue_wait span of %s could not end", job.request_type)

    def _start(self, job: Job) -> None:
        """``job`` leaves the queue: its ``server.queue_wait`` span ends."""
        job.started.set()
        self._end_wait(job)
