"""Reference checks against transformers and PEFT: tiny random models written by
transformers itself, in both config layouts, and helpers that compute the reference numbers.

The real-model suite (``test_server_hf_slow.py``, SmolLM2-135M) is collected only when
``TINKEX_SLOW=1`` is set (see docs/tinkex-server.md); it is never skipped silently.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from tinkex_server._builtin import builtin_tokenizer_dir
from tinkex_server._engine import Datum, Engine

collect_ignore = [] if os.environ.get("TINKEX_SLOW") == "1" else ["test_server_hf_slow.py"]

TOKENS = [5, 17, 3, 42, 8, 23, 61, 2, 9, 33, 14, 50, 7, 28, 19, 40, 11, 36]

#: name -> (transformers class name, config kwargs). All have rope_theta != 10000, so a
#: reader that misses the transformers-5 layout computes visibly wrong numbers.
TINY: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("llama", {"rope_parameters": {"rope_type": "default", "rope_theta": 500.0}}),
    "llama-llama3": (
        "llama",
        {
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 5000.0,
                "factor": 4.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8,
            }
        },
    ),
    "llama-linear": (
        "llama",
        {"rope_parameters": {"rope_type": "linear", "rope_theta": 800.0, "factor": 2.0}},
    ),
    "llama-bias-tied": (
        "llama",
        {
            "rope_parameters": {"rope_type": "default", "rope_theta": 300.0},
            "attention_bias": True,
            "mlp_bias": True,
            "tie_word_embeddings": True,
        },
    ),
    "qwen3": (
        "qwen3",
        {
            "rope_parameters": {"rope_type": "default", "rope_theta": 2000.0},
            "head_dim": 16,
            "attention_bias": True,
            "tie_word_embeddings": True,
        },
    ),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@pytest.fixture(autouse=True)
def _torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build_tiny(name: str, directory: Path, *, seed: int = 0) -> Path:
    """Write a tiny random model with transformers' own ``save_pretrained`` (the
    transformers-5 layout: ``rope_parameters``) plus the built-in tokenizer files."""
    import transformers

    family, extra = TINY[name]
    common: dict[str, Any] = {
        "vocab_size": 1024,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-5,
        "initializer_range": 0.15,
        "eos_token_id": 2,
        "bos_token_id": 1,
    }
    common.update(extra)
    torch.manual_seed(seed)
    if family == "llama":
        model: Any = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))
    else:
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for pname, param in model.named_parameters():
            if "norm" in pname:
                param.copy_(1 + 0.2 * torch.randn(param.shape, generator=gen))
            elif pname.endswith(".bias"):
                param.copy_(0.2 * torch.randn(param.shape, generator=gen))
    model.save_pretrained(directory)
    for fname in TOKENIZER_FILES:
        shutil.copyfile(builtin_tokenizer_dir() / fname, directory / fname)
    return directory


def to_old_layout(src: Path, dst: Path) -> Path:
    """A copy of ``src`` whose config.json has ``rope_theta``/``rope_scaling`` at the top
    level (transformers < 5) instead of ``rope_parameters``."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    params = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = params.pop("rope_theta")
    cfg["rope_scaling"] = params if params.get("rope_type") != "default" else None
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return dst


def hf_model(directory: Path | str) -> Any:
    """The transformers model of a directory, float32, eval mode."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
    return model.eval()


def reference_logprobs(model: Any, tokens: Sequence[int]) -> torch.Tensor:
    """Logprob of ``tokens[i + 1]`` given ``tokens[: i + 1]`` under a torch causal LM."""
    with torch.no_grad():
        logits = model(torch.tensor([list(tokens)])).logits[0].double()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    return logp.gather(-1, torch.tensor(tokens[1:])[:, None])[:, 0]


def sft_datum(tokens: Sequence[int]) -> Datum:
    return Datum(
        tokens=list(tokens[:-1]),
        loss_fn_inputs={"target_tokens": list(tokens[1:]), "weights": [1.0] * (len(tokens) - 1)},
    )


def engine_logprobs(engine: Engine, model_id: str, tokens: Sequence[int]) -> torch.Tensor:
    """Per-token logprobs of ``tokens`` from ``Engine.forward`` (target = next token)."""
    out = engine.forward(model_id, [sft_datum(tokens)])
    return torch.tensor(out.loss_fn_outputs[0]["logprobs"].data, dtype=torch.float64)


def peft_grads(peft_model: Any) -> dict[str, torch.Tensor]:
    """LoRA gradients of a PEFT model under tinkex/PEFT file names (no adapter name)."""
    return {
        name.replace(".default", ""): p.grad.detach().clone()
        for name, p in peft_model.named_parameters()
        if "lora_" in name and p.grad is not None
    }


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """``(name, layout) -> directory`` for every tiny model, layouts ``new`` and ``old``."""
    root = tmp_path_factory.mktemp("tiny-hf")
    out: dict[tuple[str, str], Path] = {}
    for i, name in enumerate(TINY):
        new = build_tiny(name, root / f"{name}-new", seed=i)
        out[(name, "new")] = new
        out[(name, "old")] = to_old_layout(new, root / f"{name}-old")
    return out


class Helpers:
    """The helpers above, for test modules (conftest modules are not importable)."""

    TOKENS = TOKENS
    TINY = TINY
    build_tiny = staticmethod(build_tiny)
    to_old_layout = staticmethod(to_old_layout)
    hf_model = staticmethod(hf_model)
    reference_logprobs = staticmethod(reference_logprobs)
    sft_datum = staticmethod(sft_datum)
    engine_logprobs = staticmethod(engine_logprobs)
    peft_grads = staticmethod(peft_grads)


@pytest.fixture(scope="session")
def hf() -> type[Helpers]:
    return Helpers
