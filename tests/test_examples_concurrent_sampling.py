"""examples/concurrent_sampling.py: concurrent seeded requests give the sequential results."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from rich.console import Console

#: The ``load_example`` fixture of tests/conftest.py.
ExampleLoader = Callable[[str], ModuleType]


def test_concurrent_equals_sequential(
    load_example: ExampleLoader, local_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_example("concurrent_sampling")
    out = io.StringIO()
    result = example.run(requests=12, max_tokens=8, console=Console(file=out, width=120))

    assert len(result.sequential) == 12
    assert all(len(tokens) > 0 for tokens in result.sequential)
    assert result.with_futures == result.sequential
    assert result.with_asyncio == result.sequential
    # The seeds matter: requests repeating a prompt with another seed get other tokens.
    assert len({tuple(t) for t in result.sequential}) == 12
    assert set(result.seconds) == {"one at a time", "futures", "asyncio.gather"}
    assert out.getvalue().count("True") == 3

    assert example.main(["--requests", "2", "--max-tokens", "2"]) == 0
    assert "2 seeded sample requests" in capsys.readouterr().out
