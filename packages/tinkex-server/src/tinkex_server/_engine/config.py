"""The decoder's configuration, read from (and written to) a Hugging Face ``config.json``.

Reading is a whitelist: every ``config.json`` key that transformers' ``LlamaForCausalLM`` or
``Qwen3ForCausalLM`` acts on is either implemented here exactly as transformers (5.x)
interprets it, or refused with an :class:`EngineInputError` naming the key. Keys those
classes ignore (``use_cache``, ``initializer_range``, ``transformers_version``...) are
ignored here too. Both rope layouts are read: ``rope_theta``/``rope_scaling`` at the top
level (transformers < 5) and ``rope_parameters`` (transformers >= 5); like transformers, a
non-empty ``rope_scaling`` wins over ``rope_parameters`` and ``rope_parameters.rope_theta``
wins over a top-level ``rope_theta``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tinkex_server._engine.errors import EngineInputError

__all__ = [
    "SUPPORTED_ACTIVATIONS",
    "SUPPORTED_ARCHITECTURES",
    "SUPPORTED_ROPE_TYPES",
    "ModelConfig",
]

Family = Literal["llama", "qwen3"]

#: ``architectures`` entries of a config.json -> our architecture family.
SUPPORTED_ARCHITECTURES: dict[str, Family] = {
    "LlamaForCausalLM": "llama",
    "Qwen3ForCausalLM": "qwen3",
}
#: ``rope_type`` values implemented by :func:`tinkex_server._engine.model.rope_inv_freq`.
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
#: ``hidden_act`` values (both are SiLU in transformers).
SUPPORTED_ACTIVATIONS = ("silu", "swish")

# transformers' class defaults for keys a config.json may leave out.
_DEFAULTS: dict[Family, dict[str, Any]] = {
    "llama": {"max_position_embeddings": 2048, "head_dim": None, "num_key_value_heads": None},
    "qwen3": {"max_position_embeddings": 32768, "head_dim": 128, "num_key_value_heads": 32},
}
_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def _refuse(
    key: str, problem: str, fix: str = "use a model this engine supports"
) -> EngineInputError:
    return EngineInputError(f"config.json:{key}", problem, fix)


def _int(cfg: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = cfg.get(key, default)
    if value is None and key not in cfg:
        raise _refuse(key, "is missing", "fix the model's config.json")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _refuse(
            key, f"must be a positive integer, got {value!r}", "fix the model's config.json"
        )
    return value


def _number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _refuse(key, f"must be a finite number, got {value!r}", "fix the model's config.json")
    return float(value)


def _token_id(cfg: Mapping[str, Any], key: str) -> int | None:
    value = cfg.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _token_ids(value: object) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, list | tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return tuple(int(v) for v in value)
    raise _refuse("eos_token_id", f"must be an int or a list of ints, got {value!r}")


def _family(cfg: Mapping[str, Any]) -> Family:
    archs = cfg.get("architectures")
    model_type = cfg.get("model_type")
    families: set[Family] = set()
    if archs is not None:
        if not isinstance(archs, list) or not archs:
            raise _refuse("architectures", f"must be a non-empty list, got {archs!r}")
        for arch in archs:
            family = SUPPORTED_ARCHITECTURES.get(str(arch))
            if family is None:
                raise _refuse(
                    "architectures",
                    f"unsupported architecture {arch!r} (model_type {model_type!r})",
                    f"use one of {', '.join(SUPPORTED_ARCHITECTURES)}",
                )
            families.add(family)
    if model_type is not None:
        if model_type not in ("llama", "qwen3"):
            raise _refuse(
                "model_type",
                f"unsupported architecture: model_type {model_type!r}",
                "use a model whose model_type is 'llama' or 'qwen3'",
            )
        families.add(model_type)
    if not families:
        raise _refuse("architectures", "neither architectures nor model_type is given")
    if len(families) > 1:
        raise _refuse(
            "model_type",
            f"architectures {archs!r} and model_type {model_type!r} disagree",
            "fix the model's config.json",
        )
    return families.pop()


def _check_attention(cfg: Mapping[str, Any], family: Family, layers: int) -> None:
    """Refuse every attention variant other than full causal attention."""
    if cfg.get("quantization_config") is not None:
        raise _refuse(
            "quantization_config",
            "quantized weights are not supported",
            "dequantize the model (save it in float32/bfloat16 without quantization_config)",
        )
    act = cfg.get("hidden_act", "silu")
    if act not in SUPPORTED_ACTIVATIONS:
        raise _refuse("hidden_act", f"unsupported activation {act!r}", "only silu works")
    dropout = cfg.get("attention_dropout", 0.0)
    if dropout not in (None, 0, 0.0):
        raise _refuse("attention_dropout", f"must be 0, got {dropout!r}", "set it to 0.0")
    layer_types = cfg.get("layer_types")
    if layer_types is not None and (
        not isinstance(layer_types, list) or any(t != "full_attention" for t in layer_types)
    ):
        raise _refuse(
            "layer_types",
            f"only full_attention layers are supported, got {layer_types!r}",
            "use a model with full attention in every layer",
        )
    if family == "llama":
        if cfg.get("sliding_window") is not None:
            raise _refuse("sliding_window", "sliding-window attention is not supported")
        if cfg.get("use_sliding_window"):
            raise _refuse("use_sliding_window", "sliding-window attention is not supported")
        return
    # Qwen3: sliding layers are those at index >= max_window_layers when enabled.
    if cfg.get("use_sliding_window") and layer_types is None:
        window_layers = cfg.get("max_window_layers", 28)
        if cfg.get("sliding_window", 4096) is not None and (
            not isinstance(window_layers, int) or window_layers < layers
        ):
            raise _refuse(
                "use_sliding_window",
                "sliding-window attention is not supported",
                "use a model with full attention (use_sliding_window false)",
            )
    if cfg.get("mlp_bias"):
        raise _refuse("mlp_bias", "Qwen3 has no MLP biases", "set mlp_bias to false")


def _rope(cfg: Mapping[str, Any], max_positions: int) -> tuple[float, dict[str, Any] | None]:
    """``(rope_theta, rope_scaling)`` from either layout (transformers' precedence)."""
    scaling = cfg.get("rope_scaling")
    key = "rope_scaling" if scaling else "rope_parameters"
    params = scaling or cfg.get("rope_parameters") or {}
    if not isinstance(params, Mapping):
        raise _refuse(key, f"must be an object or null, got {params!r}")
    if any(isinstance(v, Mapping) for v in params.values()):
        raise _refuse(key, "per-layer-type rope parameters are not supported")
    theta = _number(params.get("rope_theta", cfg.get("rope_theta", 10000.0)), f"{key}.rope_theta")
    partial = params.get("partial_rotary_factor", cfg.get("partial_rotary_factor"))
    if partial is not None and partial != 1:
        raise _refuse(
            "partial_rotary_factor", f"partial rotary embeddings are not supported ({partial!r})"
        )
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise _refuse(
            f"{key}.rope_type",
            f"unsupported rope_type {rope_type!r}",
            f"use a model whose rope_type is one of {', '.join(SUPPORTED_ROPE_TYPES)}",
        )
    if rope_type == "default":
        return theta, None
    out: dict[str, Any] = {"rope_type": rope_type}
    values = dict(params)
    if rope_type == "llama3":
        original = cfg.get("original_max_position_embeddings")
        if original is not None:
            values["original_max_position_embeddings"] = original
        values.setdefault("original_max_position_embeddings", max_positions)
    for name in _LLAMA3_KEYS if rope_type == "llama3" else ("factor",):
        if name not in values:
            raise _refuse(f"{key}.{name}", f"is required for rope_type {rope_type!r}")
        out[name] = _number(values[name], f"{key}.{name}")
    if out["factor"] <= 0:
        raise _refuse(f"{key}.factor", f"must be positive, got {out['factor']}")
    if rope_type == "llama3" and out["high_freq_factor"] <= out["low_freq_factor"]:
        raise _refuse(f"{key}.high_freq_factor", "must be greater than low_freq_factor")
    return theta, out


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and hyper-parameters of a Llama/Qwen3-style decoder.

    ``architecture`` ``"qwen3"`` adds RMSNorm on each query/key head (``q_norm``/``k_norm``).
    ``rope_scaling`` is ``None`` (plain rope) or a normalised dict: ``{"rope_type":
    "linear", "factor"}`` or ``{"rope_type": "llama3", "factor", "low_freq_factor",
    "high_freq_factor", "original_max_position_embeddings"}``. ``raw`` keeps the original
    config.json so it can be written back unchanged.
    """

    architecture: Family
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
        """Parse a Hugging Face ``config.json`` dict; anything not implemented raises an
        :class:`EngineInputError` naming the key (see the module docstring)."""
        family = _family(cfg)
        defaults = _DEFAULTS[family]
        hidden = _int(cfg, "hidden_size")
        heads = _int(cfg, "num_attention_heads")
        layers = _int(cfg, "num_hidden_layers")
        _check_attention(cfg, family, layers)
        if "num_key_value_heads" in cfg and cfg["num_key_value_heads"] is None:
            kv_heads = heads
        else:
            kv_heads = _int(cfg, "num_key_value_heads", defaults["num_key_value_heads"] or heads)
        if heads % kv_heads:
            raise _refuse(
                "num_key_value_heads", f"{kv_heads} does not divide num_attention_heads={heads}"
            )
        if family == "llama" and hidden % heads:
            raise _refuse("hidden_size", f"{hidden} is not a multiple of num_attention_heads")
        head_default = defaults["head_dim"] or hidden // heads
        head_dim = head_default
        if cfg.get("head_dim") is not None:
            head_dim = _int(cfg, "head_dim")
        if head_dim % 2:
            raise _refuse("head_dim", f"must be even, got {head_dim}")
        max_positions = _int(cfg, "max_position_embeddings", defaults["max_position_embeddings"])
        theta, scaling = _rope(cfg, max_positions)
        return cls(
            architecture=family,
            vocab_size=_int(cfg, "vocab_size"),
            hidden_size=hidden,
            intermediate_size=_int(cfg, "intermediate_size"),
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            rms_norm_eps=_number(cfg.get("rms_norm_eps", 1e-6), "rms_norm_eps"),
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=max_positions,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            attention_bias=bool(cfg.get("attention_bias", False)),
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            bos_token_id=_token_id(cfg, "bos_token_id"),
            eos_token_ids=_token_ids(cfg.get("eos_token_id")),
            pad_token_id=_token_id(cfg, "pad_token_id"),
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
