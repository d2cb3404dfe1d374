"""tinker-cookbook 0.5.8 recipes, unmodified, on tinkex as ``tinker`` (``python -m tinkex.run``).

``sl_loop``, ``sl_basic`` and ``rl_loop`` run 3 steps each on the in-process local server
(``local://``) and against ``tinkex serve``, through
``tests/compat/cookbook_run.py`` (local datasets, the built-in model's exported tokenizer,
the ``role_colon`` renderer: see its docstring). The cookbook comes from the cached venv of
``test_compat_cookbook.py`` (``tinker-cookbook[math-rl]==0.5.8``); its site-packages are put
*after* the test environment's on ``sys.path``, and the runner makes every ``import tinker``
give tinkex, so the official package in that venv is never imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "compat"))

import compat_harness as harness

pytestmark = [pytest.mark.conformance]

REQUIREMENTS = ["tinker==0.38.0", "tinker-cookbook[math-rl]==0.5.8"]
#: This machine's CPU build of torch (never let pip pick a CUDA one).
TORCH = "torch==2.13.0"

WRAPPER = """\
import runpy
import sys

sys.path.append({site!r})
import tinker

assert tinker.__name__ == "tinkex", tinker
sys.argv = [{script!r}, *sys.argv[1:]]
runpy.run_path({script!r}, run_name="__main__")
"""


def _cookbook_site_packages() -> str:
    # The same venv as test_compat_cookbook.py: the CPU torch first, pinned for the rest.
    python = harness.ensure_venv(
        "cookbook-0.5.8-tinker-0.38.0-cpu", REQUIREMENTS, first=[TORCH], pins=[TORCH]
    )
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def _run(recipe: str, tmp_path: Path, base_url: str, api_key: str | None) -> None:
    wrapper = tmp_path / "cookbook_on_tinkex.py"
    wrapper.write_text(
        WRAPPER.format(site=_cookbook_site_packages(), script=str(harness.COOKBOOK_RUN))
    )
    tokenizer_dir = harness.export_tokenizer(harness.MODEL, tmp_path / "tokenizer")
    log_path = tmp_path / "run"
    cmd = [
        sys.executable,
        *("-m", "tinkex.run", str(wrapper), recipe, "--base-url", base_url),
        *(("--api-key", api_key) if api_key else ()),
        *("--model", harness.MODEL, "--tokenizer-dir", str(tokenizer_dir)),
        *("--log-path", str(log_path)),
    ]
    env = harness.clean_env(TINKEX_DATA_DIR=str(tmp_path / "local-data"))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200, check=False)
    output = "\n".join((done.stdout + done.stderr).splitlines()[-60:])
    assert done.returncode == 0, f"{recipe} exited {done.returncode}:\n{output}"
    metrics = log_path / "metrics.jsonl"
    assert metrics.exists(), f"{recipe} wrote no metrics.jsonl:\n{output}"
    steps = {json.loads(line).get("step") for line in metrics.read_text().splitlines() if line}
    assert {0, 1, 2} <= steps, f"{recipe} logged steps {sorted(map(str, steps))}:\n{output}"


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("recipe", ["sl_loop", "sl_basic", "rl_loop"])
def test_cookbook_recipe_on_tinkex_local(recipe: str, tmp_path: Path) -> None:
    _run(recipe, tmp_path, "local://", None)


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("recipe", ["sl_loop", "sl_basic", "rl_loop"])
def test_cookbook_recipe_on_tinkex_against_tinkex_serve(recipe: str, tmp_path: Path) -> None:
    with harness.serve(tmp_path) as served:
        _run(recipe, tmp_path, served.url, harness.API_KEY)
