"""README command 1: the quickstart really teaches the tiny model its phrases."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from rich.console import Console

#: The ``load_example`` fixture of tests/conftest.py.
ExampleLoader = Callable[[str], ModuleType]


def test_quickstart_learns_the_phrases(load_example: ExampleLoader, local_data_dir: Path) -> None:
    quickstart = load_example("quickstart")
    out = io.StringIO()
    result = quickstart.run(seed=0, console=Console(file=out, width=120))

    assert len(result.losses) == 100
    assert result.losses[-1] < 0.2 * result.losses[0]
    expected = [completion for _, completion in quickstart.PHRASES]
    learned = sum(
        after.strip() == want.strip() for after, want in zip(result.after, expected, strict=True)
    )
    assert learned >= len(expected) - 1, (result.after, expected)
    # Before training the adapter is a no-op and the random base model babbles.
    assert (
        sum(
            before.strip() == want.strip()
            for before, want in zip(result.before, expected, strict=True)
        )
        == 0
    )
    assert result.sampler_path.startswith("tinker://")
    assert "/sampler_weights/quickstart" in result.sampler_path
    text = out.getvalue()
    assert "checkpoint list" in text
    assert "% of start" in text
    assert (local_data_dir / "tinkex.sqlite3").exists() or any(local_data_dir.iterdir())


def test_loss_curve_labels_top_and_bottom(load_example: ExampleLoader) -> None:
    quickstart = load_example("quickstart")
    chart = quickstart.loss_curve([10.0, 5.0, 1.0], width=3, height=4)
    lines = chart.splitlines()
    assert lines[0].startswith("   10.00")
    assert lines[3].startswith("    1.00")
    assert lines[0].count("█") == 1
    assert lines[3].count("█") == 3
