"""``tinkex checkpoint import-peft`` and ``export-merged`` against the in-process local
server: a peft adapter on a tiny Llama written by transformers is imported and saved as a
checkpoint, the merged export loads in transformers with peft's numbers; an unsupported
adapter is refused naming the adapter_config.json key."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from .conftest import Tinkex, close_local_server

pytestmark = [
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

TOKENS = [5, 17, 3, 42, 8, 23, 61, 2, 9, 33, 14, 50]


def _hf(directory: Path) -> Any:
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(
        str(directory), dtype=torch.float32
    ).eval()


def _logprobs(model: Any) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([TOKENS])).logits[0].double()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    return logp.gather(-1, torch.tensor(TOKENS[1:])[:, None])[:, 0]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny base model directory and a peft adapter on it (random A and B)."""
    import peft
    import transformers

    from tinkex_server._builtin import builtin_tokenizer_dir

    root = tmp_path_factory.mktemp("cli-peft")
    config = transformers.LlamaConfig(
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        initializer_range=0.15,
        eos_token_id=2,
        bos_token_id=1,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(root / "base")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(builtin_tokenizer_dir() / name, root / "base" / name)
    torch.manual_seed(1)
    model = peft.get_peft_model(
        _hf(root / "base"),
        peft.LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "up_proj"], init_lora_weights=False
        ),
    )
    model.save_pretrained(str(root / "adapter"))
    return {"base": root / "base", "adapter": root / "adapter", "expected": _logprobs(model)}


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tinkex]:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("TINKEX_DATA_DIR", str(data_dir))
    yield Tinkex()
    close_local_server(data_dir)


def test_import_peft_then_export_merged(
    cli: Tinkex, adapter: dict[str, Any], tmp_path: Path
) -> None:
    doc = cli.json(
        "checkpoint",
        "import-peft",
        str(adapter["adapter"]),
        "--base-model",
        str(adapter["base"]),
        "--name",
        "imported",
    )
    assert doc["path"].startswith("tinker://")
    assert doc["path"].endswith("/weights/imported")
    listed = cli.json("checkpoint", "list")
    assert doc["path"] in json.dumps(listed)

    out = tmp_path / "merged"
    exported = cli.json("checkpoint", "export-merged", doc["path"], str(out))
    assert exported["destination"] == str(out)
    assert "model.safetensors" in exported["files"]
    got = _logprobs(_hf(out))
    assert torch.max(torch.abs(got - adapter["expected"])).item() <= 1e-4

    assert "tinkex_manifest.json" in exported["files"]
    again = cli("checkpoint", "export-merged", doc["path"], str(out))
    assert again.exit_code == 2
    assert "already exists" in again.output


def test_import_peft_refuses_unsupported_adapter(
    cli: Tinkex, adapter: dict[str, Any], tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(adapter["adapter"], bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    cfg["modules_to_save"] = ["lm_head"]
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    result = cli("checkpoint", "import-peft", str(bad), "--base-model", str(adapter["base"]))
    assert result.exit_code == 1
    assert "adapter_config.json:modules_to_save" in result.output
