"""An official tinker release that cannot live in the bench environment, in its own venv.

tinker 0.38.0 (the protobuf generation) and 0.16.1 (JSON, installed in the ``bench`` hatch
env) cannot be installed side by side, so the 0.38 side runs ``bench/p1_worker.py`` (P1) or
``bench/official_encode.py`` (P2) in a venv built and cached by the compatibility harness (``tests/compat/compat_harness.py``:
``tmp/compat-venvs/tinker-<version>``, or ``$TINKEX_COMPAT_PYTHON_0_38_0``). The worker is
driven round by round over stdin/stdout, so its rounds alternate with the in-process
clients' like any other side.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["OfficialWorker", "official_python", "run_official_script"]

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "p1_worker.py"


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
    """``p1_worker.py KIND`` in its own process against ``base_url``: with ``version`` set,
    the official ``tinker==version`` of its venv (``KIND`` ``tinker``); without, this
    python (the bench env: tinkex, tinker 0.16.1 or the raw floor)."""

    def __init__(
        self, kind: str, base_url: str, api_key: str, model: str, version: str | None = None
    ) -> None:
        self.version = version or kind
        harness = _harness()
        python = str(harness.official_python(version)) if version else sys.executable
        # A file, not a pipe: a pipe could fill up and block the worker. Closed in close().
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [python, str(WORKER), kind, base_url, api_key, model],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=harness.clean_env(PYTHONPATH=str(ROOT)),
        )
        ready = self._read()
        self.name = str(ready.get("name"))

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(timeout=30)
            self._stderr.seek(0)
            err = self._stderr.read()
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
        self._stderr.close()
