"""Compatibility: official ``tinker`` clients of two generations run the whole loop.

Each test starts ``tinkex serve`` on 127.0.0.1 (free port, fresh data directory, API key),
runs ``tests/compat/driver.py`` with the python of an environment holding one official client
release and asserts that every step of the driver's report passed: capabilities, LoRA
training client, ``get_tokenizer`` (offline: the server must hand out a tokenizer id the
client can load), forward, forward_backward with every loss the release knows, optim_step,
save_weights_and_get_sampling_client, sample (num_samples, seed, stop, logprobs, prompt and
top-k prompt logprobs), compute_logprobs, save_state / load_state(+optimizer),
create_training_client_from_state(+optimizer), create_sampling_client from a path, the
RestClient calls (runs, run info, checkpoints, publish / unpublish / TTL, download, delete,
sessions) and closing the client. The assertion message lists each failed step with the
exception the client raised.

* 0.16.1 is the ``tinker`` already in the hatch test environment (``sys.executable``).
* 0.38.0 gets its own venv, built once with ``pip install tinker==0.38.0`` and cached under
  ``<repo>/tmp/compat-venvs`` (or ``$TINKEX_COMPAT_VENVS``); ``$TINKEX_COMPAT_PYTHON_0_38_0``
  names an existing one instead.

A loss the server does not offer (``stable_reinforce`` for 0.38) passes when the server
refuses it with a 4xx naming it; the report lists it under ``refused``, and the test pins
exactly which losses are refused.

``tests/compat/run_all.py`` runs the same driver for every release in between.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "compat"))

import compat_harness as harness

pytestmark = [pytest.mark.conformance]


def _assert_all_ok(report: dict[str, object], version: str) -> None:
    assert report.get("tinker_version") == version, report.get("tinker_version")
    assert report.get("ok") is True, harness.failure_lines(report)
    assert report.get("returncode") == 0, report.get("stderr_tail")


@pytest.mark.timeout(900)
def test_official_client_0_16_1_whole_loop(tmp_path: Path) -> None:
    with harness.serve(tmp_path) as served:
        report = harness.run_driver(sys.executable, served.url)
    _assert_all_ok(report, "0.16.1")
    assert report.get("refused") == [], report.get("refused")


@pytest.mark.timeout(1800)
def test_official_client_0_38_0_whole_loop(tmp_path: Path) -> None:
    python = harness.official_python("0.38.0")
    with harness.serve(tmp_path) as served:
        report = harness.run_driver(python, served.url)
    _assert_all_ok(report, "0.38.0")
    assert report.get("refused") == ["stable_reinforce"], report.get("refused")
