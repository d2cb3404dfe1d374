"""The decoder's configuration, read from (and written to) a Hugging Face ``config.json``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tinkex_server._engine.errors import EngineInputError

__all__ = ["SUPPORTED_ARCHITECTURES", "ModelConfig"]

#: ``architectures[0]`` of a config.json -> our architecture family.
SUPPORTED_ARCHITECTURES: dict[str, Literal["llama", "qwen3"]] = {
    "LlamaForCausalLM": "llama",
    "Llama3ForCausalLM": "llama",
    "Qwen3ForCausalLM": "qwen3",
}

_ROPE_TYPES = ("default", "linear", "llama3")


def _int(cfg: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise EngineInputError(
            f"config.json:{key}",
            f"must be a positive integer, got {value!r}",
            "fix the model's config.json",
        )
    return value


def _float(cfg: Mapping[str, Any], key: str, default: float) -> float:
    value = cfg.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EngineInputError(
            f"config.json:{key}", f"must be a number, got {value!r}", "fix the config.json"
        )
    return float(value)


def _token_ids(value: object) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, list | tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return tuple(int(v) for v in value)
    raise EngineInputError(
        "config.json:eos_token_id", f"must be an int or a list of ints, got {value!r}"
    )


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and hyper-parameters of a Llama/Qwen3-style decoder.

    ``architecture`` ``"qwen3"`` adds RMSNorm on each query/key head (``q_norm``/``k_norm``).
    ``rope_scaling`` is ``None`` or a dict with ``rope_type`` ``"linear"`` or ``"llama3"``.
    ``raw`` keeps the original config.json so it can be written back unchanged.
    """

    architecture: Literal["llama", "qwen3"]
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: Mapping[str, Any] | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any]) -> ModelConfig:
        """Parse a Hugging Face ``config.json`` dict; unsupported models raise clearly."""
        archs = cfg.get("architectures") or []
        arch_name = archs[0] if isinstance(archs, list) and archs else None
        family = SUPPORTED_ARCHITECTURES.get(str(arch_name)) if arch_name else None
        if family is None:
            model_type = cfg.get("model_type")
            family = {"llama": "llama", "qwen3": "qwen3"}.get(str(model_type))  # type: ignore[assignment]
        if family is None:
            raise EngineInputError(
                "config.json:architectures",
                f"unsupported architecture {arch_name!r} (model_type {cfg.get('model_type')!r})",
                f"use one of {', '.join(SUPPORTED_ARCHITECTURES)}",
            )
        act = cfg.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise EngineInputError(
                "config.json:hidden_act", f"unsupported activation {act!r}", "only silu works"
            )
        if cfg.get("use_sliding_window") is True:
            raise EngineInputError(
                "config.json:use_sliding_window",
                "sliding-window attention is not supported",
                "use a model with full attention",
            )
        hidden = _int(cfg, "hidden_size")
        heads = _int(cfg, "num_attention_heads")
        kv_heads = _int(cfg, "num_key_value_heads", heads)
        if heads % kv_heads:
            raise EngineInputError(
                "config.json:num_key_value_heads",
                f"{kv_heads} does not divide num_attention_heads={heads}",
            )
        head_dim_raw = cfg.get("head_dim")
        head_dim = _int(cfg, "head_dim") if head_dim_raw is not None else hidden // heads
        if head_dim % 2:
            raise EngineInputError("config.json:head_dim", f"must be even, got {head_dim}")
        rope_scaling = cfg.get("rope_scaling")
        if rope_scaling is not None:
            if not isinstance(rope_scaling, Mapping):
                raise EngineInputError("config.json:rope_scaling", "must be an object or null")
            rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
            if rope_type not in _ROPE_TYPES:
                raise EngineInputError(
                    "config.json:rope_scaling",
                    f"unsupported rope_type {rope_type!r}",
                    f"supported: {', '.join(_ROPE_TYPES)}",
                )
        bos = cfg.get("bos_token_id")
        pad = cfg.get("pad_token_id")
        return cls(
            architecture=family,
            vocab_size=_int(cfg, "vocab_size"),
            hidden_size=hidden,
            intermediate_size=_int(cfg, "intermediate_size"),
            num_hidden_layers=_int(cfg, "num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            rms_norm_eps=_float(cfg, "rms_norm_eps", 1e-6),
            rope_theta=_float(cfg, "rope_theta", 10000.0),
            rope_scaling=dict(rope_scaling) if rope_scaling is not None else None,
            max_position_embeddings=_int(cfg, "max_position_embeddings", 2048),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            attention_bias=bool(cfg.get("attention_bias", False)),
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            bos_token_id=bos if isinstance(bos, int) and not isinstance(bos, bool) else None,
            eos_token_ids=_token_ids(cfg.get("eos_token_id")),
            pad_token_id=pad if isinstance(pad, int) and not isinstance(pad, bool) else None,
            raw=dict(cfg),
        )

    @property
    def qk_norm(self) -> bool:
        """Whether queries and keys get a per-head RMSNorm (Qwen3)."""
        return self.architecture == "qwen3"

    def to_hf(self) -> dict[str, Any]:
        """A ``config.json`` dict: the original one when known, else a fresh one."""
        if self.raw:
            out = dict(self.raw)
            out["torch_dtype"] = "float32"
            return out
        arch = "LlamaForCausalLM" if self.architecture == "llama" else "Qwen3ForCausalLM"
        eos: int | list[int] | None
        eos = list(self.eos_token_ids) if len(self.eos_token_ids) != 1 else self.eos_token_ids[0]
        return {
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
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": dict(self.rope_scaling) if self.rope_scaling else None,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "mlp_bias": self.mlp_bias,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos or None,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": "float32",
        }
