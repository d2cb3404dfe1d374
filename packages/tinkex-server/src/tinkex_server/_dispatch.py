"""Running queued work on the engine thread, for :class:`~tinkex_server._scheduler.Scheduler`.

The engine runs one piece of work at a time: a *chain* of ordered jobs, or one batch of
sampling jobs. :meth:`EngineDispatch._launch` starts the next piece when the engine is idle,
synchronously on the event loop (so a submission that finds the engine idle starts its job
before it is answered; the dispatcher task only waits for sampling batches and wakes).

A chain starts with one ready ordered job. When a job of the chain ends and it
:attr:`~tinkex_server._jobs.Job.chains` (a training step: its stored result changes nothing a
later step reads), the next ready ordered job is taken on the engine thread at once, unless
sampling jobs wait (they go next, as the alternation wants) or the server is stopping. Each
finished job is handed to the loop (:meth:`EngineDispatch._finished`), which stores it while
the next one runs, except before a :attr:`~tinkex_server._jobs.Job.brief` job (an optimizer
step): then the finished jobs wait for it and are stored with it, in one transaction, after
it ran (a short step is not slowed by the loop's storing, which shares the GIL). When the
chain ends, the loop stores its last jobs, then launches the next work. Results of one model
are stored in ``seq_id`` order, as they were run.

After a sampling batch, while sampling requests are still arriving (the queue grew during
the last loop iterations) and the next batch is not full, the dispatcher lets the loop take
them in before the engine starts again (:meth:`EngineDispatch._settle`): the event loop and
the engine share the GIL, so a burst is served in fewer, larger batches.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tinkex_server._jobs import Job, SampleJob
from tinkex_server._store import Store
from tinkex_server._usage import record_applied
from tinkex_server._worker import EngineWorker
from tinkex_types import RequestErrorCategory, RequestFailedResponse, TinkexValidationError

if TYPE_CHECKING:
    from tinkex_server._engine import Engine
    from tinkex_server._scheduler import FutureHub

__all__ = ["STEP_HISTORY", "EngineDispatch", "Outcome", "failure_body"]

#: How many recent step times per model the wait estimate averages.
STEP_HISTORY = 10
#: A job's run on the engine thread: (output, error, engine seconds when it succeeded).
_Executed = tuple[Any, BaseException | None, float | None]

#: A job of a chain that finished: the job, its run, and the job that followed it (if any).
_Done = tuple[Job, _Executed, Job | None]

_log = logging.getLogger("tinkex_server.scheduler")


def failure_body(exc: BaseException) -> dict[str, Any]:
    """The 200 body of a failed future: ``user`` for caller mistakes, else ``server``."""
    if isinstance(exc, TinkexValidationError):
        failed = RequestFailedResponse(error=str(exc), category=RequestErrorCategory.USER)
    else:
        failed = RequestFailedResponse(
            error=f"internal server error: {type(exc).__name__}: {exc}",
            category=RequestErrorCategory.SERVER,
        )
    return failed.to_json_dict()


#: What a finished future answers, handed to the polls waiting for it:
#: ``(status, request_type, body)`` with status ``"done"`` or ``"failed"`` and the body
#: stored in its row (JSON data).
Outcome = tuple[str, str, dict[str, Any]]


class EngineDispatch:
    """The engine-thread half of the scheduler (see the module docstring)."""

    _store: Store
    _worker: EngineWorker
    _hub: FutureHub
    max_batch: int
    _ready: deque[Job]
    _samples: deque[SampleJob]
    _wake: asyncio.Event
    _task: asyncio.Task[None] | None
    #: Guards ``_ready`` and ``_running``: the engine thread takes chained jobs.
    _lock: threading.Lock
    #: The work on the engine thread now (its jobs, and what the dispatcher awaits).
    _active: tuple[list[Job], asyncio.Future[Any]] | None
    _last_was_training: bool
    _closing: bool
    #: True while the dispatcher lets a burst of sampling requests arrive (:meth:`_settle`).
    _settling: bool = False
    _running: Job | None
    _step_times: dict[str, deque[float]]

    def _start(self, job: Job) -> None:
        """``job`` leaves its queue (the scheduler ends its queue_wait span)."""
        raise NotImplementedError

    # -- dispatch ---------------------------------------------------------------------------
    def _launch(self) -> None:
        """Start the next queued work on the engine thread if it is idle (sync, on the loop)."""
        self._wake.set()
        if self._active is not None or self._closing or self._task is None or self._settling:
            return
        if self._samples and (not self._ready or self._last_was_training):
            count = min(self.max_batch, len(self._samples))
            batch: list[SampleJob] = [self._samples.popleft() for _ in range(count)]
            self._last_was_training = False
            self._active = (list(batch), self._start_samples(batch))
        elif self._ready:
            with self._lock:
                job = self._running = self._ready.popleft()
            self._last_was_training = True
            self._active = ([job], self._start_chain(job))

    async def _dispatch(self) -> None:
        while True:
            self._launch()
            active = self._active
            if active is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            jobs, work = active
            try:
                outputs = await work
                if isinstance(outputs, list):  # a sampling batch
                    self._record_batch(jobs, outputs)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Storing a result failed (disk full, ...): the dispatcher must survive.
                _log.exception("the scheduler could not finish %d job(s)", len(jobs))
                for job in jobs:
                    self._hub.resolve(job.request_id)
            finally:
                if self._active is active:
                    self._active = None
            if jobs and isinstance(jobs[0], SampleJob):
                await self._settle()

    async def _settle(self) -> None:
        """After a sampling batch, while sampling requests keep arriving (the queue grew in
        the last loop iterations) and the next batch is not full, let the loop take them
        in before the engine starts again: fewer, larger batches under load."""
        self._settling = True
        try:
            seen = -1
            while 0 < len(self._samples) < self.max_batch and len(self._samples) != seen:
                seen = len(self._samples)
                for _ in range(3):
                    await asyncio.sleep(0)
        finally:
            self._settling = False

    def _store_result(self, job: Job, output: Any) -> Outcome:
        """Store a successful step (inside the caller's transaction): its result, what it
        changed (:meth:`Job.finish`), its usage and its applied-steps entry."""
        applied = (job.target, job.seq_id, job.request_type)
        body = job.finish(output).to_json_dict()
        record_applied(self._store, job, output)
        self._store.complete_future(job.request_id, body, failed=False, applied=applied)
        return "done", job.request_type, body

    def _store_failure(self, job: Job, error: BaseException) -> Outcome:
        """Store a failed step (inside the caller's transaction)."""
        applied = (job.target, job.seq_id, job.request_type)
        body = failure_body(error)
        try:
            job.on_failure(error)
        except Exception:
            _log.exception("failure handler of %s raised", job.request_id)
        self._store.complete_future(job.request_id, body, failed=True, applied=applied)
        return "failed", job.request_type, body

    def _record(self, job: Job, output: Any, error: BaseException | None) -> None:
        """Store one job's outcome in one transaction, then wake its polls. A result that
        cannot be stored becomes the job's failure."""
        if error is None:
            try:
                with self._store.tx():
                    outcome = self._store_result(job, output)
                self._hub.resolve(job.request_id, outcome)
                return
            except Exception as exc:
                _log.exception("storing the result of %s failed", job.request_id)
                error = exc
        with self._store.tx():
            outcome = self._store_failure(job, error)
        self._hub.resolve(job.request_id, outcome)

    def _record_batch(self, batch: Sequence[Job], outputs: list[Any]) -> None:
        """Store the outcomes of several jobs (a sampling batch, chained steps; an output
        that is an exception is the job's failure) in one transaction, then wake their
        polls; if that transaction fails, job by job (:meth:`_record`)."""
        if len(batch) == 1:
            out = outputs[0]
            failed = isinstance(out, BaseException)
            self._record(batch[0], None if failed else out, out if failed else None)
            return
        outcomes: list[Outcome] = []
        try:
            with self._store.tx():
                for job, out in zip(batch, outputs, strict=True):
                    if isinstance(out, BaseException):
                        outcomes.append(self._store_failure(job, out))
                    else:
                        outcomes.append(self._store_result(job, out))
        except Exception:
            _log.exception("storing a sampling batch of %d failed; job by job", len(batch))
            for job, out in zip(batch, outputs, strict=True):
                if isinstance(out, BaseException):
                    self._record(job, None, out)
                else:
                    self._record(job, out, None)
            return
        for job, outcome in zip(batch, outcomes, strict=True):
            self._hub.resolve(job.request_id, outcome)

    def _execute(self, job: Job) -> _Executed:
        """Run ``job`` in its span (engine thread): (output, error, engine seconds)."""
        attrs = {**job.attributes, "request_type": job.request_type}

        def timed(engine: Engine) -> tuple[Any, float]:
            # The step itself, not the engine's creation or the span.
            began = time.perf_counter()
            output = job.execute(engine)
            return output, time.perf_counter() - began

        try:
            output, took = self._worker.step(timed, attributes=attrs, carrier=job.carrier)
        except Exception as exc:
            if not isinstance(exc, TinkexValidationError):
                _log.exception("engine failure in %s (%s)", job.request_id, job.request_type)
            return None, exc, None
        return output, None, took

    def _take_chained(self, done: Job) -> Job | None:
        """The ready job that runs right after ``done`` on the engine thread, if any."""
        with self._lock:
            chained = done.chains and self._ready and not self._samples and not self._closing
            self._running = self._ready.popleft() if chained else None
            return self._running

    def _start_chain(self, first: Job) -> asyncio.Future[None]:
        """Run ``first`` on the engine thread, then every job :meth:`_take_chained` gives;
        each one's outcome is stored on the loop (:meth:`_finished`) as the next runs."""
        self._start(first)
        loop = asyncio.get_running_loop()

        def chain() -> None:
            job: Job | None = first
            done: list[_Done] = []  # finished, not yet handed to the loop
            while job is not None:
                try:
                    result = self._execute(job)
                except BaseException as exc:  # not an Exception: the job still gets an answer
                    done.append((job, (None, exc, None), None))
                    loop.call_soon_threadsafe(self._finished, done)
                    raise
                nxt = self._take_chained(job)
                done.append((job, result, nxt))
                if nxt is None or not nxt.brief:
                    loop.call_soon_threadsafe(self._finished, done)
                    done = []
                job = nxt

        return asyncio.wrap_future(self._worker.submit(chain))

    def _finished(self, done: list[_Done]) -> None:
        """On the loop: the jobs that followed each finished one (already running) leave
        their queues; the finished ones are stored, in one transaction when several."""
        for job, (_, _, took), nxt in done:
            if nxt is not None:
                self._start(nxt)
            if took is not None and job.seq_id is not None:
                history = self._step_times.setdefault(job.target, deque(maxlen=STEP_HISTORY))
                history.append(took)
        if self._closing:
            return  # shutting down: the store closes, the futures are lost as before
        jobs = [job for job, _, _ in done]
        outs = [out if error is None else error for _, (out, error, _), _ in done]
        try:
            self._record_batch(jobs, outs)
        except Exception:
            _log.exception("the scheduler could not store %d job(s)", len(jobs))
            for job in jobs:
                self._hub.resolve(job.request_id)
        if done[-1][2] is None:  # the chain ended: the engine is free for the next work
            self._active = None
            self._launch()

    def _start_samples(self, batch: list[SampleJob]) -> asyncio.Future[list[Any]]:
        """Start a sampling batch on the engine thread now (from the submission that finds
        the engine idle, before it is answered): its outputs, one per job (the exception of
        a job that failed; every job's when the engine itself failed)."""
        for job in batch:
            self._start(job)

        def run(engine: Engine) -> list[Any]:
            results: list[Any] = [None] * len(batch)
            live: list[int] = []
            for i, job in enumerate(batch):
                try:
                    job.prepare(engine)
                    live.append(i)
                except Exception as exc:
                    results[i] = exc
            if live:
                outs = engine.sample_batch([batch[i].sample for i in live], return_exceptions=True)
                for i, out in zip(live, outs, strict=True):
                    results[i] = out
            return results

        attrs = {"request_type": "Sample", "batch_size": len(batch)}
        carrier = batch[0].carrier if len(batch) == 1 else None

        def guarded() -> list[Any]:
            try:
                return self._worker.step(run, attributes=attrs, carrier=carrier)
            except Exception as exc:
                _log.exception("engine failure in a sampling batch of %d", len(batch))
                return [exc] * len(batch)

        try:
            return asyncio.wrap_future(self._worker.submit(guarded))
        except Exception as exc:  # the worker is closed
            done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            done.set_result([exc] * len(batch))
            return done
