"""Cheap (torch-free) descriptions of base models, for request validation and capabilities.

A base model name is a built-in name (``tinkex/tiny-llama-1m``...) or a local directory
holding a Hugging Face ``config.json`` (+ safetensors). :func:`describe_base_model` answers
from the built-in table or from ``config.json`` alone, without loading weights.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tinkex_server._builtin import (
    BUILTIN_MODELS,
    builtin_model,
    builtin_tokenizer_dir,
    is_builtin_model,
)

__all__ = ["BaseModelDesc", "describe_base_model", "tokenizer_id_for"]

_ARCHS = {
    "LlamaForCausalLM": "llama",
    "Llama3ForCausalLM": "llama",
    "Qwen3ForCausalLM": "qwen3",
}


@dataclass(frozen=True)
class BaseModelDesc:
    """What the server needs to know about a base model before loading it."""

    name: str
    arch: str
    vocab_size: int
    context_length: int
    tokenizer_id: str | None
    builtin: bool


def describe_base_model(name: str) -> BaseModelDesc | None:
    """Describe a built-in model or a local model directory; ``None`` if it is neither
    (or its ``config.json`` is unreadable)."""
    if not isinstance(name, str) or not name:
        return None
    if is_builtin_model(name):
        spec = builtin_model(name)
        return BaseModelDesc(
            name=name,
            arch=spec.architecture,
            vocab_size=spec.vocab_size,
            context_length=spec.max_position_embeddings,
            tokenizer_id=name,
            builtin=True,
        )
    path = Path(name).expanduser()
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        return None
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(cfg, dict):
        return None
    archs = cfg.get("architectures") or []
    arch = _ARCHS.get(str(archs[0])) if isinstance(archs, list) and archs else None
    arch = arch or str(cfg.get("model_type") or "unknown")
    vocab = cfg.get("vocab_size")
    ctx = cfg.get("max_position_embeddings", 2048)
    has_tok = (path / "tokenizer.json").is_file()
    return BaseModelDesc(
        name=name,
        arch=arch,
        vocab_size=vocab if isinstance(vocab, int) and vocab > 0 else 0,
        context_length=ctx if isinstance(ctx, int) and ctx > 0 else 2048,
        tokenizer_id=name if has_tok and ":" not in name else None,
        builtin=False,
    )


def builtin_descs() -> list[BaseModelDesc]:
    """Descriptions of every built-in model, smallest first."""
    out = []
    for name in BUILTIN_MODELS:
        desc = describe_base_model(name)
        assert desc is not None
        out.append(desc)
    return out


def _export_builtin_tokenizer(name: str, data_dir: Path) -> Path:
    """``<data_dir>/tokenizers/<name with '/' as '--'>``: the bundled tokenizer files
    (written once, atomically)."""
    dest = data_dir / "tokenizers" / name.replace("/", "--")
    if (dest / "tokenizer.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=dest.parent))
    try:
        for item in builtin_tokenizer_dir().iterdir():
            if item.is_file():
                shutil.copyfile(item, staging / item.name)
        try:
            os.replace(staging, dest)
        except OSError:  # another request exported it first
            if not (dest / "tokenizer.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def tokenizer_id_for(desc: BaseModelDesc, data_dir: Path) -> str | None:
    """The ``tokenizer_id`` ``get_info`` hands out: an absolute directory path that
    ``AutoTokenizer.from_pretrained`` loads offline on this machine. Built-in models: their
    tokenizer exported into the data directory; local model directories: their own path
    (when they hold ``tokenizer.json``)."""
    if desc.builtin:
        return str(_export_builtin_tokenizer(desc.name, data_dir).resolve())
    if desc.tokenizer_id is None:
        return None
    return str(Path(desc.tokenizer_id).expanduser().resolve())
