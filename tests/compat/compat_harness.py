"""Shared pieces of the compatibility harness (stdlib only).

* :func:`ensure_venv` builds (once, cached by requirement set) a virtual environment with an
  official ``tinker`` release and whatever else a check needs, e.g. ``tinker-cookbook``;
* :func:`serve` runs ``tinkex serve`` from a python that has tinkex-server installed (the
  hatch test environment) on 127.0.0.1 with a fresh data directory;
* :func:`run_driver` runs ``driver.py`` with a venv's python and returns its JSON report;
* :func:`failure_lines` renders a report's failed steps for an assertion message.

Used by ``tests/test_compat_official_clients.py``, ``tests/test_compat_cookbook.py`` and
``run_all.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinkex_server.testing import ServeProcess
from tinkex_server.testing import clean_env as serve_env

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DRIVER = HERE / "driver.py"
COOKBOOK_RUN = HERE / "cookbook_run.py"
API_KEY = "tml-compat-key"
MODEL = "tinkex/tiny-llama-100k"
STARTUP_TIMEOUT_S = 90.0
VERSIONS = ("0.16.1", "0.18.2", "0.24.1", "0.25.0", "0.38.0")


def venv_root() -> Path:
    """Where built venvs are cached: ``$TINKEX_COMPAT_VENVS`` or ``<repo>/tmp/compat-venvs``
    (``/tmp/`` at the repo root is git-ignored)."""
    configured = os.environ.get("TINKEX_COMPAT_VENVS")
    return Path(configured) if configured else ROOT / "tmp" / "compat-venvs"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: nothing of the parent's venv, Tinker or HF setup."""
    drop = ("TINKER_", "TINKEX_", "HF_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CLOUDFLARE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    env.update(extra)
    return env


def ensure_venv(
    key: str,
    requirements: Sequence[str],
    *,
    first: Sequence[str] = (),
    pins: Sequence[str] = (),
) -> Path:
    """A venv ``<venv_root()>/<key>`` holding ``requirements``; returns its python.

    ``first`` is installed before the rest (e.g. the CPU ``torch==2.13.0`` of this machine's
    wheel directory) and ``pins`` constrain every install after it (``pip -c``), so pip never
    swaps in another release of a pinned package. The venv is reused when its marker file
    records the same lists; otherwise it is rebuilt. A lock file serialises concurrent
    builders. A failed install raises with pip's output tail.
    """
    root = venv_root()
    root.mkdir(parents=True, exist_ok=True)
    path = root / key
    python = path / "bin" / "python"
    marker = path / ".compat-ready"
    wanted = "\n".join([*requirements, *(f"first:{r}" for r in first), *(f"pin:{p}" for p in pins)])
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == wanted and python.exists():
            return python
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, env=clean_env())
        constraints = root / f"{key}.constraints.txt"
        constraints.write_text("".join(f"{p}\n" for p in pins))
        pip = [str(python), "-m", "pip", "install", "--progress-bar", "off"]
        steps = [list(first), list(requirements)] if first else [list(requirements)]
        for reqs in steps:
            cmd = [*pip, *(("-c", str(constraints)) if pins else ()), *reqs]
            done = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), check=False)
            if done.returncode != 0:
                tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
                raise RuntimeError(f"pip install {' '.join(reqs)} failed:\n{tail}")
        marker.write_text(wanted)
    return python


def official_python(version: str) -> Path:
    """The python of an environment holding the official ``tinker==version``:
    ``$TINKEX_COMPAT_PYTHON_<version with '_' for '.'>`` when set (an existing venv), else one
    built by :func:`ensure_venv`."""
    given = os.environ.get(f"TINKEX_COMPAT_PYTHON_{version.replace('.', '_')}")
    if given:
        return Path(given)
    return ensure_venv(f"tinker-{version}", [f"tinker=={version}"])


@dataclass
class Served:
    url: str
    data_dir: Path
    log: Path


@contextlib.contextmanager
def serve(
    workdir: Path,
    python: str | None = None,
    *,
    flags: Sequence[str] = (),
    api_key: str = API_KEY,
) -> Iterator[Served]:
    """``tinkex serve`` on 127.0.0.1 (free port, fresh data dir, ``api_key``, extra ``flags``)
    until the block ends; the data dir and log live in ``workdir``."""
    data_dir = workdir / "server-data"
    log = workdir / "server.log"
    argv = ("--api-key", api_key, "--torch-threads", "1", "--log-level", "warning", *flags)
    env = serve_env(("TINKER_", "TINKEX_", "HF_"))
    with ServeProcess(
        data_dir,
        *argv,
        python=python,
        env=env,
        log=log,
        startup_timeout=STARTUP_TIMEOUT_S,
        module="tinkex_cli",
    ) as served:
        yield Served(url=served.url, data_dir=data_dir, log=log)


def run_driver(
    python: str | Path, url: str, *, model: str = MODEL, timeout: float = 60.0, wall: float = 900.0
) -> dict[str, Any]:
    """Run ``driver.py`` with ``python`` against ``url``; its JSON report plus ``returncode``
    and ``stderr_tail``. A driver that printed no report yields a report with one failed
    ``driver`` step carrying the output."""
    cmd = [str(python), str(DRIVER), "--base-url", url, "--api-key", API_KEY, "--model", model]
    cmd += ["--timeout", str(timeout)]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=clean_env(), timeout=wall, check=False
        )
        stdout, stderr, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        code = -1
        stderr += f"\n[harness] driver killed after {wall} s"
    start = stdout.find("{")
    try:
        report: dict[str, Any] = json.loads(stdout[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        report = {}
    if not report:
        error = f"no report (exit {code}): {stdout[-2000:]} {stderr[-2000:]}"
        report = {
            "ok": False,
            "failed": ["driver"],
            "steps": [{"step": "driver", "ok": False, "error": error}],
        }
    report["returncode"] = code
    report["stderr_tail"] = "\n".join(stderr.splitlines()[-30:])
    return report


def failure_lines(report: dict[str, Any]) -> str:
    """One line per failed step (``step: error``), root causes before dependency failures."""
    failed = [s for s in report.get("steps", []) if not s.get("ok")]
    roots = [s for s in failed if not str(s.get("error", "")).startswith("DependencyFailed")]
    deps = [s for s in failed if s not in roots]
    lines = [f"{s['step']}: {s.get('error')}" for s in roots]
    if deps:
        lines.append(f"(+{len(deps)} steps not run: {', '.join(s['step'] for s in deps)})")
    head = f"tinker {report.get('tinker_version')}: {len(failed)} of {len(report.get('steps', []))} steps failed"
    return "\n".join([head, *lines])


def export_tokenizer(model: str, directory: Path, python: str | None = None) -> Path:
    """Write the built-in model's files (tokenizer included) with ``tinkex_server``; used by the
    cookbook check, whose recipes load a tokenizer by model name before reaching any server."""
    code = "import sys, tinkex_server; tinkex_server.export_builtin_model(sys.argv[1], sys.argv[2])"
    subprocess.run([python or sys.executable, "-c", code, model, str(directory)], check=True)
    return directory
