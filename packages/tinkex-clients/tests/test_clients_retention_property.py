"""Retention never deletes what it must keep: hypothesis over random save/publish sequences
of several runs, pruned after every save as a training client does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tinkex_clients import RetentionPolicy, plan_retention
from tinkex_clients._retention import RetentionState
from tinkex_types import Checkpoint

START = datetime(2026, 1, 1, tzinfo=UTC)
RUNS = ("run-a", "run-b")


@dataclass(frozen=True)
class Save:
    run: str
    kind: str
    publish: bool
    gap_minutes: int


saves = st.lists(
    st.builds(
        Save,
        run=st.sampled_from(RUNS),
        kind=st.sampled_from(("training", "sampler")),
        publish=st.booleans(),
        gap_minutes=st.integers(min_value=1, max_value=600),
    ),
    min_size=1,
    max_size=30,
)
policies = (
    st.fixed_dictionaries(
        {
            "keep_last": st.none() | st.integers(min_value=1, max_value=4),
            "keep_every": st.none() | st.integers(min_value=1, max_value=5),
            "max_age": st.none()
            | st.integers(min_value=0, max_value=3).map(lambda h: timedelta(hours=h)),
            "kinds": st.sampled_from([("training",), ("sampler",), ("training", "sampler")]),
            "include_published": st.booleans(),
            "include_other_runs": st.booleans(),
        }
    )
    .filter(lambda d: any(d[k] is not None for k in ("keep_last", "keep_every", "max_age")))
    .map(lambda d: RetentionPolicy(**d))
)


def _checkpoint(save: Save, number: int, when: datetime) -> Checkpoint:
    folder = "weights" if save.kind == "training" else "sampler_weights"
    return Checkpoint(
        checkpoint_id=f"{folder}/c{number}",
        checkpoint_type=save.kind,  # type: ignore[arg-type]
        time=when,
        tinker_path=f"tinker://{save.run}/{folder}/c{number}",
        public=save.publish,
    )


def _must_keep(
    history: list[tuple[Checkpoint, int]], policy: RetentionPolicy, own: str, now: datetime
) -> set[str]:
    """What no prune at ``now`` may have deleted, from the save history alone."""
    keep: set[str] = set()
    for ckpt, number in history:
        run, kind = ckpt.training_run_id, ckpt.checkpoint_type
        later = (
            sum(1 for c, _ in history if (c.training_run_id, c.checkpoint_type) == (run, kind))
            - number
        )
        covered = kind in policy.kinds and (run == own or policy.include_other_runs)
        if (
            not covered
            or later == 0
            or (policy.keep_last is not None and later < policy.keep_last)
            or (policy.keep_every is not None and number % policy.keep_every == 0)
            or (ckpt.public and not policy.include_published)
            or (policy.max_age is not None and now - ckpt.time <= policy.max_age)
        ):
            keep.add(ckpt.tinker_path)
    return keep


@settings(max_examples=300, deadline=None)
@given(sequence=saves, policy=policies)
def test_pruning_after_every_save_keeps_what_it_must(
    sequence: list[Save], policy: RetentionPolicy
) -> None:
    own = RUNS[0]
    state = RetentionState()
    stored: list[Checkpoint] = []
    history: list[tuple[Checkpoint, int]] = []
    counts: dict[tuple[str, str], int] = {}
    when = START
    for i, save in enumerate(sequence):
        when += timedelta(minutes=save.gap_minutes)
        ckpt = _checkpoint(save, i, when)
        stored.append(ckpt)
        counts[(save.run, save.kind)] = counts.get((save.run, save.kind), 0) + 1
        history.append((ckpt, counts[(save.run, save.kind)]))
        if save.run != own:
            continue  # only the own run's client prunes, after its own saves
        listed = (
            stored if policy.include_other_runs else [c for c in stored if c.training_run_id == own]
        )
        plan = plan_retention(listed, policy, run_id=own, now=when, ordinals=state.number(listed))
        doomed = {c.tinker_path for c in plan.to_delete}
        stored = [c for c in stored if c.tinker_path not in doomed]
        present = {c.tinker_path for c in stored}
        assert _must_keep(history, policy, own, when) <= present
        for gone in plan.to_delete:
            assert gone.checkpoint_type in policy.kinds
            assert policy.include_other_runs or gone.training_run_id == own
            assert policy.include_published or not gone.public


@settings(max_examples=300, deadline=None)
@given(sequence=saves, policy=policies)
def test_one_plan_keeps_exactly_what_a_rule_protects(
    sequence: list[Save], policy: RetentionPolicy
) -> None:
    when = START
    listed: list[Checkpoint] = []
    for i, save in enumerate(sequence):
        when += timedelta(minutes=save.gap_minutes)
        listed.append(_checkpoint(save, i, when))
    now = when + timedelta(hours=1)
    plan = plan_retention(listed, policy, run_id=RUNS[0], now=now)
    covered = [c for c in listed if c.checkpoint_type in policy.kinds]
    assert sorted(d.checkpoint.tinker_path for d in plan.decisions) == sorted(
        c.tinker_path for c in covered
    )
    for decision in plan.decisions:
        ckpt = decision.checkpoint
        group = [
            c
            for c in covered
            if (c.training_run_id, c.checkpoint_type)
            == (ckpt.training_run_id, ckpt.checkpoint_type)
        ]
        from_end = len(group) - 1 - group.index(ckpt)
        protected = (
            from_end == 0
            or (policy.keep_last is not None and from_end < policy.keep_last)
            or (policy.keep_every is not None and (group.index(ckpt) + 1) % policy.keep_every == 0)
            or (ckpt.public and not policy.include_published)
            or (ckpt.training_run_id != RUNS[0] and not policy.include_other_runs)
            or (policy.max_age is not None and now - ckpt.time <= policy.max_age)
        )
        assert decision.delete is not protected, decision
