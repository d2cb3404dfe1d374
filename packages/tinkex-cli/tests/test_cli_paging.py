"""Pagination and output helpers (pure functions)."""

from __future__ import annotations

import datetime as dt
import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from tinkex_cli._output import format_size, format_time, to_json_data
from tinkex_cli._paging import fetch_pages
from tinkex_types import Checkpoint


@settings(deadline=None, max_examples=200)
@given(
    total=st.integers(0, 60),
    want=st.integers(0, 70),
    offset=st.integers(0, 70),
    page_size=st.integers(1, 25),
    reports_total=st.booleans(),
)
def test_fetch_pages_matches_slicing(
    total: int, want: int, offset: int, page_size: int, reports_total: bool
) -> None:
    items = list(range(total))
    calls: list[tuple[int, int]] = []

    def page(limit: int, off: int) -> tuple[list[int], int | None]:
        assert 1 <= limit <= page_size
        calls.append((limit, off))
        return items[off : off + limit], (total if reports_total else None)

    got, seen_total = fetch_pages(page, want=want, offset=offset, page_size=page_size, what="x")
    expected = items[offset:] if want == 0 else items[offset : offset + want]
    assert got == expected
    if reports_total:
        assert seen_total == total
    else:
        assert seen_total == offset + len(expected)
    # no call is wasted beyond one that comes back short (or empty)
    needed = len(expected) // page_size + 1
    assert len(calls) <= needed


def test_format_size() -> None:
    assert format_size(None) == "-"
    assert format_size(0) == "0 B"
    assert format_size(1023) == "1023 B"
    assert format_size(1536) == "1.5 KB"
    assert format_size(5 * 1024**2) == "5.0 MB"
    assert format_size(3 * 1024**5) == "3072.0 TB"


def test_format_time() -> None:
    now = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC)
    assert format_time(None) == "-"
    assert format_time(now - dt.timedelta(seconds=5), now=now) == "just now"
    assert format_time(now + dt.timedelta(seconds=5), now=now) == "in less than a minute"
    assert format_time(now - dt.timedelta(minutes=1, seconds=3), now=now) == "1 minute ago"
    assert format_time(now - dt.timedelta(hours=3), now=now) == "3 hours ago"
    assert format_time(now + dt.timedelta(days=2, hours=1), now=now) == "in 2 days"
    assert format_time(now - dt.timedelta(days=45), now=now) == "2025-11-26 12:00 UTC"
    naive = dt.datetime(2026, 1, 10, 11, 0)  # read as UTC
    assert format_time(naive, now=now) == "1 hour ago"


def test_to_json_data_keeps_every_field_and_stays_valid_json() -> None:
    ckpt = Checkpoint(
        checkpoint_id="weights/a",
        checkpoint_type="training",
        time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        tinker_path="tinker://run-1/weights/a",
    )
    data = to_json_data({"c": ckpt, "xs": (1.5, math.inf, math.nan), "when": ckpt.time})
    assert data["c"]["expires_at"] is None  # None fields are kept
    assert data["c"]["size_bytes"] is None
    assert data["c"]["training_run_id"] == "run-1"
    assert data["c"]["time"] == "2026-01-01T00:00:00+00:00"
    assert data["xs"] == [1.5, None, None]
    json.dumps(data, allow_nan=False)
