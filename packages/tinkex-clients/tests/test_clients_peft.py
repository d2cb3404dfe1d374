"""PEFT adapters in and merged models out through the public client API, on a real local
server (``local://``) and a tiny Llama written by transformers: an adapter made by peft
gives peft's logprobs (training forward and sampler compute_logprobs), trains, survives a
server restart; unsupported adapters are refused naming the key; a merged export loads in
transformers and equals adapter-on-base."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tinkex_clients import ServiceClient, TrainingClient
from tinkex_types import (
    AdamParams,
    APIStatusError,
    Datum,
    ModelInput,
    TinkexValidationError,
)

from .conftest import FAST_POLLS

pytestmark = [
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

TOKENS = [5, 17, 3, 42, 8, 23, 61, 2, 9, 33, 14, 50, 7, 28, 19, 40, 11, 36]


def _build_base(directory: Path) -> Path:
    import transformers

    from tinkex_server._builtin import builtin_tokenizer_dir

    config = transformers.LlamaConfig(
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        initializer_range=0.15,
        eos_token_id=2,
        bos_token_id=1,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(builtin_tokenizer_dir() / name, directory / name)
    return directory


def _hf(directory: Path) -> Any:
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(
        str(directory), dtype=torch.float32
    ).eval()


def _reference(model: Any, tokens: list[int]) -> list[float]:
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0].double()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    return logp.gather(-1, torch.tensor(tokens[1:])[:, None])[:, 0].tolist()


@pytest.fixture(scope="module")
def peft_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny base model, a peft adapter on it (random A and B), and peft's logprobs."""
    import peft

    root = tmp_path_factory.mktemp("peft")
    base = _build_base(root / "base")
    torch.manual_seed(3)
    model = peft.get_peft_model(
        _hf(base),
        peft.LoraConfig(
            r=4,
            lora_alpha=12,
            target_modules=["q_proj", "v_proj", "down_proj"],
            init_lora_weights=False,
            lora_dropout=0.0,
        ),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.mul_(0.5)
    model.save_pretrained(str(root / "adapter"))
    cfg_file = root / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = str(base)
    cfg_file.write_text(json.dumps(cfg))
    return {
        "base": base,
        "adapter": root / "adapter",
        "expected": _reference(model.eval(), TOKENS),
        "base_logprobs": _reference(_hf(base), TOKENS),
    }


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from tinkex_server._config import ServerConfig
    from tinkex_server._local import get_local_server

    directory = tmp_path_factory.mktemp("tinkex-peft-data")
    server = get_local_server(config=ServerConfig(data_dir=directory))
    try:
        yield directory
    finally:
        server.close()


@pytest.fixture
def service(
    server_dir: Path, monkeypatch: pytest.MonkeyPatch, local_hooks: Any
) -> Iterator[ServiceClient]:
    monkeypatch.setenv("TINKEX_DATA_DIR", str(server_dir))
    client = ServiceClient(base_url="local://", hooks=local_hooks, poll_policy=FAST_POLLS)
    try:
        yield client
    finally:
        client.close()


def _datum(tokens: list[int]) -> Datum:
    return Datum(
        model_input=ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
    )


def _forward_logprobs(tc: TrainingClient) -> list[float]:
    out = tc.forward([_datum(TOKENS)], "cross_entropy").result(120)
    return [float(x) for x in out.loss_fn_outputs[0]["logprobs"].data]


def test_imported_adapter_gives_peft_logprobs_and_trains(
    service: ServiceClient, peft_dirs: dict[str, Any]
) -> None:
    tc = service.create_training_client_from_peft(peft_dirs["adapter"])
    got = _forward_logprobs(tc)
    expected = peft_dirs["expected"]
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) <= 1e-4
    # the adapter really changes the model (the check above is not the base's numbers)
    assert max(abs(a - b) for a, b in zip(got, peft_dirs["base_logprobs"], strict=True)) > 1e-3

    batch = [_datum(TOKENS)]
    losses = []
    for _ in range(4):
        out = tc.forward_backward(batch, "cross_entropy").result(120)
        losses.append(float(out.metrics["loss:sum"]))
        tc.optim_step(AdamParams(learning_rate=1e-2)).result(120)
    assert losses[-1] < losses[0]


def test_sampling_client_from_peft_gives_peft_logprobs(
    service: ServiceClient, peft_dirs: dict[str, Any]
) -> None:
    sc = service.create_sampling_client_from_peft(
        peft_dirs["adapter"], base_model=str(peft_dirs["base"])
    )
    got = sc.compute_logprobs(ModelInput.from_ints(TOKENS)).result(120)
    assert got[0] is None
    rest = [float(x) for x in got[1:] if x is not None]
    assert max(abs(a - b) for a, b in zip(rest, peft_dirs["expected"], strict=True)) <= 1e-4


def test_unsupported_adapter_is_refused_naming_the_key(
    service: ServiceClient, peft_dirs: dict[str, Any], tmp_path: Path
) -> None:
    bad = tmp_path / "dora"
    shutil.copytree(peft_dirs["adapter"], bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    cfg["use_dora"] = True
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(APIStatusError) as info:
        service.create_training_client_from_peft(bad)
    assert info.value.status_code == 400
    assert "adapter_config.json:use_dora" in str(info.value)

    (bad / "adapter_model.safetensors").unlink()
    with pytest.raises(TinkexValidationError, match=r"adapter_model\.safetensors"):
        service.create_training_client_from_peft(bad)
    with pytest.raises(TinkexValidationError, match=r"adapter_config\.json"):
        service.create_training_client_from_peft(tmp_path)


def test_adapter_not_matching_the_base_is_refused_naming_the_key(
    service: ServiceClient, peft_dirs: dict[str, Any], tmp_path: Path
) -> None:
    bad = tmp_path / "other-targets"
    shutil.copytree(peft_dirs["adapter"], bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    cfg["target_modules"] = ["c_attn"]  # a GPT-2 module name: not in a Llama
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(Exception, match="target_modules") as info:
        service.create_training_client_from_peft(bad)
    assert "Traceback" not in str(info.value)


def test_an_adapter_over_the_server_body_limit_is_refused_naming_the_file(
    peft_dirs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_hooks: Any
) -> None:
    from tinkex_server._config import ServerConfig
    from tinkex_server._local import get_local_server

    monkeypatch.setenv("TINKEX_DATA_DIR", str(tmp_path))
    server = get_local_server(config=ServerConfig(data_dir=tmp_path, max_body_bytes=4096))
    try:
        with ServiceClient(base_url="local://", hooks=local_hooks, poll_policy=FAST_POLLS) as svc:
            with pytest.raises(TinkexValidationError, match="max-body-mib") as info:
                svc.create_training_client_from_peft(peft_dirs["adapter"])
            assert info.value.field == "adapter_model.safetensors"
    finally:
        server.close()


def test_merged_export_loads_in_transformers_and_equals_adapter_on_base(
    service: ServiceClient, peft_dirs: dict[str, Any], tmp_path: Path
) -> None:
    tc = service.create_training_client_from_peft(peft_dirs["adapter"], seed=1)
    path = tc.save_state("imported").result(120).path
    out = service.create_rest_client().export_merged(path, tmp_path / "merged").result(300)
    assert (out / "config.json").is_file()
    merged = _reference(_hf(out), TOKENS)
    expected = peft_dirs["expected"]
    assert max(abs(a - b) for a, b in zip(merged, expected, strict=True)) <= 1e-4
    sampler_path = tc.save_weights_for_sampler("imported-sampler").result(120).path
    rest = service.create_rest_client()
    from_sampler = rest.export_merged(sampler_path, tmp_path / "merged-sampler").result(300)
    merged = _reference(_hf(from_sampler), TOKENS)
    assert max(abs(a - b) for a, b in zip(merged, expected, strict=True)) <= 1e-4
    with pytest.raises(TinkexValidationError, match="out_dir"):
        service.create_rest_client().export_merged(path, out).result(60)


def test_imported_model_survives_a_restart(
    peft_dirs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_hooks: Any
) -> None:
    from tinkex_server._config import ServerConfig
    from tinkex_server._local import get_local_server

    monkeypatch.setenv("TINKEX_DATA_DIR", str(tmp_path))
    server = get_local_server(config=ServerConfig(data_dir=tmp_path))
    with ServiceClient(base_url="local://", hooks=local_hooks, poll_policy=FAST_POLLS) as svc:
        model_id = svc.create_training_client_from_peft(peft_dirs["adapter"]).model_id
        # a second imported run, trained and checkpointed: it comes back from the checkpoint
        # (its target modules and alpha come from the stored settings)
        trained = svc.create_training_client_from_peft(peft_dirs["adapter"])
        trained.forward_backward([_datum(TOKENS)], "cross_entropy").result(120)
        trained.optim_step(AdamParams(learning_rate=1e-2)).result(120)
        trained.save_state("after-step").result(120)
        before = _forward_logprobs(trained)
    server.close()
    restarted = get_local_server(config=ServerConfig(data_dir=tmp_path))
    assert restarted is not server  # a new runtime: the engine holds no adapter
    server = restarted
    try:
        with ServiceClient(base_url="local://", hooks=local_hooks, poll_policy=FAST_POLLS) as svc:
            run = svc.create_rest_client().get_training_run(model_id).result(60)
            assert run.training_run_id == model_id
            # the run's adapter comes back from its imported files at its next request
            tc = TrainingClient(svc._session, model_id=model_id, model_seq_id=0)
            got = _forward_logprobs(tc)
            # re-attach to the trained run after its 4 requests (seq_id 1..4 were answered
            # before the restart; the server would replay their results)
            again = TrainingClient(svc._session, model_id=trained.model_id, model_seq_id=1)
            again._turnstile.abandon(again._turnstile.reserve(4))
            after = _forward_logprobs(again)
    finally:
        server.close()
    expected = peft_dirs["expected"]
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) <= 1e-4
    assert max(abs(a - b) for a, b in zip(after, before, strict=True)) <= 1e-6
    assert max(abs(a - b) for a, b in zip(after, expected, strict=True)) > 1e-4
