"""Issue 17, finding 6: a checkpoint damaged on the server never loads or downloads as a
success; the failure is the server's (category ``server``) and names no absolute path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinkex_clients import ServiceClient
from tinkex_types import RequestErrorCategory, RequestFailedError, TinkexError
from tinkex_types.manifest import MANIFEST_FILE

MODEL = "tinkex/tiny-llama-100k"
KEY = "tml-integrity-key-0123456789"


def _checkpoint_dir(data_dir: Path, kind: str, name: str) -> Path:
    (found,) = [p for p in (data_dir / "checkpoints").glob(f"*/{kind}/{name}") if p.is_dir()]
    return found


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_checkpoint_fails_as_server_error(local_data_dir: Path, tmp_path: Path) -> None:
    with ServiceClient(base_url="local://", api_key=KEY) as service:
        training = service.create_lora_training_client(MODEL, rank=2, seed=0)
        state = training.save_state("s1").result(120).path
        sampler = training.save_weights_for_sampler("w1").result(120).path
        for kind, name in (("weights", "s1"), ("sampler_weights", "w1")):
            directory = _checkpoint_dir(local_data_dir, kind, name)
            assert (directory / MANIFEST_FILE).is_file()  # written at save time
            _truncate(directory / "adapter_model.safetensors")
        rest = service.create_rest_client()

        # loading the damaged training state: a failed future of category "server"
        with pytest.raises(RequestFailedError) as failed:
            training.load_state(state).result(120)
        assert failed.value.category is RequestErrorCategory.SERVER
        message = str(failed.value)
        assert "adapter_model.safetensors" in message
        assert "truncated" in message
        assert str(local_data_dir) not in message

        # sampling from the damaged sampler weights: refused the same way
        client = service.create_sampling_client(model_path=sampler)
        from tinkex_types import ModelInput, SamplingParams

        with pytest.raises(RequestFailedError) as sample_failed:
            client.sample(ModelInput.from_ints([1, 2, 3]), 1, SamplingParams(max_tokens=2)).result(
                120
            )
        assert sample_failed.value.category is RequestErrorCategory.SERVER
        assert str(local_data_dir) not in str(sample_failed.value)

        # downloading either: an error, and nothing left in the output directory
        for path in (state, sampler):
            out = tmp_path / f"out-{path.rsplit('/', 1)[-1]}"
            with pytest.raises(TinkexError) as download_failed:
                rest.download_checkpoint(path, out).result(120)
            assert str(local_data_dir) not in str(download_failed.value)
            assert not out.exists() or list(out.iterdir()) == []


def test_intact_checkpoint_round_trips(local_data_dir: Path, tmp_path: Path) -> None:
    with ServiceClient(base_url="local://", api_key=KEY) as service:
        training = service.create_lora_training_client(MODEL, rank=2, seed=0)
        state = training.save_state("ok").result(120).path
        training.load_state(state).result(120)
        dest = service.create_rest_client().download_checkpoint(state, tmp_path).result(120)
        assert (dest / MANIFEST_FILE).is_file()
        assert (dest / "adapter_model.safetensors").is_file()
