"""Every command against the real in-process local server (``--base-url local://``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import tinkex_cli._cmd_checkpoint
import tinkex_cli._cmd_run
from tinkex_cli import ExitCode

BASE_MODEL = "tinkex/tiny-llama-100k"  # the model of the ``world`` fixture
Tinkex = World = Any  # fixtures from conftest.py (not importable in importlib mode)

CHECKPOINT_KEYS = {
    "checkpoint_id",
    "checkpoint_type",
    "time",
    "tinker_path",
    "size_bytes",
    "public",
    "expires_at",
    "training_run_id",
    "user_metadata",  # tinker 0.38: what save_state(user_metadata=) attached (None here)
}


# -- run list / info ------------------------------------------------------------------------


def test_run_list_table(tinkex: Tinkex, world: World) -> None:
    result = tinkex("run", "list")
    assert result.exit_code == 0, result.output
    assert f"Training runs ({len(world.runs)} of {len(world.runs)})" in result.stdout
    for run in world.runs:
        assert run in result.stdout
    assert BASE_MODEL in result.stdout
    assert "Yes (rank 4)" in result.stdout
    assert "Active" in result.stdout
    assert result.stderr == ""


def test_run_list_json(tinkex: Tinkex, world: World) -> None:
    doc = tinkex.json("run", "list")
    assert set(doc) == {"runs", "total", "shown", "offset", "limit"}
    assert doc["total"] == doc["shown"] == len(world.runs)
    assert doc["limit"] == 20
    assert {r["training_run_id"] for r in doc["runs"]} == set(world.runs)
    first = next(r for r in doc["runs"] if r["training_run_id"] == world.runs[0])
    assert first["base_model"] == BASE_MODEL
    assert first["lora_rank"] == 4
    assert first["is_lora"] is True
    assert first["last_checkpoint"]["tinker_path"] == world.step2
    assert first["last_sampler_checkpoint"]["tinker_path"] == world.final
    assert "user_metadata" in first  # stable keys: None fields are kept as null


@pytest.mark.parametrize("page_size", [1, 2, 100])
def test_run_list_pagination(
    tinkex: Tinkex, world: World, page_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tinkex_cli._cmd_run, "RUN_PAGE_SIZE", page_size)
    every = [r["training_run_id"] for r in tinkex.json("run", "list", "--limit", "0")["runs"]]
    assert sorted(every) == sorted(world.runs)

    one = tinkex.json("run", "list", "--limit", "1")
    assert (one["shown"], one["total"]) == (1, 3)
    assert [r["training_run_id"] for r in one["runs"]] == every[:1]

    rest = tinkex.json("run", "list", "--offset", "1", "--limit", "0")
    assert [r["training_run_id"] for r in rest["runs"]] == every[1:]

    # the global --limit applies, and the command's own --limit overrides it
    assert tinkex.json("--limit", "2", "run", "list")["shown"] == 2
    assert tinkex.json("--limit", "2", "run", "list", "--limit", "0")["shown"] == 3

    table = tinkex("run", "list", "--limit", "1")
    assert "Training runs (1 of 3)" in table.stdout
    assert "2 more not shown; use --limit 0" in table.stdout


def test_run_list_offset_past_the_end(tinkex: Tinkex) -> None:
    doc = tinkex.json("run", "list", "--offset", "10")
    assert (doc["runs"], doc["shown"]) == ([], 0)
    assert "No training runs found." in tinkex("run", "list", "--offset", "10").stdout


def test_run_info(tinkex: Tinkex, world: World) -> None:
    doc = tinkex.json("run", "info", world.runs[0])
    assert doc["training_run_id"] == world.runs[0]
    assert doc["base_model"] == BASE_MODEL
    assert doc["last_sampler_checkpoint"]["tinker_path"] == world.final
    # any tinker:// path of the run works too
    assert tinkex.json("run", "info", world.final) == doc

    table = tinkex("run", "info", world.runs[0])
    assert table.exit_code == 0
    assert f"Training run {world.runs[0]}" in table.stdout
    assert "Last sampler checkpoint" in table.stdout
    assert world.final in table.stdout


def test_run_info_unknown_is_not_found(tinkex: Tinkex) -> None:
    result = tinkex("run", "info", "no-such-run")
    assert result.exit_code == ExitCode.NOT_FOUND
    assert result.stdout == ""
    assert result.stderr.startswith("Error: not found")
    assert len(result.stderr.splitlines()) == 1


# -- checkpoint list / info -------------------------------------------------------------------


def test_checkpoint_list_table(tinkex: Tinkex, world: World) -> None:
    result = tinkex("checkpoint", "list", "--limit", "0")
    assert result.exit_code == 0, result.output
    total = world.all_checkpoints
    assert f"Checkpoints ({total} of {total})" in result.stdout
    for path in (world.step1, world.step2, world.final):
        assert path in result.stdout  # never wrapped or cut
    assert "weights/step-1" in result.stdout
    assert "sampler_weights/final" in result.stdout
    assert "Never" in result.stdout
    assert "KB" in result.stdout


def test_checkpoint_list_json(tinkex: Tinkex, world: World) -> None:
    doc = tinkex.json("checkpoint", "list", "--limit", "0")
    assert set(doc) == {"checkpoints", "run_id", "total", "shown", "offset", "limit"}
    assert doc["total"] == doc["shown"] == world.all_checkpoints
    assert doc["run_id"] is None
    assert doc["limit"] == 0
    for ckpt in doc["checkpoints"]:
        assert set(ckpt) == CHECKPOINT_KEYS
    by_path = {c["tinker_path"]: c for c in doc["checkpoints"]}
    assert by_path[world.step1]["checkpoint_type"] == "training"
    assert by_path[world.final]["checkpoint_type"] == "sampler"
    assert by_path[world.final]["training_run_id"] == world.runs[0]
    assert by_path[world.final]["size_bytes"] > 0


def test_checkpoint_list_of_one_run(tinkex: Tinkex, world: World) -> None:
    doc = tinkex.json("checkpoint", "list", "--run-id", world.runs[0])
    assert doc["run_id"] == world.runs[0]
    assert {c["tinker_path"] for c in doc["checkpoints"]} == {
        world.step1,
        world.step2,
        world.final,
    }
    limited = tinkex.json("checkpoint", "list", "--run-id", world.runs[0], "--limit", "2")
    assert (limited["shown"], limited["total"]) == (2, 3)
    table = tinkex("checkpoint", "list", "--run-id", world.runs[0], "--limit", "2")
    assert f"Checkpoints of run {world.runs[0]} (2 of 3)" in table.stdout
    assert "1 more not shown" in table.stdout


@pytest.mark.parametrize("page_size", [1, 2, 1000])
def test_checkpoint_list_pagination(
    tinkex: Tinkex, world: World, page_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tinkex_cli._cmd_checkpoint, "CHECKPOINT_PAGE_SIZE", page_size)
    total = world.all_checkpoints
    every = [
        c["tinker_path"] for c in tinkex.json("checkpoint", "list", "--limit", "0")["checkpoints"]
    ]
    assert len(every) == len(set(every)) == total
    for limit in (1, 3, total + 5):
        doc = tinkex.json("checkpoint", "list", "--limit", str(limit))
        assert [c["tinker_path"] for c in doc["checkpoints"]] == every[:limit]
        assert doc["total"] == total
    doc = tinkex.json("checkpoint", "list", "--offset", "2", "--limit", "2")
    assert [c["tinker_path"] for c in doc["checkpoints"]] == every[2:4]


def test_checkpoint_info(tinkex: Tinkex, world: World) -> None:
    doc = tinkex.json("checkpoint", "info", world.step1)
    assert set(doc) >= CHECKPOINT_KEYS | {"base_model", "is_lora", "lora_rank"}
    assert doc["tinker_path"] == world.step1
    assert doc["checkpoint_id"] == "weights/step-1"
    assert doc["base_model"] == BASE_MODEL
    assert doc["lora_rank"] == 4

    table = tinkex("checkpoint", "info", world.final)
    assert table.exit_code == 0
    for text in ("sampler_weights/final", world.runs[0], BASE_MODEL, "Yes (rank 4)", "Never"):
        assert text in table.stdout


def test_checkpoint_info_unknown_is_not_found(tinkex: Tinkex, world: World) -> None:
    missing = f"tinker://{world.runs[0]}/weights/nope"
    result = tinkex("-f", "json", "checkpoint", "info", missing)
    assert result.exit_code == ExitCode.NOT_FOUND
    assert result.stdout == ""
    assert missing in result.stderr
    result = tinkex("checkpoint", "info", "tinker://no-such-run/weights/x")
    assert result.exit_code == ExitCode.NOT_FOUND


# -- publish / unpublish / set-ttl ------------------------------------------------------------


def _checkpoint(tinkex: Tinkex, world: World, path: str) -> dict[str, object]:
    doc = tinkex.json("checkpoint", "list", "--run-id", world.runs[0])
    return next(c for c in doc["checkpoints"] if c["tinker_path"] == path)


def test_publish_and_unpublish(tinkex: Tinkex, world: World) -> None:
    result = tinkex("checkpoint", "publish", world.step2)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Published {world.step2}\n"
    assert _checkpoint(tinkex, world, world.step2)["public"] is True
    assert "Yes" in tinkex("checkpoint", "info", world.step2).stdout

    doc = tinkex.json("checkpoint", "unpublish", world.step2)
    assert doc == {"action": "unpublish", "path": world.step2, "public": False}
    assert _checkpoint(tinkex, world, world.step2)["public"] is False


def test_publish_unknown_is_not_found(tinkex: Tinkex, world: World) -> None:
    result = tinkex("checkpoint", "publish", f"tinker://{world.runs[0]}/weights/ghost")
    assert result.exit_code == ExitCode.NOT_FOUND


def test_set_ttl_and_remove(tinkex: Tinkex, world: World) -> None:
    result = tinkex("checkpoint", "set-ttl", world.step2, "--ttl", "7200")
    assert result.exit_code == 0, result.output
    assert "expires in 7200 seconds" in result.stdout
    assert _checkpoint(tinkex, world, world.step2)["expires_at"] is not None
    listing = tinkex("checkpoint", "list", "--run-id", world.runs[0]).stdout
    assert "in 1 hour" in listing or "in 2 hours" in listing

    doc = tinkex.json("checkpoint", "set-ttl", world.step2, "--remove")
    assert doc == {"action": "set_ttl", "path": world.step2, "ttl_seconds": None, "remove": True}
    assert _checkpoint(tinkex, world, world.step2)["expires_at"] is None


# -- delete ---------------------------------------------------------------------------------


def test_delete_asks_and_can_be_cancelled(tinkex: Tinkex, scratch: Any) -> None:
    (path,) = scratch("keep-me")
    result = tinkex("checkpoint", "delete", path, input="n\n")
    assert result.exit_code == 0
    assert "About to delete 1 checkpoint" in result.stderr
    assert "Proceed?" in result.stderr
    assert result.stdout == "Cancelled; nothing was deleted.\n"
    assert path in [
        c["tinker_path"] for c in tinkex.json("checkpoint", "list", "--limit", "0")["checkpoints"]
    ]

    doc = tinkex.json("checkpoint", "delete", path, input="\n")  # default is no
    assert doc["cancelled"] is True
    assert doc["deleted"] == []

    result = tinkex("checkpoint", "delete", path, input="y\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Deleted {path}\n"
    paths = [
        c["tinker_path"] for c in tinkex.json("checkpoint", "list", "--limit", "0")["checkpoints"]
    ]
    assert path not in paths


def test_delete_several_with_yes_and_a_failure(tinkex: Tinkex, scratch: Any) -> None:
    a, b, c = scratch("del-a", "del-b", "del-c")
    ghost = a.replace("del-a", "ghost")
    result = tinkex("-f", "json", "checkpoint", "delete", "--yes", a, ghost, b, a)
    assert result.exit_code == ExitCode.NOT_FOUND
    doc = json.loads(result.stdout)
    assert doc["paths"] == [a, ghost, b]  # duplicates removed, order kept
    assert doc["deleted"] == [a, b]
    assert [f["path"] for f in doc["failed"]] == [ghost]
    assert doc["failed"][0]["exit_code"] == ExitCode.NOT_FOUND
    assert doc["cancelled"] is False
    assert "Deleting 2/3" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == (
        "Error: 1 of 3 checkpoints could not be deleted"
    )
    remaining = [x["tinker_path"] for x in tinkex.json("checkpoint", "list")["checkpoints"]]
    assert remaining == [c]


def test_delete_validates_every_path_first(tinkex: Tinkex, scratch: Any) -> None:
    (path,) = scratch("survivor")
    result = tinkex("checkpoint", "delete", "--yes", path, "tinker://bad")
    assert result.exit_code == ExitCode.USAGE
    paths = {
        c["tinker_path"] for c in tinkex.json("checkpoint", "list", "--limit", "0")["checkpoints"]
    }
    assert path in paths


# -- download -------------------------------------------------------------------------------


def test_download_table_and_json(
    tinkex: Tinkex, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tinkex("checkpoint", "download", world.final, "-o", str(tmp_path / "plain"))
    assert plain.exit_code == 0, plain.output
    assert plain.stderr == ""  # stderr is not a terminal: no progress bar
    # As if stderr were a terminal: the bar is drawn there, never on stdout.
    monkeypatch.setattr(tinkex_cli._cmd_checkpoint, "progress_wanted", lambda disabled: True)
    result = tinkex("checkpoint", "download", world.final, "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    (dest,) = [p for p in tmp_path.iterdir() if p.name != "plain"]
    assert dest.name == world.final.removeprefix("tinker://").replace("/", "_")
    assert {p.name for p in dest.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
        "checkpoint_complete",
    }
    assert json.loads((dest / "adapter_config.json").read_text())["r"] == 4
    assert result.stdout == f"Downloaded {world.final} to {dest}\n"
    assert "Downloading" in result.stderr  # the progress bar is on stderr
    as_json = tinkex.json("checkpoint", "download", world.final, "-o", str(tmp_path), "--force")
    assert as_json["destination"] == str(dest)  # stdout held only the JSON document

    # an existing destination needs --force (usage error, nothing touched)
    again = tinkex("checkpoint", "download", world.final, "-o", str(tmp_path))
    assert again.exit_code == ExitCode.USAGE
    assert "--force" in again.stderr

    doc = tinkex.json(
        "checkpoint", "download", world.step1, "-o", str(tmp_path), "--force", "--no-progress"
    )
    assert doc["path"] == world.step1
    assert Path(doc["destination"]).is_dir()
    assert doc["size_bytes"] > 0
    assert "adapter_model.safetensors" in doc["files"]
    forced = tinkex.json("checkpoint", "download", world.final, "-o", str(tmp_path), "--force")
    assert forced["destination"] == str(dest)


def test_download_unknown_is_not_found(tinkex: Tinkex, world: World, tmp_path: Path) -> None:
    result = tinkex(
        "checkpoint", "download", f"tinker://{world.runs[0]}/weights/ghost", "-o", str(tmp_path)
    )
    assert result.exit_code == ExitCode.NOT_FOUND
    assert list(tmp_path.iterdir()) == []


# -- sample ---------------------------------------------------------------------------------


def test_sample_base_model_text_prompt(tinkex: Tinkex) -> None:
    args = ["sample", "--base-model", BASE_MODEL, "-p", "hello world", "--max-tokens", "5"]
    doc = tinkex.json(*args, "-n", "2", "--seed", "7")
    assert doc["base_model"] == BASE_MODEL
    assert doc["model_path"] is None
    assert doc["prompt_tokens"]
    assert len(doc["samples"]) == 2
    for i, s in enumerate(doc["samples"]):
        assert s["index"] == i
        assert 1 <= len(s["tokens"]) <= 5
        assert len(s["logprobs"]) == len(s["tokens"])
        assert isinstance(s["text"], str)
        assert s["stop_reason"] in ("length", "stop")
    assert doc["sampling_params"]["max_tokens"] == 5
    # same seed, same samples
    assert tinkex.json(*args, "-n", "2", "--seed", "7")["samples"] == doc["samples"]

    table = tinkex(*args, "--seed", "7", "--show-tokens", "--show-logprobs")
    assert table.exit_code == 0, table.output
    assert table.stdout.startswith("Sample 1 (stop: ")
    assert f"tokens: {json.dumps(doc['samples'][0]['tokens'])}" in table.stdout
    assert "logprobs: [" in table.stdout
    plain = tinkex(*args, "--seed", "7")
    assert "tokens:" not in plain.stdout
    assert "logprobs:" not in plain.stdout


def test_sample_from_checkpoint_with_token_ids(
    tinkex: Tinkex, world: World, tmp_path: Path
) -> None:
    doc = tinkex.json(
        "sample",
        "--model-path",
        world.final,
        "--prompt-tokens",
        "1,40,41",
        "--max-tokens",
        "4",
        "--temperature",
        "0",
        "--prompt-logprobs",
    )
    assert doc["model_path"] == world.final
    assert doc["prompt_tokens"] == [1, 40, 41]
    assert len(doc["samples"]) == 1
    assert len(doc["prompt_logprobs"]) == 3
    # the trained adapter continues the training sequence 40, 41 -> 42, 43 greedily
    prompt = tmp_path / "prompt.json"
    prompt.write_text(json.dumps({"tokens": [1, 40, 41]}))
    again = tinkex.json(
        "sample",
        "--model-path",
        world.final,
        "--prompt-file",
        str(prompt),
        "--max-tokens",
        "4",
        "--temperature",
        "0",
    )
    assert again["samples"][0]["tokens"] == doc["samples"][0]["tokens"]


def test_sample_prompt_as_argument(tinkex: Tinkex) -> None:
    base = ["sample", "--base-model", BASE_MODEL, "--max-tokens", "4", "--seed", "3"]
    positional = tinkex.json(*base, "hello world")
    assert positional["samples"] == tinkex.json(*base, "-p", "hello world")["samples"]
    assert positional["prompt_tokens"]
    twice = tinkex(*base, "-p", "hello", "world")
    assert twice.exit_code == ExitCode.USAGE
    assert "give the prompt once" in twice.stderr
    none = tinkex(*base)
    assert none.exit_code == ExitCode.USAGE
    assert "--prompt TEXT (or the PROMPT argument)" in none.stderr


def test_checkpoint_save_new_lora_model(tinkex: Tinkex, tmp_path: Path) -> None:
    meta = tmp_path / "ckpt.json"
    doc = tinkex.json(
        "checkpoint", "save", "--base-model", BASE_MODEL, "--rank", "2", "-o", str(meta)
    )
    assert doc["base_model"] == BASE_MODEL
    assert doc["weights_path"].startswith("tinker://")
    assert doc["weights_path"].endswith("/sampler_weights/checkpoint-tinkex-tiny-llama-100k")
    assert doc["model_id"] in doc["weights_path"]
    assert doc["saved_at"].endswith("Z")
    assert doc["response"]["path"] == doc["weights_path"]
    assert json.loads(meta.read_text()) == doc
    listed = tinkex.json("checkpoint", "list", "--run-id", doc["model_id"])
    assert [c["tinker_path"] for c in listed["checkpoints"]] == [doc["weights_path"]]
    # The saved weights sample, by the printed path.
    sampled = tinkex.json(
        "sample", "--model-path", doc["weights_path"], "--prompt-tokens", "1,2", "--max-tokens", "2"
    )
    assert len(sampled["samples"]) == 1
    table = tinkex("checkpoint", "save", "--base-model", BASE_MODEL, "--name", "mine")
    assert table.exit_code == 0, table.output
    assert table.stdout.startswith("Checkpoint saved to tinker://")
    assert table.stdout.strip().endswith("/sampler_weights/mine")


def test_checkpoint_save_from_state_and_bad_usage(tinkex: Tinkex, world: World) -> None:
    doc = tinkex.json("checkpoint", "save", "--model-path", world.step2, "--kind", "weights")
    assert doc["base_model"] == BASE_MODEL
    assert "/weights/checkpoint-tinkex-tiny-llama-100k" in doc["weights_path"]
    both = tinkex("checkpoint", "save", "--base-model", BASE_MODEL, "--model-path", world.step2)
    assert both.exit_code == ExitCode.USAGE
    assert "exactly one of --base-model" in both.stderr
    nothing = tinkex(
        "checkpoint", "save", "--base-model", BASE_MODEL,
        "--no-train-mlp", "--no-train-attn", "--no-train-unembed",
    )  # fmt: skip
    assert nothing.exit_code == ExitCode.USAGE
    assert both.stdout == nothing.stdout == ""


def test_no_progress_drawn_when_stderr_is_not_a_terminal(tinkex: Tinkex) -> None:
    result = tinkex("checkpoint", "save", "--base-model", BASE_MODEL, "--name", "quiet")
    assert result.exit_code == 0, result.output
    assert "\x1b[" not in result.stderr
    assert "Saving checkpoint" not in result.stderr


def test_sample_unknown_model_fails_cleanly(tinkex: Tinkex) -> None:
    result = tinkex("sample", "--base-model", "no/such-model", "--prompt-tokens", "1,2")
    assert result.exit_code in (ExitCode.ERROR, ExitCode.NOT_FOUND)
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
    assert "Traceback" not in result.stderr


# -- connection, authentication and secrets ---------------------------------------------------


def test_unreachable_server_is_a_connection_error(make_tinkex: Any) -> None:
    tinkex = make_tinkex(base_url="http://127.0.0.1:9")
    result = tinkex("--max-retries", "0", "--timeout", "5", "run", "list")
    assert result.exit_code == ExitCode.SERVER
    assert result.stderr.startswith("Error: cannot reach the server")
    assert len(result.stderr.splitlines()) == 1


def test_malformed_api_key_is_an_auth_error(make_tinkex: Any) -> None:
    bad = "sk-not-a-tinker-key-123456"
    result = make_tinkex(api_key=bad)("run", "list")
    assert result.exit_code == ExitCode.AUTH
    assert "tml-" in result.stderr
    assert bad not in result.stderr
    assert bad not in result.stdout


def test_api_key_from_the_environment_is_never_printed(make_tinkex: Any, world: World) -> None:
    tinkex = make_tinkex(api_key=None)
    env = {"TINKER_API_KEY": world.secret_key}
    for args in (
        ["-vv", "run", "list"],
        ["-vv", "--debug", "checkpoint", "info", f"tinker://{world.runs[0]}/weights/nope"],
        ["-vv", "-f", "json", "checkpoint", "list"],
        ["--debug", "sample", "--base-model", "no/such-model", "--prompt-tokens", "1"],
    ):
        result = tinkex(*args, env=env)  # Tinkex asserts the key is in no output
        assert result.stdout or result.stderr


def test_verbose_logs_go_to_stderr_only(tinkex: Tinkex) -> None:
    result = tinkex("-vv", "-f", "json", "run", "list")
    assert result.exit_code == 0
    json.loads(result.stdout)  # stdout is still exactly one JSON document
    assert "fetched_page" in result.stderr
    quiet = tinkex("-f", "json", "run", "list")
    assert quiet.stderr == ""
