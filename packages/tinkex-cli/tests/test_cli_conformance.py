"""``tinkex conformance`` against the in-process local server (``local://``): the whole
loop passes, ``--only``/``--skip`` select rows, ``-f json`` is one document, bad
selections are usage errors, and the run deletes what it created."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tinkex_cli import ExitCode, build_cli
from tinkex_cli._cmd_conformance import all_steps
from tinkex_types import LOSSES

KEY = "tml-conformance-local-KEY-0123456789"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh data directory for ``local://`` (its in-process server closed afterwards)."""
    path = tmp_path / "conformance-data"
    monkeypatch.setenv("TINKEX_DATA_DIR", str(path))
    yield path
    from tinkex_server._local import get_local_server

    get_local_server(path).close()


def conformance(*args: str) -> Result:
    argv = ["--api-key", KEY, "conformance", "local://", *args]
    result = CliRunner().invoke(build_cli(), argv, prog_name="tinkex")
    assert KEY not in result.stdout
    assert KEY not in result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"unexpected exception {result.exception!r}\n{result.output}")
    return result


def as_doc(result: Result) -> Any:
    return json.loads(result.stdout)


def statuses(doc: Any) -> dict[str, str]:
    return {row["step"]: row["status"] for row in doc["rows"]}


def test_whole_loop_passes_and_cleans_up(data_dir: Path) -> None:
    result = conformance("-f", "json")
    assert result.exit_code == 0, result.output
    doc = as_doc(result)
    rows = statuses(doc)
    assert doc["passed"] is True
    assert set(rows.values()) == {"ok"}, rows
    expected = {s.name for s in all_steps()} | {"cleanup"}
    assert set(rows) == expected
    assert {f"forward_backward:{name}" for name in LOSSES} <= set(rows)
    assert doc["counts"] == {"ok": len(expected), "failed": 0, "not_offered": 0, "skipped": 0}
    assert doc["base_model"] == "tinkex/tiny-llama-100k"
    assert doc["cleanup"]["left"] == []
    # what it saved is gone: the server lists no checkpoint any more
    from tinkex_clients import ServiceClient

    with ServiceClient(base_url="local://") as service:
        listing = service.create_rest_client().list_user_checkpoints().result()
    assert listing.checkpoints == []


def test_table_output_names_every_row(data_dir: Path) -> None:
    result = conformance("--only", "get_server_capabilities,optim_step")
    assert result.exit_code == 0, result.output
    assert "get_server_capabilities" in result.stdout
    assert "optim_step" in result.stdout
    assert "forward_backward" not in result.stdout  # not selected
    assert "PASSED: 2 ok, 0 failed, 0 not offered, 0 skipped" in result.stdout


def test_only_selects_rows_and_runs_prerequisites_silently(data_dir: Path) -> None:
    doc = as_doc(conformance("-f", "json", "--only", "sample:stop", "--only", "rest.get_sampler"))
    # the prerequisites (session, LoRA client, sampler save, greedy sample) ran unseen;
    # the sampler checkpoint they saved was deleted
    assert statuses(doc) == {"sample:stop": "ok", "rest.get_sampler": "ok", "cleanup": "ok"}
    assert "sampler_weights/conformance-" in doc["cleanup"]["removed"][0]


def test_prefix_selects_a_group(data_dir: Path) -> None:
    doc = as_doc(conformance("-f", "json", "--only", "forward_backward"))
    assert set(statuses(doc)) == {f"forward_backward:{name}" for name in LOSSES}
    assert doc["passed"] is True


def test_skip_removes_rows_and_a_skipped_prerequisite_skips_its_dependents(
    data_dir: Path,
) -> None:
    result = conformance("-f", "json", "--skip", "rest", "--skip", "save_weights_for_sampler")
    assert result.exit_code == 0, result.output
    rows = statuses(as_doc(result))
    assert not any(name.startswith("rest.") for name in rows)
    assert "save_weights_for_sampler" not in rows
    assert rows["create_sampling_client"] == "skipped"
    assert rows["sample"] == "skipped"
    assert rows["save_weights_and_get_sampling_client"] == "ok"  # needs no saved checkpoint
    assert rows["load_state"] == "ok"
    skipped = [r for r in as_doc(result)["rows"] if r["step"] == "create_sampling_client"]
    assert skipped[0]["message"] == "needs save_weights_for_sampler"


def test_a_model_the_server_does_not_have_fails_its_rows(data_dir: Path) -> None:
    result = conformance("-f", "json", "--base-model", "no/such-model", "--only", "optim_step")
    assert result.exit_code == ExitCode.ERROR
    doc = as_doc(result)
    rows = {r["step"]: r for r in doc["rows"]}
    assert rows["create_lora_training_client"]["status"] == "failed"
    assert rows["create_lora_training_client"]["http_status"] in (400, 404, 422)
    assert "no/such-model" in rows["create_lora_training_client"]["message"]
    assert rows["optim_step"]["status"] == "skipped"
    assert doc["passed"] is False


def test_unknown_step_is_a_usage_error(data_dir: Path) -> None:
    result = conformance("--only", "sample,frobnicate")
    assert result.exit_code == ExitCode.USAGE
    assert "unknown step(s) frobnicate" in result.stderr
    assert not data_dir.exists()  # nothing was started


def test_list_steps(data_dir: Path) -> None:
    result = conformance("-f", "json", "--list-steps")
    assert result.exit_code == 0
    steps = json.loads(result.stdout)
    names = [s["step"] for s in steps]
    assert names == [s.name for s in all_steps()]
    assert names[-1] == "close"
    by_name = {s["step"]: s for s in steps}
    assert by_name["sample:stop"]["needs"] == ["sample"]
