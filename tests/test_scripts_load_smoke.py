"""Smoke test of scripts/load.py: a tiny load run against a real ``tinkex serve`` subprocess.

The script runs as users run it (a subprocess, ``python scripts/load.py``) with 8 samples,
2 trainers and 1 step; the JSON report must show no errors and carry every figure the
docs quote. No timing is asserted.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "load.py"


def _run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def test_load_script_tiny_run_reports_no_errors(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    args = ["--samples", "8", "--trainers", "2", "--steps", "1"]
    proc = _run([*args, "--json", str(out)])
    assert out.is_file(), f"no JSON report; stderr:\n{proc.stderr[-4000:]}"
    report = json.loads(out.read_text())
    errors = report["errors"]
    assert errors["count"] == 0, json.dumps(errors, indent=2)[-4000:]
    assert errors["kinds"] == {}
    assert proc.returncode == 0, proc.stderr[-4000:]

    config = report["config"]
    assert (config["samples"], config["trainers"], config["steps"]) == (8, 2, 1)
    assert config["model"] == "tinkex/tiny-llama-100k"

    samples, trainers = report["samples"], report["trainers"]
    assert samples["ok"] == 8
    assert 8 <= samples["tokens"] <= 8 * config["max_tokens"]
    assert (trainers["ok"], trainers["steps_ok"], trainers["saves_ok"]) == (2, 2, 2)
    for figure in (report["wall_s"], samples["wall_s"], samples["per_s"], trainers["wall_s"]):
        assert _finite(figure)
        assert figure > 0
    for latency in (samples["latency_ms"], trainers["step_latency_ms"]):
        assert set(latency) == {"p50", "p99", "max"}
        assert all(_finite(v) for v in latency.values())
        assert latency["p50"] <= latency["p99"] <= latency["max"]

    server = report["server"]
    assert server["alive_after"] is True
    assert server["log_error_lines"] == 0
    assert server["rss_samples"] > 0
    assert 0 < server["rss_start_mb"] <= server["rss_peak_mb"]
    assert report["http"]["statuses"].get("200", 0) > 0
    assert not any(code.startswith("5") for code in report["http"]["statuses"])

    machine = report["machine"]
    assert len(machine["load_average_before"]) == 3
    assert len(machine["load_average_after"]) == 3
    assert machine["cpus"] >= 1
    # The human-readable summary goes to stdout next to the JSON file.
    assert "errors: 0" in proc.stdout
    assert "server RSS" in proc.stdout


def test_load_script_refuses_bad_sizes() -> None:
    proc = _run(["--trainers", "-1"], timeout=60)
    assert proc.returncode == 2
    assert "--trainers must be >= 0" in proc.stderr
