"""examples/concurrent_sampling.py: concurrent seeded requests give the sequential results."""

from __future__ import annotations

import importlib.util
import io
import sys
from collections.abc import Iterator
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


@pytest.fixture
def local_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The in-process server (``local://``) on a fresh data directory, closed afterwards."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("TINKEX_DATA_DIR", str(data_dir))
    monkeypatch.delenv("TINKER_BASE_URL", raising=False)
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    yield data_dir
    get_local_server(data_dir).close()  # release the directory now rather than at exit


def test_concurrent_equals_sequential(
    local_data_dir: Path, capsys: pytest.CaptureFixture[str]
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
