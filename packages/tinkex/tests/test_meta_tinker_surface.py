"""tinkex as ``tinker`` against the committed snapshot of tinker 0.38.0's public surface:
the differences are exactly the ones docs/tinker-compat.md lists (with their reasons)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

COMPAT = Path(__file__).parent / "compat"
SNAPSHOT = COMPAT / "tinker-0.38.0-surface.json"
DOC = Path(__file__).resolve().parents[3] / "docs" / "tinker-compat.md"


def _differences(tmp_path: Path) -> list[str]:
    env = dict(os.environ, TINKEX_DATA_DIR=str(tmp_path))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tinkex.run",
            str(COMPAT / "tinker_surface.py"),
            "--compare",
            str(SNAPSHOT),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    diffs: list[str] = json.loads(done.stdout)
    return diffs


def _documented() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Remaining differences", 1)[1]
    return re.findall(r"^- `(.+)`$", section, flags=re.MULTILINE)


def test_snapshot_is_tinker_0_38_0() -> None:
    snap = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert snap["version"] == "0.38.0"
    for path in (
        "tinker.types.tensor_data.TensorData",
        "tinker.types.datum.Datum",
        "tinker.lib.public_interfaces.APIFuture",
        "tinker.lib.public_interfaces.rest_client.RestClient",
        "tinker.types.AuditLogEntry",
    ):
        assert path in snap["paths"]


def test_differences_are_exactly_the_documented_ones(tmp_path: Path) -> None:
    found = _differences(tmp_path)
    documented = _documented()
    assert len(documented) == len(set(documented)), "a difference is listed twice"
    new = sorted(set(found) - set(documented))
    gone = sorted(set(documented) - set(found))
    assert not new, f"differences not in docs/tinker-compat.md: {new}"
    assert not gone, f"docs/tinker-compat.md lists differences that are gone: {gone}"


def test_the_names_the_issue_asks_for_match(tmp_path: Path) -> None:
    found = _differences(tmp_path)
    prefixes = (
        "tinker.ServiceClient(display_name)",
        "tinker.ServiceClient(base_url)",
        "tinker.ServiceClient(api_key)",
        "tinker.ServiceClient(default_headers_overrides)",
        "tinker.lib.retry_handler.RetryConfig",
        "tinker.SamplingClient.create:",
        "tinker.SamplingClient.get_telemetry",
        "tinker.SamplingClient.on_queue_state_change",
        "tinker.types.AuditLogEntry",
        "tinker.types.AuditLogResponse",
        "tinker.types.ExternalWeightsUrlsResponse",
        "tinker.lib.public_interfaces.rest_client",
        "tinker.lib.public_interfaces.api_future.APIFuture",
        "tinker.types.tensor_data",
        "tinker.types.datum",
    )
    for prefix in prefixes:
        assert not [d for d in found if d.startswith(prefix)], prefix
