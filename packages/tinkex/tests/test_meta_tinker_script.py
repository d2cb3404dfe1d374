"""A script written for the official tinker SDK runs unchanged with ``import tinkex as tinker``
against the in-process local server (default plugin discovery, no mocks)."""

from __future__ import annotations

import runpy
from collections.abc import Iterator
from pathlib import Path

import pytest

import tinkex_types

SCRIPT = Path(__file__).with_name("tinker_style_script.py")


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("TINKEX_DATA_DIR", str(data_dir))
    monkeypatch.setenv("TINKER_BASE_URL", "local://")
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    # plugins of the core packages only, discovered through their entry points
    monkeypatch.setenv("TINKEX_LOAD_PLUGINS", "http,clients,server")
    old = tinkex_types.set_hooks(None)
    try:
        yield tmp_path
    finally:
        tinkex_types.set_hooks(old)
        from tinkex_server._local import get_local_server

        get_local_server(data_dir).close()  # only the server this test started


def test_tinker_style_script_runs_unchanged(local_env: Path) -> None:
    ns = runpy.run_path(str(SCRIPT), run_name="tinker_script")
    losses = ns["losses"]
    assert len(losses) == 6
    assert losses[-1] < losses[0]
    assert ns["optim_result"] is not None
    result = ns["result"]
    assert len(result.sequences) == 8
    # greedy decoding: every sample is the same
    assert len({tuple(s.tokens) for s in result.sequences}) == 1
    assert all(isinstance(c, str) for c in ns["completions"])
    paths = {c.tinker_path for c in ns["checkpoints"].checkpoints}
    assert f"tinker://{ns['training_client'].model_id}/sampler_weights/pig-latin-model" in paths
    assert "tinkex/tiny-llama-100k" in ns["capabilities"].model_names()
    assert ns["service_client"].closed
