"""An official tinker release that cannot live in the bench environment, in its own venv.

tinker 0.38.0 (the protobuf generation) and 0.16.1 (JSON, installed in the ``bench`` hatch
env) cannot be installed side by side, so the 0.38 side runs ``bench/official_worker.py``
in a venv built and cached by the compatibility harness (``tests/compat/compat_harness.py``:
``tmp/compat-venvs/tinker-<version>``, or ``$TINKEX_COMPAT_PYTHON_0_38_0``). The worker is
driven round by round over stdin/stdout, so its rounds alternate with the in-process
clients' like any other side.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["OfficialWorker", "official_python", "run_official_script"]

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "official_worker.py"


def _harness() -> Any:
    if "compat_harness" in sys.modules:
        return sys.modules["compat_harness"]
    spec = importlib.util.spec_from_file_location(
        "compat_harness", ROOT / "tests" / "compat" / "compat_harness.py"
    )
    assert spec is not None
    assert spec.loader is not None
    harness = importlib.util.module_from_spec(spec)
    sys.modules["compat_harness"] = harness  # its dataclasses look their module up there
    spec.loader.exec_module(harness)
    return harness


def official_python(version: str) -> Path:
    """The python of a venv holding ``tinker==version`` (the compat harness builds it once)."""
    return Path(_harness().official_python(version))


def run_official_script(version: str, script: str, *args: str, timeout: float = 600) -> Any:
    """Run ``bench/<script>`` with the python of ``tinker==version``'s venv (``PYTHONPATH`` at
    the repo root, for ``bench._data``); returns the JSON of its last stdout line."""
    harness = _harness()
    python = Path(harness.official_python(version))
    env = harness.clean_env(PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [str(python), str(WORKER.parent / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"tinker {version} {script} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class OfficialWorker:
    """``official_worker.py`` under another tinker release, against ``base_url``."""

    def __init__(self, version: str, base_url: str, api_key: str, model: str) -> None:
        self.version = version
        harness = _harness()
        python = Path(harness.official_python(version))
        self._proc = subprocess.Popen(
            [str(python), str(WORKER), base_url, api_key, model],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=harness.clean_env(),
        )
        ready = self._read()
        self.reported_version = str(ready.get("version"))

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            err = self._proc.stderr.read() if self._proc.stderr is not None else ""
            raise RuntimeError(f"tinker {self.version} worker exited:\n{err[-3000:]}")
        out: dict[str, Any] = json.loads(line)
        return out

    def round(self, n: int) -> dict[str, float]:
        """Run one round of ``n`` of each call; returns wall seconds per kind."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"round {n}\n")
        self._proc.stdin.flush()
        return {k: float(v) for k, v in self._read().items()}

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write("quit\n")
                self._proc.stdin.close()
                self._proc.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait(timeout=10)
