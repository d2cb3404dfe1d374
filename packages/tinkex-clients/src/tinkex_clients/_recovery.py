"""Opt-in recovery of corrupted training runs (tinkex-features.md §6).

* :class:`RecoveryPolicy` -- what to do: attempts, backoff, poll interval, which checkpoint,
  whether to restore the optimizer state, callbacks.
* :class:`RecoveryExecutor` -- restarts one run: picks a checkpoint and creates a **new**
  TrainingClient from it (``create_training_client_from_state_with_optimizer``), retrying
  with exponential backoff (:class:`tinkex_types.Backoff`) up to ``max_attempts``; at most
  ``max_concurrent`` at once.
* :class:`RecoveryMonitor` -- polls ``RestClient.get_training_run`` for monitored runs every
  ``poll_interval`` seconds and hands runs reported ``corrupted`` to the executor.

The old client is not stopped; ``on_recovery(old_client, new_client, checkpoint_path)``
tells the caller to swap. Callbacks run on a worker thread (coroutine callbacks on the
background loop) and their exceptions are logged, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tinkex_clients._future import APIFuture
from tinkex_clients._validate import as_tinker_path
from tinkex_http import get_logger
from tinkex_types import (
    Backoff,
    Checkpoint,
    CheckpointsListResponse,
    RecoveryEvent,
    TinkexError,
    TinkexValidationError,
    TrainingRun,
)

if TYPE_CHECKING:  # pragma: no cover
    from tinkex_clients._service import ServiceClient
    from tinkex_clients._training import TrainingClient
    from tinkex_types._events import RecoveryPhase

__all__ = [
    "RecoveryError",
    "RecoveryExecutor",
    "RecoveryMonitor",
    "RecoveryPolicy",
    "RecoveryResult",
]

_log = get_logger("tinkex.clients.recovery")

OnRecovery = Callable[[Any, "TrainingClient", str], Any]
OnFailure = Callable[[str, BaseException], Any]


class RecoveryError(TinkexError):
    """Recovery of a run failed for good (``attempts`` tried; ``__cause__`` is the last error)."""

    def __init__(self, message: str, *, run_id: str, attempts: int) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.attempts = attempts


def _number(value: Any, field_name: str, *, minimum: float, allow_equal: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = math.isfinite(value) and (value >= minimum if allow_equal else value > minimum)
    if not ok:
        bound = f">= {minimum}" if allow_equal else f"> {minimum}"
        raise TinkexValidationError(
            f"RecoveryPolicy.{field_name}", f"must be a finite number {bound}, got {value!r}"
        )
    return float(value)


@dataclass(frozen=True)
class RecoveryPolicy:
    """How corrupted runs are recovered. Times are in seconds.

    ``checkpoint_strategy`` is ``"latest"`` (the run's last training checkpoint) or a
    ``tinker://<run>/weights/<name>`` path to always restart from.
    """

    enabled: bool = False
    max_attempts: int = 3
    backoff: float = 5.0
    max_backoff: float = 60.0
    poll_interval: float = 30.0
    checkpoint_strategy: str = "latest"
    restore_optimizer: bool = True
    on_recovery: OnRecovery | None = field(default=None, compare=False)
    on_failure: OnFailure | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise TinkexValidationError(
                "RecoveryPolicy.enabled", f"must be a bool, got {self.enabled!r}"
            )
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise TinkexValidationError(
                "RecoveryPolicy.max_attempts", f"must be an int >= 1, got {self.max_attempts!r}"
            )
        _number(self.backoff, "backoff", minimum=0.0)
        if _number(self.max_backoff, "max_backoff", minimum=0.0) < self.backoff:
            raise TinkexValidationError("RecoveryPolicy.max_backoff", "must be >= backoff")
        _number(self.poll_interval, "poll_interval", minimum=0.0, allow_equal=False)
        strategy = self.checkpoint_strategy
        if strategy == "best":
            raise TinkexValidationError(
                "RecoveryPolicy.checkpoint_strategy",
                "'best' is not supported",
                "use 'latest' or a tinker://<run>/weights/<name> path",
            )
        if strategy != "latest":
            as_tinker_path(strategy, "RecoveryPolicy.checkpoint_strategy", kind="weights")
        if not isinstance(self.restore_optimizer, bool):
            raise TinkexValidationError(
                "RecoveryPolicy.restore_optimizer",
                f"must be a bool, got {self.restore_optimizer!r}",
            )
        for name in ("on_recovery", "on_failure"):
            cb = getattr(self, name)
            if cb is not None and not callable(cb):
                raise TinkexValidationError(f"RecoveryPolicy.{name}", "must be callable or None")

    @property
    def schedule(self) -> Backoff:
        """The waits between attempts: ``backoff`` doubling up to ``max_backoff``, no jitter."""
        return Backoff(initial=self.backoff, maximum=self.max_backoff, jitter=0.0)

    def delay(self, attempt: int) -> float:
        """Wait before attempt ``attempt + 1`` (``attempt`` >= 1)."""
        return self.schedule.delay(max(attempt - 1, 0))


@dataclass(frozen=True)
class RecoveryResult:
    """A successful recovery: the new client and the checkpoint it started from."""

    run_id: str
    training_client: TrainingClient
    checkpoint: str
    attempts: int


def _checkpoint_path(value: Checkpoint | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, Checkpoint):
        return value.tinker_path if value.checkpoint_type == "training" else None
    return value


async def _invoke(callback: Callable[..., Any] | None, *args: Any) -> None:
    if callback is None:
        return
    try:
        if inspect.iscoroutinefunction(callback):
            await callback(*args)
        else:
            result = await asyncio.to_thread(callback, *args)
            if inspect.isawaitable(result):
                await result
    except Exception as exc:  # callbacks must never break recovery
        _log.warning(
            "recovery_callback_failed", callback=getattr(callback, "__name__", "?"), error=repr(exc)
        )


def _emit(service_client: ServiceClient, run_id: str, phase: RecoveryPhase, **fields: Any) -> None:
    """Tell ``tinkex_on_recovery`` observers (the client's hooks) about a recovery step; an
    observer's failure is logged, never raised into recovery."""
    try:
        service_client._session.hooks.on_recovery(RecoveryEvent(run_id, phase, **fields))
    except Exception as exc:  # observers must never break recovery
        _log.warning("recovery_event_failed", run_id=run_id, phase=phase, error=repr(exc))


class RecoveryExecutor:
    """Restarts corrupted runs from a checkpoint with a new TrainingClient."""

    def __init__(
        self,
        service_client: ServiceClient,
        policy: RecoveryPolicy,
        *,
        max_concurrent: int = 1,
    ) -> None:
        if not isinstance(policy, RecoveryPolicy):
            raise TinkexValidationError(
                "policy", f"must be a RecoveryPolicy, got {type(policy).__name__}"
            )
        if (
            isinstance(max_concurrent, bool)
            or not isinstance(max_concurrent, int)
            or max_concurrent < 1
        ):
            raise TinkexValidationError(
                "max_concurrent", f"must be an int >= 1, got {max_concurrent!r}"
            )
        self.service_client = service_client
        self.policy = policy
        self.max_concurrent = max_concurrent
        self._semaphore: asyncio.Semaphore | None = None
        self._pending: set[str] = set()
        self.results: dict[str, RecoveryResult] = {}
        self.failures: dict[str, BaseException] = {}

    @property
    def pending(self) -> frozenset[str]:
        """Run ids whose recovery is queued or running."""
        return frozenset(self._pending)

    def recover(
        self,
        run_id: str,
        *,
        old_client: Any = None,
        last_checkpoint: Checkpoint | str | None = None,
        run: TrainingRun | None = None,
    ) -> APIFuture[RecoveryResult]:
        """Start recovering ``run_id``; the future resolves to a :class:`RecoveryResult` or
        fails with :class:`RecoveryError` once ``max_attempts`` attempts failed."""
        if not self.policy.enabled:
            raise TinkexValidationError(
                "policy.enabled", "recovery is disabled", "pass RecoveryPolicy(enabled=True)"
            )
        if not isinstance(run_id, str) or not run_id:
            raise TinkexValidationError("run_id", f"must be a training run id, got {run_id!r}")
        if run_id in self._pending:
            raise TinkexValidationError(
                "run_id", f"a recovery of {run_id!r} is already pending", "wait for it to finish"
            )
        if isinstance(last_checkpoint, str):
            as_tinker_path(last_checkpoint, "last_checkpoint", kind="weights")
        session = self.service_client._session
        session.check_open()
        self._pending.add(run_id)
        try:
            return session.run(self._recover(run_id, old_client, last_checkpoint, run))
        except BaseException:
            self._pending.discard(run_id)
            raise

    async def _give_up(self, run_id: str, attempt: int, exc: Exception) -> RecoveryError:
        """The final error after ``attempt`` failed attempts (recorded, reported to
        ``on_failure`` and to ``tinkex_on_recovery`` observers as ``failed``)."""
        error = RecoveryError(
            f"recovery of {run_id} failed after {attempt} attempt(s): {exc}",
            run_id=run_id,
            attempts=attempt,
        )
        error.__cause__ = exc
        self.failures[run_id] = error
        _log.warning("recovery_failed", run_id=run_id, attempts=attempt, error=repr(exc))
        _emit(self.service_client, run_id, "failed", attempt=attempt, error=str(error))
        await _invoke(self.policy.on_failure, run_id, error)
        return error

    async def _select_checkpoint(
        self, run_id: str, last_checkpoint: Checkpoint | str | None, run: TrainingRun | None
    ) -> str:
        if self.policy.checkpoint_strategy != "latest":
            return self.policy.checkpoint_strategy
        for candidate in (
            _checkpoint_path(last_checkpoint),
            _checkpoint_path(run.last_checkpoint if run is not None else None),
        ):
            if candidate:
                return candidate
        rest = self.service_client.create_rest_client()
        listing: CheckpointsListResponse = await rest._list_checkpoints(run_id)
        training = [c for c in listing.checkpoints if c.checkpoint_type == "training"]
        if not training:
            raise TinkexError(f"training run {run_id} has no training checkpoint to restart from")
        return max(training, key=lambda c: c.time).tinker_path

    async def _recover(
        self,
        run_id: str,
        old_client: Any,
        last_checkpoint: Checkpoint | str | None,
        run: TrainingRun | None,
    ) -> RecoveryResult:
        policy = self.policy
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.max_concurrent)
        session = self.service_client._session
        try:
            async with self._semaphore:
                attempt = 0
                while True:
                    attempt += 1
                    try:
                        with session.span("recovery.attempt", run_id=run_id, attempt=attempt):
                            checkpoint = await self._select_checkpoint(run_id, last_checkpoint, run)
                            _log.info(
                                "recovery_started",
                                run_id=run_id,
                                attempt=attempt,
                                checkpoint=checkpoint,
                            )
                            _emit(
                                self.service_client,
                                run_id,
                                "started",
                                attempt=attempt,
                                checkpoint=checkpoint,
                            )
                            client = await self.service_client._from_state(
                                checkpoint,
                                base_model=None,
                                user_metadata=None,
                                optimizer=policy.restore_optimizer,
                                optimizer_config=None,
                            )
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        _log.warning(
                            "recovery_attempt_failed",
                            run_id=run_id,
                            attempt=attempt,
                            error=repr(exc),
                        )
                        _emit(
                            self.service_client,
                            run_id,
                            "attempt_failed",
                            attempt=attempt,
                            error=repr(exc),
                        )
                        if attempt >= policy.max_attempts:
                            raise await self._give_up(run_id, attempt, exc) from exc
                        await asyncio.sleep(policy.delay(attempt))
                        continue
                    result = RecoveryResult(run_id, client, checkpoint, attempt)
                    self.results[run_id] = result
                    _log.info(
                        "recovery_completed",
                        run_id=run_id,
                        attempts=attempt,
                        new_model_id=client.model_id,
                    )
                    _emit(
                        self.service_client,
                        run_id,
                        "completed",
                        attempt=attempt,
                        checkpoint=checkpoint,
                        new_model_id=client.model_id,
                    )
                    await _invoke(policy.on_recovery, old_client, client, checkpoint)
                    return result
        finally:
            self._pending.discard(run_id)


@dataclass
class _Watched:
    old_client: Any = None


class RecoveryMonitor:
    """Watches training runs and hands corrupted ones to a :class:`RecoveryExecutor`."""

    def __init__(
        self,
        service_client: ServiceClient,
        executor: RecoveryExecutor,
        policy: RecoveryPolicy | None = None,
    ) -> None:
        if not isinstance(executor, RecoveryExecutor):
            raise TinkexValidationError(
                "executor", f"must be a RecoveryExecutor, got {type(executor).__name__}"
            )
        self.service_client = service_client
        self.executor = executor
        self.policy = policy or executor.policy
        self._runs: dict[str, _Watched] = {}
        self._task: asyncio.Task[None] | None = None
        self.recoveries: dict[str, APIFuture[RecoveryResult]] = {}
        self.poll_errors = 0

    @property
    def monitored(self) -> frozenset[str]:
        return frozenset(self._runs)

    def monitor_run(self, run_id: str, training_client: Any = None) -> None:
        """Start watching ``run_id`` (``training_client`` is passed to ``on_recovery`` as the
        old client). Polling starts with the first monitored run."""
        if not self.policy.enabled:
            raise TinkexValidationError(
                "policy.enabled", "recovery is disabled", "pass RecoveryPolicy(enabled=True)"
            )
        if not isinstance(run_id, str) or not run_id:
            raise TinkexValidationError("run_id", f"must be a training run id, got {run_id!r}")
        session = self.service_client._session
        session.check_open()
        self._runs[run_id] = _Watched(training_client)
        if self._task is None:
            session.loop_thread.loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def stop_monitoring(self, run_id: str) -> None:
        self._runs.pop(run_id, None)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.policy.poll_interval)
            await self._poll()

    async def _poll(self) -> list[str]:
        rest = self.service_client.create_rest_client()
        found: list[str] = []
        for run_id, watched in list(self._runs.items()):
            try:
                run = await rest._get_training_run(run_id, "owned")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.poll_errors += 1
                _log.warning("recovery_poll_error", run_id=run_id, error=repr(exc))
                continue
            if not run.corrupted:
                continue
            _log.warning("recovery_detected", run_id=run_id)
            _emit(self.service_client, run_id, "detected")
            self._runs.pop(run_id, None)
            found.append(run_id)
            try:
                self.recoveries[run_id] = self.executor.recover(
                    run_id, old_client=watched.old_client, run=run
                )
            except TinkexValidationError as exc:
                _log.warning("recovery_not_started", run_id=run_id, error=str(exc))
        return found

    def poll_once(self) -> list[str]:
        """Check every monitored run now; returns the run ids found corrupted (their
        recoveries are in :attr:`recoveries`)."""
        result: list[str] = self.service_client._session.call(self._poll())
        return result

    async def poll_once_async(self) -> list[str]:
        result: list[str] = await self.service_client._session.bridge(self._poll())
        return result

    def stop(self) -> None:
        """Stop polling (running recoveries continue)."""
        task, self._task = self._task, None
        if task is not None:
            loop = self.service_client._session.loop_thread.loop
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)

    close = stop
