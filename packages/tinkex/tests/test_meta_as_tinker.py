"""``import tinker`` code runs on tinkex unmodified (``python -m tinkex.run``,
``tinkex.install_as_tinker``). Each case runs in a fresh interpreter: the test environment
also has the official tinker 0.16.1 installed, which must not leak into other tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = Path(__file__).parent / "compat" / "official_style_script.py"


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TINKEX_DATA_DIR=str(tmp_path / "data"),
        TINKER_BASE_URL="local://",
        TINKEX_LOAD_PLUGINS="http,clients,server",
    )
    env.pop("TINKER_API_KEY", None)
    return env


def _python(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env=_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_runner_runs_an_official_style_script_on_local(tmp_path: Path) -> None:
    done = _python(tmp_path, "-m", "tinkex.run", str(SCRIPT), "--flag", "x")
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["tinker_module"] == "tinkex"
    assert out["tinker_is_tinkex"] is True
    assert out["types_module"] == "tinkex.types"
    assert out["argv"] == ["--flag", "x"]
    losses = out["losses"]
    assert len(losses) == 3
    assert losses[-1] < losses[0]
    assert out["sampled"] >= 1
    assert out["path"] in out["checkpoints"]


def test_install_as_tinker_serves_the_module_paths(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import tinkex
        tinkex.install_as_tinker()
        import tinker, tinkex.types
        from tinker.types.datum import Datum
        from tinker.types import tensor_data
        from tinker.lib.public_interfaces.api_future import APIFuture
        from tinker.lib.public_interfaces import ServiceClient
        import tinker.types.sampling_params as sp
        assert tinker is tinkex and tinker.types is tinkex.types
        assert Datum is tinkex.Datum and tensor_data.TensorData is tinkex.TensorData
        assert APIFuture is tinkex.APIFuture and ServiceClient is tinkex.ServiceClient
        assert sp.SamplingParams is tinkex.SamplingParams and sp.__all__ == ["SamplingParams"]
        assert tinkex.__spec__.name == "tinkex" and tinkex.is_installed_as_tinker()
        try:
            import tinker.types.no_such_module
        except ModuleNotFoundError as exc:
            print("missing:", exc.name)
        tinkex.uninstall_as_tinker()
        import tinker as official
        print("after:", official is tinkex, official.__version__)
        """
    )
    done = _python(tmp_path, "-c", code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "missing: tinker.types.no_such_module" in done.stdout
    assert "after: False 0.16.1" in done.stdout


def test_install_refuses_when_official_tinker_is_already_imported(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import tinker, tinkex
        try:
            tinkex.install_as_tinker()
        except RuntimeError as exc:
            print("refused:", "python -m tinkex.run" in str(exc))
        tinkex.install_as_tinker(replace=True)
        import tinker as again
        print("replaced:", again is tinkex)
        """
    )
    done = _python(tmp_path, "-c", code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "refused: True" in done.stdout
    assert "replaced: True" in done.stdout


def test_runner_usage_and_module_mode(tmp_path: Path) -> None:
    assert _python(tmp_path, "-m", "tinkex.run").returncode == 2
    (tmp_path / "probe_mod.py").write_text(
        "import sys, tinker\nprint('mod', tinker.__name__, sys.argv[1:])\n"
    )
    done = _python(tmp_path, "-m", "tinkex.run", "-m", "probe_mod", "a")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mod tinkex ['a']" in done.stdout
