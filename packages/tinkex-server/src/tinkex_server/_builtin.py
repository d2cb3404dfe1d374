"""Built-in tiny models: names, shapes and the bundled tokenizer files (torch-free).

A built-in model is fully described by its :class:`BuiltinModel` entry: its weights are
generated deterministically from its name (see ``tinkex_server._engine.registry``), and its
tokenizer is the small BPE shipped under ``tinkex_server/data/tokenizer/`` (built once by
``scripts/build_tokenizer.py``). This module imports neither torch nor tokenizers, so the
plugin hook can answer "is this a built-in name?" cheaply.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "BUILTIN_MODELS",
    "BuiltinModel",
    "builtin_model",
    "builtin_models",
    "builtin_tokenizer_dir",
    "is_builtin_model",
]

#: Token ids fixed by the bundled tokenizer (``scripts/build_tokenizer.py``).
PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
IM_START_ID = 3
IM_END_ID = 4
VOCAB_SIZE = 1024


@dataclass(frozen=True)
class BuiltinModel:
    """One built-in model: a Hugging Face ``config.json`` in Python form.

    ``architecture`` is ``"llama"`` (``LlamaForCausalLM``) or ``"qwen3"``
    (``Qwen3ForCausalLM``, with per-head RMSNorm on queries and keys).
    """

    name: str
    architecture: Literal["llama", "qwen3"]
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    description: str
    vocab_size: int = VOCAB_SIZE
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    init_std: float = 0.02
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        """The initialisation seed: the first 8 bytes of sha256(name), as an int."""
        return int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:8], "big")

    def hf_config(self) -> dict[str, Any]:
        """The ``config.json`` of this model (Hugging Face layout)."""
        arch = "LlamaForCausalLM" if self.architecture == "llama" else "Qwen3ForCausalLM"
        config: dict[str, Any] = {
            "architectures": [arch],
            "model_type": self.architecture,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": None,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": BOS_ID,
            "eos_token_id": [EOS_ID, IM_END_ID],
            "pad_token_id": PAD_ID,
            "torch_dtype": "float32",
            "initializer_range": self.init_std,
            "use_cache": True,
        }
        if self.architecture == "llama":
            config["mlp_bias"] = False
            config["pretraining_tp"] = 1
        else:
            config["use_sliding_window"] = False
            config["sliding_window"] = None
        config.update(self.extra)
        return config


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel(
            name="tinkex/tiny-llama-100k",
            architecture="llama",
            hidden_size=48,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=12,
            description="~0.1M-param Llama (d=48, 2 layers, 4 heads / 2 KV); unit tests",
        ),
        BuiltinModel(
            name="tinkex/tiny-qwen3-100k",
            architecture="qwen3",
            hidden_size=48,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            description="~0.1M-param Qwen3 (qk-norm, head_dim 16 > d/heads); unit tests",
        ),
        BuiltinModel(
            name="tinkex/tiny-llama-1m",
            architecture="llama",
            hidden_size=128,
            intermediate_size=352,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            description="~0.9M-param Llama (d=128, 4 layers, 4 heads / 2 KV); e2e tests",
        ),
        BuiltinModel(
            name="tinkex/tiny-llama-10m",
            architecture="llama",
            hidden_size=256,
            intermediate_size=704,
            num_hidden_layers=12,
            num_attention_heads=8,
            num_key_value_heads=4,
            head_dim=32,
            tie_word_embeddings=False,
            description="~9M-param Llama with untied embeddings; benchmarks",
        ),
    )
}


def builtin_models() -> list[str]:
    """Names of the built-in models, smallest first."""
    return list(BUILTIN_MODELS)


def is_builtin_model(name: str) -> bool:
    """Whether ``name`` is a built-in model name."""
    return name in BUILTIN_MODELS


def builtin_model(name: str) -> BuiltinModel:
    """The :class:`BuiltinModel` called ``name`` (``KeyError`` naming the choices if none)."""
    try:
        return BUILTIN_MODELS[name]
    except KeyError:
        raise KeyError(
            f"unknown built-in model {name!r}; choose one of {', '.join(BUILTIN_MODELS)}"
        ) from None


def builtin_tokenizer_dir() -> Path:
    """The directory holding the bundled ``tokenizer.json`` and ``tokenizer_config.json``."""
    return Path(str(resources.files("tinkex_server") / "data" / "tokenizer"))
