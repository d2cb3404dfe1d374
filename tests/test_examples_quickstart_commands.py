"""The commands the quickstart prints at the end run as printed (issue 19)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_printed_commands_run_as_printed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TINKER_", "TINKEX_"))}
    env.update(
        TINKEX_DATA_DIR=str(tmp_path / "data"),
        COLUMNS="400",  # rich wraps at the terminal width: keep each command on one line
        OMP_NUM_THREADS="1",
    )
    quickstart = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--steps", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert quickstart.returncode == 0, quickstart.stderr
    lines = quickstart.stdout.splitlines()
    after = lines[next(i for i, line in enumerate(lines) if "Next, try:" in line) + 1 :]
    commands = [line.strip() for line in after if line.strip().startswith("tinkex ")]
    assert len(commands) == 2, quickstart.stdout
    assert any(" sample " in c for c in commands)
    tinkex = Path(sys.executable).parent / "tinkex"
    for command in commands:
        argv = shlex.split(command)
        done = subprocess.run(
            [str(tinkex), *argv[1:]], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert done.stdout.strip(), command
        if " sample " in command:
            assert done.stdout.startswith("Sample 1 (stop: "), done.stdout
