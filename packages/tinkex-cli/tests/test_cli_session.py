"""Replays the CLI session of the package README (and of the repository README, once it
carries the same ``cli-session`` block) against a real `tinkex serve` process.

The `tinkex ...` lines are read from the README's ``cli-session`` block and run as written
(``$CKPT`` and the two local directories substituted). ``tinkex serve`` runs as a real
subprocess (``python -m tinkex_cli serve``, so the command comes from the tinkex-server
plugin); the other commands run in-process with click's CliRunner. ``hatch run quickstart``
is stood in for by a few training steps through ``tinkex_clients.ServiceClient``.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tinkex_cli import ExitCode, build_cli
from tinkex_server.testing import ServeProcess

PACKAGE_README = Path(__file__).resolve().parents[1] / "README.md"
ROOT_README = Path(__file__).resolve().parents[3] / "README.md"
MARKER = "<!-- cli-session -->"
KEY = "tml-session-test-KEY-0123456789"


def readmes() -> list[Path]:
    """The package README, and the repository README when it carries the session too."""
    found = [PACKAGE_README]
    if ROOT_README.is_file() and MARKER in ROOT_README.read_text(encoding="utf-8"):
        found.append(ROOT_README)
    return found


def session_lines(readme: Path = PACKAGE_README) -> list[str]:
    text = readme.read_text(encoding="utf-8")
    block = text.split("<!-- cli-session -->", 1)[1].split("<!-- /cli-session -->", 1)[0]
    lines = []
    for raw in block.splitlines():
        if raw.startswith("$ "):
            command = raw[2:].split("  #", 1)[0].strip()
            lines.append(command)
    return lines


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`tinkex serve` as in the README (plus --port 0 and a required API key)."""
    (serve_line,) = [line for line in session_lines() if line.startswith("tinkex serve")]
    args = shlex.split(serve_line)[1:]
    data_dir = tmp_path / "tinkex-data"
    args = [str(data_dir) if a == "./tinkex-data" else a for a in args]
    assert args[0] == "serve", serve_line
    flags = [*args[1:], "--api-key", KEY]
    with ServeProcess(data_dir, *flags, module="tinkex_cli", wait_healthy=False) as served:
        yield served.url, data_dir


def quickstart_stand_in(url: str) -> str:
    """A few training steps and a sampler checkpoint (what the quickstart does)."""
    from tinkex_clients import ServiceClient
    from tinkex_types import AdamParams, Datum, ModelInput

    with ServiceClient(base_url=url, api_key=KEY) as service:
        training = service.create_lora_training_client("tinkex/tiny-llama-100k", rank=4, seed=0)
        tokens = [1, 50, 51, 52, 53, 2]
        datum = Datum(
            model_input=ModelInput.from_ints(tokens[:-1]),
            loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * 5},
        )
        for _ in range(3):
            training.forward_backward([datum], "cross_entropy").result()
            training.optim_step(AdamParams(learning_rate=1e-2)).result()
        training.save_state("step-3").result()
        return str(training.save_weights_for_sampler("final").result().path)


@pytest.mark.parametrize("readme", readmes(), ids=lambda p: p.parent.name)
def test_readme_session_replays(served: tuple[str, Path], tmp_path: Path, readme: Path) -> None:
    url, _data_dir = served
    env: dict[str, str] = {"TINKER_API_KEY": KEY}
    out_dir = tmp_path / "checkpoints"
    ckpt = ""
    outputs: dict[str, Any] = {}
    ran = []
    for line in session_lines(readme):
        if line.startswith("tinkex serve"):
            continue  # the fixture runs it (as written in the package README)
        if line.startswith("export TINKER_BASE_URL="):
            env["TINKER_BASE_URL"] = url
            continue
        if line == "hatch run quickstart":
            ckpt = quickstart_stand_in(url)
            continue
        if line.startswith("CKPT="):
            assert ckpt, "the session must train before choosing a checkpoint"
            continue
        assert line.startswith("tinkex "), line
        argv = [
            ckpt if a == "$CKPT" else str(out_dir) if a == "./checkpoints" else a
            for a in shlex.split(line)[1:]
        ]
        result = CliRunner().invoke(build_cli(), argv, env=env, prog_name="tinkex")
        assert result.exit_code == 0, (line, result.output)
        assert KEY not in result.stdout
        assert KEY not in result.stderr
        outputs[" ".join(argv[:2])] = result.stdout
        ran.append(line)

    assert len(ran) >= 6
    run_id = ckpt.removeprefix("tinker://").split("/")[0]
    assert run_id in outputs["run list"]
    assert ckpt in outputs["checkpoint list"]
    assert "tinkex/tiny-llama-100k" in outputs["checkpoint info"]
    dest = out_dir / ckpt.removeprefix("tinker://").replace("/", "_")
    assert (dest / "adapter_model.safetensors").is_file()
    assert (dest / "checkpoint_complete").is_file()
    assert "Sample 1" in outputs["sample --model-path"]
    assert "Sample 2" in outputs["sample --model-path"]
    doc = json.loads(outputs["-f json"])
    paths = {c["tinker_path"] for c in doc["checkpoints"]}
    # the quickstart's two checkpoints, plus what `checkpoint save` lines of the session made
    saved = {p for p in paths if p.endswith(("/start",))}
    assert paths == {ckpt, ckpt.replace("sampler_weights/final", "weights/step-3"), *saved}
    expected_saves = sum(1 for line in ran if line.startswith("tinkex checkpoint save"))
    assert len(saved) == expected_saves

    # the served instance requires the key: a wrong one is an authentication error (exit 3)
    wrong = "tml-wrong-key-abcdefghijkl"
    result = CliRunner().invoke(
        build_cli(),
        ["run", "list"],
        env={"TINKER_BASE_URL": url, "TINKER_API_KEY": wrong},
        prog_name="tinkex",
    )
    assert result.exit_code == ExitCode.AUTH
    assert result.stderr.startswith("Error: authentication failed (HTTP 401)")
    assert wrong not in result.stderr


def test_serve_is_listed_when_tinkex_server_is_installed() -> None:
    """With every entry point loaded, tinkex-server contributes `serve`."""
    result = CliRunner().invoke(build_cli(), ["--help"], prog_name="tinkex")
    section = result.output.split("Commands:\n", 1)[1]
    assert re.search(r"^  serve\s", section, re.MULTILINE)
    serve_help = CliRunner().invoke(build_cli(), ["serve", "--help"], prog_name="tinkex")
    assert serve_help.exit_code == 0
    assert "--data-dir" in serve_help.output
