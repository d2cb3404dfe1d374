"""Fixtures shared by the root tests: loading an example script, a fresh local server."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tinkex_server import get_local_server

ROOT = Path(__file__).resolve().parents[1]

# The cookbook check builds a venv for minutes: opt-in, never skipped silently.
_COOKBOOK_TESTS = ["test_compat_cookbook.py", "test_compat_cookbook_on_tinkex.py"]
collect_ignore = [] if os.environ.get("TINKEX_COMPAT_COOKBOOK") == "1" else _COOKBOOK_TESTS

ExampleLoader = Callable[[str], ModuleType]


def _load_example(name: str) -> ModuleType:
    path = ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tinkex_example_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def load_example() -> ExampleLoader:
    """``load_example("sft")`` imports ``examples/sft.py`` as a module."""
    return _load_example


@pytest.fixture
def local_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The in-process server (``local://``) on a fresh data directory, closed afterwards."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("TINKEX_DATA_DIR", str(data_dir))
    monkeypatch.delenv("TINKER_BASE_URL", raising=False)
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    yield data_dir
    get_local_server(data_dir).close()  # release the directory now rather than at exit
