"""The retention part of a TrainingClient: ``set_retention``, ``prune_checkpoints`` and the
prune run after every named save (see :mod:`tinkex_clients._retention` for the rules)."""

from __future__ import annotations

import asyncio
from typing import Any

from tinkex_clients._future import APIFuture
from tinkex_clients._rest import RestClient
from tinkex_clients._retention import (
    PruneReport,
    RetentionPolicy,
    RetentionState,
    apply_retention,
)
from tinkex_clients._training_core import TrainingCore
from tinkex_http import get_logger
from tinkex_types import TinkexValidationError

__all__ = ["RetentionOps"]

_log = get_logger("tinkex.clients.retention")


def _as_policy(value: Any, field: str) -> RetentionPolicy | None:
    if value is None or isinstance(value, RetentionPolicy):
        return value
    raise TinkexValidationError(
        field,
        f"must be a RetentionPolicy or None, got {type(value).__name__}",
        "e.g. RetentionPolicy(keep_last=3, keep_every=10, max_age=timedelta(days=7))",
    )


class RetentionOps(TrainingCore):
    """Checkpoint retention of one training run (mixed into :class:`TrainingClient`)."""

    _retention: RetentionPolicy | None = None
    _retention_state: RetentionState | None = None
    _retention_lock: asyncio.Lock | None = None
    #: The report of the last automatic prune (``None`` before the first).
    last_prune: PruneReport | None = None

    @property
    def retention(self) -> RetentionPolicy | None:
        """The policy applied after every save (``None``: keep everything)."""
        return self._retention

    def set_retention(self, policy: RetentionPolicy | None) -> None:
        """Apply ``policy`` after every save of this run (``save_state``,
        ``save_weights_for_sampler``, ``save_weights_and_get_sampling_client`` with a name);
        ``None`` turns retention off. Pruning failures are logged as warnings and never fail
        the save."""
        self._retention = _as_policy(policy, "policy")

    def _state(self) -> RetentionState:
        if self._retention_state is None:
            self._retention_state = RetentionState()
        return self._retention_state

    async def _prune(self, policy: RetentionPolicy, dry_run: bool) -> PruneReport:
        if self._retention_lock is None:
            self._retention_lock = asyncio.Lock()
        async with self._retention_lock:
            with self._session.span("retention.prune", model_id=self.model_id):
                return await apply_retention(
                    RestClient(self._session),
                    policy,
                    run_id=self.model_id,
                    state=self._state(),
                    dry_run=dry_run,
                )

    async def _after_save(self) -> None:
        """Prune with the client's policy, if any; never raises (a warning is logged)."""
        policy = self._retention
        if policy is None:
            return
        try:
            report = await self._prune(policy, False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.warning("retention_prune_failed", model_id=self.model_id, error=repr(exc))
            return
        self.last_prune = report
        if report.deleted:
            _log.info(
                "retention_pruned",
                model_id=self.model_id,
                deleted=[c.tinker_path for c in report.deleted],
            )

    def prune_checkpoints(
        self, policy: RetentionPolicy | None = None, *, dry_run: bool = False
    ) -> APIFuture[PruneReport]:
        """Apply ``policy`` (default: the client's) to this run's checkpoints now; with
        ``dry_run`` only report what would be deleted. Failed deletions are in the report."""
        self._check_open()
        chosen = _as_policy(policy, "policy") or self._retention
        if chosen is None:
            raise TinkexValidationError(
                "policy", "no retention policy given or set", "pass one or call set_retention"
            )
        return self._session.run(self._prune(chosen, bool(dry_run)), "TrainingClient")

    async def prune_checkpoints_async(
        self, policy: RetentionPolicy | None = None, *, dry_run: bool = False
    ) -> PruneReport:
        return await self.prune_checkpoints(policy, dry_run=dry_run)
