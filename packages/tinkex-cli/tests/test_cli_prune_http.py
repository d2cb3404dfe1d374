"""Checkpoint retention over HTTP: a training client's policy and ``tinkex checkpoint
prune`` against a real ``tinkex serve`` process on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from tinkex_cli import build_cli
from tinkex_server.testing import ServeProcess

KEY = "tml-prune-http-KEY-0123456789"
BASE_MODEL = "tinkex/tiny-llama-100k"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``tinkex serve`` as a subprocess on 127.0.0.1 (port 0), requiring ``KEY``."""
    data_dir = tmp_path_factory.mktemp("prune-serve")
    with ServeProcess(data_dir, "--api-key", KEY, "--log-level", "warning") as served:
        yield served.url


def tinkex(url: str, *args: str, input: str | None = None) -> Result:
    argv = ["--base-url", url, "--api-key", KEY, "-f", "json", *args]
    result = CliRunner().invoke(build_cli(), argv, input=input, prog_name="tinkex")
    assert KEY not in result.stdout
    assert KEY not in result.stderr
    return result


def _names(url: str, run: str) -> list[str]:
    result = tinkex(url, "checkpoint", "list", "--run-id", run, "--limit", "0")
    assert result.exit_code == 0, result.output
    return sorted(c["checkpoint_id"] for c in json.loads(result.stdout)["checkpoints"])


def test_client_policy_and_cli_prune_over_http(served: str) -> None:
    from tinkex_clients import RetentionPolicy, ServiceClient

    with ServiceClient(base_url=served, api_key=KEY) as service:
        other = service.create_lora_training_client(BASE_MODEL, rank=2, seed=1)
        other_paths = [other.save_state(n).result().path for n in ("o1", "o2", "o3")]
        tc = service.create_lora_training_client(BASE_MODEL, rank=2, seed=2)
        tc.set_retention(RetentionPolicy(keep_last=2, keep_every=3))
        published = tc.save_state("s1").result().path
        service.create_rest_client().publish_checkpoint_from_tinker_path(published).result()
        for name in ("s2", "s3", "s4", "s5", "s6", "s7"):
            tc.save_state(name).result()
        run = tc.model_id
    # s1 published, s3 and s6 every 3rd, s6 and s7 the last two
    assert _names(served, run) == ["weights/s1", "weights/s3", "weights/s6", "weights/s7"]
    assert _names(served, other.model_id) == ["weights/o1", "weights/o2", "weights/o3"]
    no = tinkex(
        served, "checkpoint", "prune", "--run", other.model_id, "--keep-last", "1", input="n\n"
    )
    assert no.exit_code == 0, no.output
    assert json.loads(no.stdout)["cancelled"] is True
    assert json.loads(no.stdout)["to_delete"] == other_paths[:2]
    assert len(_names(served, other.model_id)) == 3
    result = tinkex(
        served, "checkpoint", "prune", "--run", other.model_id, "--keep-last", "1", "--yes"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["deleted"] == other_paths[:2]
    assert _names(served, other.model_id) == ["weights/o3"]
    assert len(_names(served, run)) == 4
