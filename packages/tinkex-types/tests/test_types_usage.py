"""Usage models: counters, sums, the totals and per-base-model sums of a report."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tinkex_types import USAGE_COUNTERS, UsageCounts, UsageEntry, UsageResponse, usage_response


def test_counters_and_plus() -> None:
    a = UsageCounts(forward_tokens=3, sampled_tokens=4, optim_steps=1)
    b = UsageCounts(forward_tokens=5, forward_backward_tokens=7, sample_prompt_tokens=2)
    total = a.plus(b)
    assert total.forward_tokens == 8
    assert total.training_tokens == 15
    assert total.sampling_tokens == 6
    assert total.optim_steps == 1
    assert list(total.counters()) == list(USAGE_COUNTERS)
    assert "kind" not in USAGE_COUNTERS


def test_negative_counter_is_refused() -> None:
    with pytest.raises(ValidationError, match="forward_tokens"):
        UsageCounts(forward_tokens=-1)


def test_usage_response_sums_entries_per_base_model() -> None:
    entries = [
        UsageEntry(kind="training", base_model="m1", training_run_id="r", forward_tokens=10),
        UsageEntry(kind="sampling", base_model="m1", sampling_session_id="s", sampled_tokens=3),
        UsageEntry(kind="sampling", base_model="m2", sampling_session_id="t", sampled_tokens=5),
    ]
    report = usage_response("session", "sess", "client", entries)
    assert report.totals.forward_tokens == 10
    assert report.totals.sampled_tokens == 8
    assert report.by_base_model["m1"].sampled_tokens == 3
    assert report.by_base_model["m2"].sampled_tokens == 5
    again = UsageResponse.from_json(report.to_json())
    assert again == report
    assert again.source == "client"
    assert again.entries[0].training_run_id == "r"
