"""README command 1: the quickstart really teaches the tiny model its phrases."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import pytest
from rich.console import Console

from tinkex_server import get_local_server

ROOT = Path(__file__).resolve().parents[1]


def load_example(name: str) -> ModuleType:
    path = ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tinkex_example_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quickstart_learns_the_phrases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKEX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TINKER_BASE_URL", raising=False)
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
    get_local_server(tmp_path / "data").close()  # release the directory now, not at exit


def test_loss_curve_labels_top_and_bottom() -> None:
    quickstart = load_example("quickstart")
    chart = quickstart.loss_curve([10.0, 5.0, 1.0], width=3, height=4)
    lines = chart.splitlines()
    assert lines[0].startswith("   10.00")
    assert lines[3].startswith("    1.00")
    assert lines[0].count("█") == 1
    assert lines[3].count("█") == 3
