"""Compatibility: tinker-cookbook 0.5.8 recipes on the official tinker 0.38.0 client.

``sl_loop``, ``sl_basic`` and ``rl_loop`` run 3 steps each against ``tinkex serve`` on the
built-in ``tinkex/tiny-llama-100k``, unmodified, through ``tests/compat/cookbook_run.py``:
the recipes' own ``chz`` options make the runs small, the hub datasets they load
(``HuggingFaceH4/no_robots``, ``openai/gsm8k``) are answered from ``tests/compat/data/``,
the tokenizer they load by model name is the built-in model's exported directory (registered
with the cookbook's ``register_tokenizer``) and the model's renderer is ``role_colon``.

The venv (the CPU ``torch==2.13.0`` first, then ``tinker==0.38.0
tinker-cookbook[math-rl]==0.5.8`` with torch pinned, so pip never picks another torch) is
built once and cached under ``<repo>/tmp/compat-venvs`` (or ``$TINKEX_COMPAT_VENVS``); that
takes minutes, so this module is opt-in: it is collected only with
``TINKEX_COMPAT_COOKBOOK=1`` (``tests/conftest.py``). Each test asserts the recipe exited 0
and logged metrics for steps 0, 1 and 2 in ``<log_path>/metrics.jsonl``.
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

# rl_loop imports the math grader: the math-rl extra (sympy, pylatexenc, math-verify).
REQUIREMENTS = ["tinker==0.38.0", "tinker-cookbook[math-rl]==0.5.8"]
#: This machine's CPU build of torch, installed first and pinned for everything after it.
TORCH = "torch==2.13.0"


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("recipe", ["sl_loop", "sl_basic", "rl_loop"])
def test_cookbook_recipe_three_steps(recipe: str, tmp_path: Path) -> None:
    python = harness.ensure_venv(
        "cookbook-0.5.8-tinker-0.38.0-cpu", REQUIREMENTS, first=[TORCH], pins=[TORCH]
    )
    tokenizer_dir = harness.export_tokenizer(harness.MODEL, tmp_path / "tokenizer")
    log_path = tmp_path / "run"
    with harness.serve(tmp_path) as served:
        cmd = [
            str(python),
            str(harness.COOKBOOK_RUN),
            recipe,
            *("--base-url", served.url, "--api-key", harness.API_KEY),
            *("--model", harness.MODEL, "--tokenizer-dir", str(tokenizer_dir)),
            *("--log-path", str(log_path)),
        ]
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=harness.clean_env(), timeout=1200, check=False
        )
    output = "\n".join((done.stdout + done.stderr).splitlines()[-60:])
    assert done.returncode == 0, f"{recipe} exited {done.returncode}:\n{output}"
    metrics = log_path / "metrics.jsonl"
    assert metrics.exists(), f"{recipe} wrote no metrics.jsonl:\n{output}"
    steps = {json.loads(line).get("step") for line in metrics.read_text().splitlines() if line}
    assert {0, 1, 2} <= steps, f"{recipe} logged steps {sorted(map(str, steps))}:\n{output}"
