"""examples/resume.py: a client restored with its optimizer continues exactly where it was."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from rich.console import Console

import tinkex as tinker

#: The ``load_example`` fixture of tests/conftest.py.
ExampleLoader = Callable[[str], ModuleType]


def test_resume_with_optimizer_is_identical(
    load_example: ExampleLoader, local_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    resume = load_example("resume")
    out = io.StringIO()
    result = resume.run(steps_before=3, steps_after=3, console=Console(file=out, width=160))

    assert len(result.uninterrupted) == 3
    # Same weights, same Adam moments and step count: bit-identical losses.
    assert result.resumed == result.uninterrupted
    # Weights only: the first step matches (same weights), the next ones do not (fresh Adam).
    assert result.weights_only[0] == result.uninterrupted[0]
    assert abs(result.weights_only[1] - result.uninterrupted[1]) > 1e-3 * result.uninterrupted[1]
    # Training went on between the checkpoint and the end.
    assert result.uninterrupted[-1] < result.uninterrupted[0]

    assert result.checkpoint.startswith("tinker://")
    assert result.checkpoint.endswith("/weights/resume-example")
    with tinker.ServiceClient(base_url="local://") as service:
        run_id = result.checkpoint.removeprefix("tinker://").split("/")[0]
        listed = service.create_rest_client().list_checkpoints(run_id).result()
    assert [c.tinker_path for c in listed.checkpoints] == [result.checkpoint]
    assert "resumed with optimizer" in out.getvalue()

    assert resume.main(["--steps-before", "1", "--steps-after", "1"]) == 0
    assert "weights only" in capsys.readouterr().out
