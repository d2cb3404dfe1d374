"""Smoke test of bench/: every benchmark runs at its tiny size and yields a finite figure.

No timing is asserted (numbers at the tiny size mean nothing); this only keeps the
benchmarks working as the packages change. The benchmarks run in a subprocess, as
``python -m bench`` does, against a real ``tinkex serve`` subprocess.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Row keys in table order: P1 and P2 have one row per wire generation, P5 one for memory
#: and one for throughput.
KEYS = [
    "p1-json",
    "p1-protobuf",
    "p2-json",
    "p2-protobuf",
    "p3-http",
    "p3-local",
    "p4",
    "p5-mem",
    "p5-speed",
    "p6-batch",
    "p6-seq",
    "p7",
    "p8",
    "p9",
]


def _run_bench(
    args: list[str], tmp_path: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "rows.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--size", "tiny", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert out.is_file(), f"no JSON written; stderr:\n{proc.stderr[-4000:]}"
    return proc, json.loads(out.read_text())


def test_bench_all_tiny_rows_are_finite(tmp_path: Path) -> None:
    # "all p7": every benchmark, the opt-in P7 included (this environment has transformers
    # and peft; at the tiny size P7 trains a small random Llama, no download).
    proc, payload = _run_bench(["all", "p7"], tmp_path)
    rows = payload["rows"]
    assert [r["key"] for r in rows] == KEYS
    for row in rows:
        assert row["error"] is None, f"{row['key']} failed: {row['error']}\n{proc.stderr[-4000:]}"
        assert row["value"] is not None, row
        assert math.isfinite(row["value"]), row
        assert row["target"] is not None, row
        assert math.isfinite(row["target"]), row
        assert row["op"] in ("<=", ">=")
        assert row["status"] in ("pass", "MISS")
        # The printed table carries the same row: key, figure, target and status.
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(row["key"].upper()))
        assert row["status"] in line
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_bench_runs_one_benchmark_alone(tmp_path: Path) -> None:
    proc, payload = _run_bench(["p2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert [r["key"] for r in payload["rows"]] == ["p2-json", "p2-protobuf"]
    for row in payload["rows"]:
        assert math.isfinite(row["value"])
        assert row["value"] > 0
        assert "orjson" in row["detail"]
        assert "MB/s" in row["detail"]
        assert "from numpy" in row["detail"]
    table = [ln for ln in proc.stdout.splitlines() if ln.startswith("P")]
    assert len(table) == 2
    assert "≥ 6.00×" in table[0]
    assert "tinker 0.38.0" in table[1]
    assert "≥ 4.00×" in table[1]


def test_bench_rejects_unknown_benchmark() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "p99"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown benchmark" in proc.stderr
    assert "p1" in proc.stderr
