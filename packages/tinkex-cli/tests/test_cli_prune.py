"""``tinkex checkpoint prune`` against the real local server: the plan, --dry-run, the
confirmation, filters, and the safety rules (published checkpoints and other runs stay)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tinkex_cli._cmd_checkpoint_prune import parse_duration

from .conftest import BASE_MODEL, Tinkex


def _run(training: tuple[str, ...] = (), sampler: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """A new run (in the scratch data directory) with these saves, in order; its id and
    the paths."""
    from tinkex_clients import ServiceClient

    with ServiceClient(base_url="local://") as service:
        tc = service.create_lora_training_client(BASE_MODEL, rank=2, seed=0)
        paths = [tc.save_state(n).result().path for n in training]
        paths += [tc.save_weights_for_sampler(n).result().path for n in sampler]
        return tc.model_id, paths


def _names(tinkex: Tinkex, run: str) -> list[str]:
    doc = tinkex.json("checkpoint", "list", "--run-id", run, "--limit", "0")
    return sorted(c["checkpoint_id"] for c in doc["checkpoints"])


def test_parse_duration() -> None:
    assert parse_duration("90") == timedelta(seconds=90)
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("1d12h") == timedelta(hours=36)
    assert parse_duration("2W") == timedelta(weeks=2)
    for bad in ("", "7 days", "d", "-1h", "1x"):
        with pytest.raises(Exception, match="not a duration"):
            parse_duration(bad)


def test_dry_run_shows_the_plan_and_deletes_nothing(tinkex: Tinkex, scratch: Any) -> None:
    run, paths = _run(training=("s1", "s2", "s3", "s4", "s5"))
    doc = tinkex.json("checkpoint", "prune", "--run", run, "--keep-last", "2", "--dry-run")
    assert doc["dry_run"] is True
    assert doc["to_delete"] == paths[:3]
    assert doc["deleted"] == []
    assert doc["policy"]["keep_last"] == 2
    reasons = {c["path"]: (c["action"], c["reason"]) for c in doc["checkpoints"]}
    assert reasons[paths[4]] == ("keep", "newest")
    assert reasons[paths[3]] == ("keep", "one of the last 2")
    assert reasons[paths[0]] == ("delete", "policy")
    assert len(_names(tinkex, run)) == 5
    table = tinkex("checkpoint", "prune", "--run", run, "--keep-last", "2", "--dry-run")
    assert table.exit_code == 0, table.output
    assert "Prune: 3 would delete, 2 kept" in table.stdout
    assert table.stdout.count("would delete") == 4  # the title and three rows
    assert "keep (newest)" in table.stdout
    assert "Dry run: nothing was deleted." in table.stdout
    assert "About to delete" not in table.stderr
    assert len(_names(tinkex, run)) == 5


def test_asks_first_and_can_be_cancelled(tinkex: Tinkex, scratch: Any) -> None:
    run, paths = _run(training=("a", "b", "c"))
    result = tinkex("checkpoint", "prune", "--run", run, "--keep-last", "1", input="n\n")
    assert result.exit_code == 0, result.output
    assert "About to delete 2 checkpoints" in result.stderr
    assert paths[0] in result.stderr
    assert "Cancelled; nothing was deleted." in result.stdout
    assert len(_names(tinkex, run)) == 3
    result = tinkex("checkpoint", "prune", "--run", run, "--keep-last", "1", input="y\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("deleted") >= 2
    assert _names(tinkex, run) == ["weights/c"]


def test_published_and_other_runs_survive(tinkex: Tinkex, scratch: Any) -> None:
    run, paths = _run(training=("p", "x", "y", "z"))
    other, other_paths = _run(training=("o1", "o2", "o3"))
    assert tinkex("checkpoint", "publish", paths[0]).exit_code == 0
    doc = tinkex.json("checkpoint", "prune", "--run", run, "--keep-last", "1", "--yes")
    assert doc["deleted"] == paths[1:3]
    assert _names(tinkex, run) == ["weights/p", "weights/z"]
    assert len(_names(tinkex, other)) == 3
    doc = tinkex.json(
        "checkpoint", "prune", "--all-runs", "--keep-last", "1", "--include-published", "--yes"
    )
    assert set(doc["deleted"]) == {paths[0], *other_paths[:2]}
    assert _names(tinkex, run) == ["weights/z"]
    assert _names(tinkex, other) == ["weights/o3"]


def test_filters_kind_name_age_and_keep_every(tinkex: Tinkex, scratch: Any) -> None:
    run, paths = _run(
        training=("tmp-1", "keep-1", "tmp-2", "tmp-3", "tmp-4"), sampler=("tmp-s1", "tmp-s2")
    )
    young = tinkex.json(
        "checkpoint", "prune", "--run", run, "--older-than", "7d", "--yes", "--name", "tmp-*"
    )
    assert young["to_delete"] == []
    doc = tinkex.json(
        "checkpoint",
        "prune",
        "--run",
        run,
        "--kind",
        "training",
        "--name",
        "tmp-*",
        "--keep-every",
        "2",
        "--older-than",
        "0s",
        "--yes",
    )
    # tmp-1..tmp-4 are #1..#4 among the matching ones: #2, #4 (and the newest) stay
    assert doc["deleted"] == [paths[0], paths[3]]
    assert _names(tinkex, run) == [
        "sampler_weights/tmp-s1",
        "sampler_weights/tmp-s2",
        "weights/keep-1",
        "weights/tmp-2",
        "weights/tmp-4",
    ]
    doc = tinkex.json(
        "checkpoint", "prune", "--run", run, "--kind", "sampler", "--keep-last", "1", "-y"
    )
    assert doc["deleted"] == [paths[5]]


def test_usage_errors(tinkex: Tinkex, scratch: Any) -> None:
    run, _ = _run(training=("a",))
    for args, message in (
        (["--run", run], "at least one rule"),
        (["--keep-last", "1"], "--run RUN"),
        (["--run", run, "--all-runs", "--keep-last", "1"], "--run RUN"),
        (["--run", run, "--older-than", "soon"], "not a duration"),
        (["--run", run, "--keep-last", "0"], "--keep-last"),
    ):
        result = tinkex("checkpoint", "prune", *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
    missing = tinkex("checkpoint", "prune", "--run", "no-such-run", "--keep-last", "1", "-y")
    assert missing.exit_code == 4, missing.output
    assert _names(tinkex, run) == ["weights/a"]
