"""Compatibility: the official ``tinker`` 0.38 client's new keywords against ``tinkex serve``.

``tests/compat/keywords_038.py`` runs with the 0.38 venv of the compat harness
(``$TINKEX_COMPAT_PYTHON_0_38_0`` or one built under ``tmp/compat-venvs``) and checks each
keyword's effect as that client sees it: checkpoint ``user_metadata`` listed back,
``overwrite`` refused then allowed, Dimuon refused naming ``optimizer_config.type``,
``create_training_client_from_state(optimizer=)``, an inflight sampler save, and the
sampling extras decoded from protobuf results (``topk_sample_logprobs``,
``prompt_logprobs_last_n``, ``target_prompt_logprobs``, ``prompt_alt_tokens_k``), with
``record_stability_info`` refused naming the field.
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

SCRIPT = Path(__file__).resolve().parent / "compat" / "keywords_038.py"


@pytest.mark.timeout(1800)
def test_official_0_38_keywords_have_their_effect(tmp_path: Path) -> None:
    python = harness.official_python("0.38.0")
    with harness.serve(tmp_path) as served:
        done = subprocess.run(
            [str(python), str(SCRIPT), "--base-url", served.url, "--api-key", harness.API_KEY],
            capture_output=True,
            text=True,
            env=harness.clean_env(),
            timeout=900,
            check=False,
        )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    report = json.loads(lines[-1])
    failed = [s for s in report["steps"] if not s["ok"]]
    assert not failed, failed
    assert [s["step"] for s in report["steps"]] == [
        "user_metadata",
        "overwrite",
        "optimizer",
        "inflight sampler",
        "sampling extras",
        "record_stability_info refused",
    ]
    assert done.returncode == 0
