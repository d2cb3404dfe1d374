"""Base models: built-in tiny models (deterministic weights) and local HF directories.

A base model name is either a built-in name (``tinkex/tiny-llama-1m``...; see
:func:`tinkex_server._builtin.builtin_models`) or a path to a directory holding a
Hugging Face ``config.json`` plus ``model.safetensors`` (or shards) of a Llama or Qwen3
model. :func:`load_base_model` returns a frozen float32 :class:`DecoderLM` with its config
and tokenizer; :func:`save_hf_model` writes any model back in the same layout.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from tinkex_server._builtin import (
    BuiltinModel,
    builtin_model,
    builtin_tokenizer_dir,
    is_builtin_model,
)
from tinkex_server._engine.config import ModelConfig
from tinkex_server._engine.errors import EngineInputError, UnknownModelError
from tinkex_server._engine.fileio import (
    atomic_directory,
    atomic_write_json,
    load_hf_state_dict,
    read_json,
    write_safetensors,
)
from tinkex_server._engine.model import DecoderLM
from tinkex_server._tokenizer import resolve_tokenizer
from tinkex_types import HFTokenizer

__all__ = [
    "BaseModel",
    "builtin_state_dict",
    "export_builtin_model",
    "load_base_model",
    "model_from_state_dict",
    "random_state_dict",
    "save_hf_model",
]


@dataclass
class BaseModel:
    """A loaded, frozen base model."""

    name: str
    config: ModelConfig
    module: DecoderLM
    tokenizer: HFTokenizer | None
    source: str  # "builtin" or the resolved directory

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """Token ids that end a generation: config ``eos_token_id`` plus the tokenizer's."""
        ids = list(self.config.eos_token_ids)
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return tuple(dict.fromkeys(ids))

    def num_parameters(self) -> int:
        """Number of base parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.module.parameters())


def _param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    skeleton = DecoderLM(config, device="meta")
    return {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}


def random_state_dict(config: ModelConfig, seed: int, std: float = 0.02) -> dict[str, Tensor]:
    """Deterministic weights: normal(0, std) matrices, unit norms, zero biases.

    Each tensor is drawn from its own generator seeded from ``(seed, name)``, so a tensor's
    values do not depend on the others.
    """
    out: dict[str, Tensor] = {}
    for name, shape in _param_shapes(config).items():
        if name.endswith("norm.weight"):
            out[name] = torch.ones(shape)
        elif name.endswith(".bias"):
            out[name] = torch.zeros(shape)
        else:
            digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
            gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)
            out[name] = torch.randn(shape, generator=gen) * std
    return out


def builtin_state_dict(spec: BuiltinModel) -> dict[str, Tensor]:
    """The weights of a built-in model (a pure function of its name and shapes)."""
    return random_state_dict(ModelConfig.from_hf(spec.hf_config()), spec.seed, spec.init_std)


def model_from_state_dict(
    config: ModelConfig, tensors: dict[str, Tensor], *, source: str
) -> DecoderLM:
    """Build a frozen :class:`DecoderLM` from Hugging Face-named tensors."""
    model = DecoderLM(config, device="meta")
    expected = model.state_dict()
    tensors = dict(tensors)
    if config.tie_word_embeddings:
        head = tensors.pop("lm_head.weight", None)
        embed = tensors.get("model.embed_tokens.weight")
        if head is not None and embed is not None and not torch.equal(head, embed):
            raise EngineInputError(
                "config.json:tie_word_embeddings",
                "is true but lm_head.weight differs from model.embed_tokens.weight",
                "set tie_word_embeddings to false if the model has its own lm_head",
            )
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise EngineInputError(
            source,
            f"weights do not match config.json (missing {missing[:4]}, unexpected {extra[:4]})",
            "check that config.json belongs to these safetensors",
        )
    for name, ref in expected.items():
        if tuple(tensors[name].shape) != tuple(ref.shape):
            raise EngineInputError(
                source,
                f"tensor {name} has shape {tuple(tensors[name].shape)}, "
                f"config.json implies {tuple(ref.shape)}",
                "check that config.json belongs to these safetensors",
            )
    model.load_state_dict(
        {k: v.to(torch.float32).contiguous() for k, v in tensors.items()}, assign=True
    )
    model.requires_grad_(False)
    model.eval()
    return model


def load_base_model(name: str) -> BaseModel:
    """Load a built-in model by name or a Hugging Face-layout directory by path."""
    if is_builtin_model(name):
        spec = builtin_model(name)
        config = ModelConfig.from_hf(spec.hf_config())
        module = model_from_state_dict(config, builtin_state_dict(spec), source="base_model")
        return BaseModel(name, config, module, resolve_tokenizer(name), "builtin")
    path = Path(name).expanduser()
    if not path.is_dir():
        raise UnknownModelError(
            "base_model",
            f"{name!r} is neither a built-in model nor a local model directory",
            "use a built-in name (tinkex_server.builtin_models()) or a directory with "
            "config.json and model.safetensors",
        )
    config = ModelConfig.from_hf(read_json(path / "config.json", field="base_model"))
    module = model_from_state_dict(config, load_hf_state_dict(path), source="base_model")
    tokenizer = resolve_tokenizer(str(path)) if (path / "tokenizer.json").is_file() else None
    return BaseModel(name, config, module, tokenizer, str(path.resolve()))


def save_hf_model(
    model: DecoderLM,
    directory: str | os.PathLike[str],
    *,
    tokenizer_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (+ tokenizer files) atomically.

    Tied models omit ``lm_head.weight``, as Hugging Face does.
    """
    state = dict(model.state_dict())
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    with atomic_directory(directory) as tmp:
        atomic_write_json(tmp / "config.json", model.config.to_hf())
        write_safetensors(tmp / "model.safetensors", state, {"format": "pt"})
        if tokenizer_dir is not None:
            for fname in (
                "tokenizer.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "chat_template.jinja",
            ):
                src = Path(tokenizer_dir) / fname
                if src.is_file():
                    shutil.copyfile(src, tmp / fname)
    return Path(directory)


def export_builtin_model(name: str, directory: str | os.PathLike[str]) -> Path:
    """Write a built-in model as a Hugging Face directory (loadable by path, by
    ``transformers`` and by other Tinker-compatible servers)."""
    base = load_base_model(name)
    return save_hf_model(base.module, directory, tokenizer_dir=builtin_tokenizer_dir())
