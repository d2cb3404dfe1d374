"""Checkpoint retention: which checkpoints a policy keeps and deleting the others.

* :class:`RetentionPolicy` -- keep the last N, keep every K-th, delete only once older than
  a TTL (combinable); published checkpoints and other runs' checkpoints are never touched
  unless ``include_published`` / ``include_other_runs``.
* :func:`plan_retention` -- the pure decision over a list of checkpoints (what ``tinkex
  checkpoint prune --dry-run`` shows).
* :func:`apply_retention` -- lists the checkpoints through the REST API, plans and deletes;
  a failed deletion is reported, never raised.

The rules, per training run and kind (``training`` / ``sampler``), oldest first:

1. the newest checkpoint is always kept;
2. ``keep_last=N`` keeps the N newest; ``keep_every=K`` keeps the K-th, 2K-th, ... saved;
3. anything else is deleted, but with ``max_age`` only once it is older than ``max_age``
   (alone, ``max_age`` deletes every checkpoint older than it but the newest);
4. a published checkpoint (unless ``include_published``) and a checkpoint of another run
   than the client's (unless ``include_other_runs``) is kept whatever 2 and 3 say.

"K-th saved" counts the checkpoints in the order they were saved: a training client numbers
the checkpoints it sees (its own saves, and those already there when it first prunes), so a
pruned checkpoint keeps its number; a one-shot prune (the CLI) numbers the listed ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tinkex_http import get_logger
from tinkex_types import Checkpoint, CheckpointRef, TinkexValidationError

if TYPE_CHECKING:  # pragma: no cover
    from tinkex_clients._rest import RestClient

__all__ = [
    "CHECKPOINT_KINDS",
    "PruneReport",
    "RetentionDecision",
    "RetentionPlan",
    "RetentionPolicy",
    "RetentionState",
    "apply_retention",
    "list_checkpoints_for",
    "plan_retention",
]

_log = get_logger("tinkex.clients.retention")

#: The ``checkpoint_type`` values a policy may cover.
CHECKPOINT_KINDS = ("training", "sampler")
_PAGE = 1000


def _count(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TinkexValidationError(
            f"RetentionPolicy.{name}", f"must be an int >= 1 or None, got {value!r}"
        )
    return value


def _age(value: Any) -> timedelta | None:
    if value is None or isinstance(value, timedelta):
        seconds = None if value is None else value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        seconds = math.nan
    if seconds is not None and not (math.isfinite(seconds) and seconds >= 0):
        raise TinkexValidationError(
            "RetentionPolicy.max_age",
            f"must be a timedelta or a number of seconds >= 0, got {value!r}",
            "e.g. max_age=timedelta(days=7)",
        )
    return None if seconds is None else timedelta(seconds=seconds)


@dataclass(frozen=True)
class RetentionPolicy:
    """Which checkpoints of a training run to keep (see the module docstring for the rules).

    ``max_age`` is a :class:`~datetime.timedelta` or seconds; ``kinds`` the checkpoint types
    covered (``"training"``, ``"sampler"``).
    """

    keep_last: int | None = None
    keep_every: int | None = None
    max_age: timedelta | float | None = None
    kinds: tuple[str, ...] = CHECKPOINT_KINDS
    include_published: bool = False
    include_other_runs: bool = False

    def __post_init__(self) -> None:
        _count(self.keep_last, "keep_last")
        _count(self.keep_every, "keep_every")
        object.__setattr__(self, "max_age", _age(self.max_age))
        if self.keep_last is None and self.keep_every is None and self.max_age is None:
            raise TinkexValidationError(
                "RetentionPolicy",
                "has no rule: it would keep everything",
                "give keep_last, keep_every and/or max_age",
            )
        kinds = (self.kinds,) if isinstance(self.kinds, str) else self.kinds
        if (
            not isinstance(kinds, (tuple, list, set, frozenset))
            or not kinds
            or any(k not in CHECKPOINT_KINDS for k in kinds)
        ):
            raise TinkexValidationError(
                "RetentionPolicy.kinds",
                f"must be a non-empty subset of {CHECKPOINT_KINDS}, got {self.kinds!r}",
            )
        object.__setattr__(self, "kinds", tuple(k for k in CHECKPOINT_KINDS if k in kinds))
        for name in ("include_published", "include_other_runs"):
            if not isinstance(getattr(self, name), bool):
                raise TinkexValidationError(
                    f"RetentionPolicy.{name}", f"must be a bool, got {getattr(self, name)!r}"
                )

    @property
    def max_age_delta(self) -> timedelta | None:
        """``max_age`` as a timedelta (it is stored as one)."""
        value = self.max_age
        return value if isinstance(value, timedelta) else None

    def describe(self) -> dict[str, Any]:
        """The policy as JSON-ready data."""
        age = self.max_age_delta
        return {
            "keep_last": self.keep_last,
            "keep_every": self.keep_every,
            "max_age_seconds": None if age is None else age.total_seconds(),
            "kinds": list(self.kinds),
            "include_published": self.include_published,
            "include_other_runs": self.include_other_runs,
        }


@dataclass(frozen=True)
class RetentionDecision:
    """One checkpoint and what the policy does with it (``reason`` says why)."""

    checkpoint: Checkpoint
    delete: bool
    reason: str
    ordinal: int


@dataclass(frozen=True)
class RetentionPlan:
    """The decisions for every checkpoint a policy covers, oldest first per run and kind."""

    decisions: tuple[RetentionDecision, ...]

    @property
    def to_delete(self) -> list[Checkpoint]:
        return [d.checkpoint for d in self.decisions if d.delete]

    @property
    def to_keep(self) -> list[Checkpoint]:
        return [d.checkpoint for d in self.decisions if not d.delete]


@dataclass
class PruneReport:
    """What a prune did: ``deleted`` checkpoints, ``failed`` ones with the error, the plan."""

    plan: RetentionPlan
    dry_run: bool = False
    deleted: list[Checkpoint] = field(default_factory=list)
    failed: list[tuple[Checkpoint, str]] = field(default_factory=list)


def _when(ckpt: Checkpoint) -> datetime:
    t = ckpt.time
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _key(ckpt: Checkpoint) -> tuple[str, str]:
    return ckpt.tinker_path, _when(ckpt).isoformat()


class RetentionState:
    """Save numbers of the checkpoints a training client has seen (for ``keep_every``)."""

    def __init__(self) -> None:
        self._ordinals: dict[tuple[str, str], int] = {}
        self._counts: dict[tuple[str, str], int] = {}

    def number(self, checkpoints: Iterable[Checkpoint]) -> dict[tuple[str, str], int]:
        """Give each checkpoint not seen before the next number of its run and kind (oldest
        first); returns the numbers of all seen checkpoints."""
        for ckpt in sorted(checkpoints, key=_when):
            key = _key(ckpt)
            if key in self._ordinals:
                continue
            group = (ckpt.training_run_id or "", ckpt.checkpoint_type)
            self._counts[group] = self._counts.get(group, 0) + 1
            self._ordinals[key] = self._counts[group]
        return dict(self._ordinals)


def _decide(
    ckpt: Checkpoint,
    *,
    ordinal: int,
    from_end: int,
    policy: RetentionPolicy,
    own_run: str | None,
    now: datetime,
) -> tuple[bool, str]:
    if own_run is not None and ckpt.training_run_id != own_run and not policy.include_other_runs:
        return False, "another run"
    if from_end == 0:
        return False, "newest"
    if policy.keep_last is not None and from_end < policy.keep_last:
        return False, f"one of the last {policy.keep_last}"
    if policy.keep_every is not None and ordinal % policy.keep_every == 0:
        return False, f"every {policy.keep_every}-th (#{ordinal})"
    if ckpt.public and not policy.include_published:
        return False, "published"
    age = policy.max_age_delta
    if age is not None and now - _when(ckpt) <= age:
        return False, "not older than max_age"
    return True, "policy"


def plan_retention(
    checkpoints: Sequence[Checkpoint],
    policy: RetentionPolicy,
    *,
    run_id: str | None = None,
    now: datetime | None = None,
    ordinals: Mapping[tuple[str, str], int] | None = None,
) -> RetentionPlan:
    """Decide, for every checkpoint of a kind the policy covers, whether to delete it.

    ``run_id`` is the run the policy belongs to (others' checkpoints are kept unless
    ``include_other_runs``); ``ordinals`` the save numbers (by default: position among the
    listed checkpoints of the same run and kind, oldest = 1); ``now`` defaults to the clock.
    """
    now = now or datetime.now(UTC)
    groups: dict[tuple[str, str], list[Checkpoint]] = {}
    for ckpt in sorted(checkpoints, key=_when):
        if ckpt.checkpoint_type in policy.kinds:
            group = (ckpt.training_run_id or "", ckpt.checkpoint_type)
            groups.setdefault(group, []).append(ckpt)
    decisions: list[RetentionDecision] = []
    for members in groups.values():
        for position, ckpt in enumerate(members, 1):
            ordinal = position if ordinals is None else ordinals.get(_key(ckpt), position)
            delete, reason = _decide(
                ckpt,
                ordinal=ordinal,
                from_end=len(members) - position,
                policy=policy,
                own_run=run_id,
                now=now,
            )
            decisions.append(RetentionDecision(ckpt, delete, reason, ordinal))
    return RetentionPlan(tuple(decisions))


async def list_checkpoints_for(rest: RestClient, run_id: str | None) -> list[Checkpoint]:
    """The checkpoints of ``run_id``, or (``None``) all of the caller's, every page."""
    if run_id is not None:
        return list((await rest._list_checkpoints(run_id)).checkpoints)
    found: list[Checkpoint] = []
    while True:
        page = await rest._list_user_checkpoints(_PAGE, len(found))
        found.extend(page.checkpoints)
        total = page.cursor.total_count if page.cursor is not None else None
        if not page.checkpoints or (total is not None and len(found) >= total):
            return found


async def apply_retention(
    rest: RestClient,
    policy: RetentionPolicy,
    *,
    run_id: str | None,
    state: RetentionState | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PruneReport:
    """List, plan and (unless ``dry_run``) delete; failed deletions are in the report."""
    scope = None if policy.include_other_runs else run_id
    checkpoints = await list_checkpoints_for(rest, scope)
    ordinals = None if state is None else state.number(checkpoints)
    plan = plan_retention(checkpoints, policy, run_id=run_id, now=now, ordinals=ordinals)
    report = PruneReport(plan, dry_run=dry_run)
    if dry_run:
        return report
    for ckpt in plan.to_delete:
        ref = CheckpointRef(ckpt.training_run_id or "", ckpt.checkpoint_id)
        try:
            await rest._manage("delete_checkpoint", "DELETE", ref)
        except Exception as exc:
            _log.warning("retention_delete_failed", checkpoint=ckpt.tinker_path, error=repr(exc))
            report.failed.append((ckpt, str(exc)))
        else:
            report.deleted.append(ckpt)
    return report
