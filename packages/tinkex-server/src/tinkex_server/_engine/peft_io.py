"""PEFT adapters in and out: strict reading of outside ``adapter_config.json`` files, and
merged (base + LoRA) Hugging Face model directories.

:func:`read_peft_config` accepts exactly the LoRA adapters the engine computes like PEFT
does: plain LoRA (``peft_type`` ``LORA``) on any subset of q/k/v/o, gate/up/down and
``lm_head`` across all layers, scale ``lora_alpha / r``. Everything else is refused with an
:class:`EngineInputError` naming the ``adapter_config.json`` key (DoRA, rsLoRA, per-module
rank/alpha patterns, ``modules_to_save``, bias training, layer subsets, other targets,
initialisations that change the base weights...). ``lora_dropout`` is accepted and not
applied (it does not change inference; training in tinkex has no dropout).

:class:`PeftMixin` adds the engine methods: :meth:`~PeftMixin.import_peft_adapter` (a training
or sampler adapter from a PEFT directory), :meth:`~PeftMixin.export_merged` (a registered
adapter merged into its base, written as a transformers-loadable directory) and
:meth:`~PeftMixin.export_merged_checkpoint` (the same from a checkpoint directory).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tinkex_server._builtin import builtin_tokenizer_dir, is_builtin_model
from tinkex_server._engine.adapters import EngineCore, Slot
from tinkex_server._engine.errors import EngineInputError
from tinkex_server._engine.fileio import (
    atomic_directory,
    atomic_write_json,
    read_json,
    read_safetensors,
    write_safetensors,
)
from tinkex_server._engine.lora import LORA_MODULES, Adapter, LoraSpec
from tinkex_server._engine.model import DecoderLM
from tinkex_server._engine.optim import AdamW
from tinkex_server._engine.registry import BaseModel
from tinkex_server._engine.types import AdapterInfo

__all__ = [
    "MERGED_EXTRA_FILES",
    "PeftAdapterConfig",
    "PeftMixin",
    "match_target_modules",
    "merged_state_dict",
    "parse_peft_config",
    "read_peft_config",
    "write_merged_model",
]

#: Files copied next to a merged model when its base directory has them.
MERGED_EXTRA_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
)
_FIELD = "adapter_config.json"
# Keys that must be absent, null, false or empty (PEFT's own defaults), with the reason.
_MUST_BE_UNSET = {
    "use_dora": "DoRA adapters are not supported",
    "use_rslora": "rsLoRA scaling (alpha / sqrt(r)) is not supported",
    "modules_to_save": "fully trained extra modules (modules_to_save) are not supported",
    "rank_pattern": "per-module ranks are not supported",
    "alpha_pattern": "per-module alphas are not supported",
    "layers_to_transform": "adapters on a subset of layers are not supported",
    "layers_pattern": "adapters on a subset of layers are not supported",
    "exclude_modules": "exclude_modules is not supported",
    "fan_in_fan_out": "fan_in_fan_out (Conv1D-style weights) is not supported",
    "lora_bias": "LoRA biases are not supported",
    "use_qalora": "QA-LoRA is not supported",
    "layer_replication": "layer replication is not supported",
    "target_parameters": "LoRA on raw parameters is not supported",
    "trainable_token_indices": "trainable token embeddings are not supported",
    "alora_invocation_tokens": "activated LoRA is not supported",
    "megatron_config": "Megatron-parallel LoRA is not supported",
}
_REFUSE_FIX = "train or export the adapter as plain LoRA (see docs/tinkex-server.md)"


@dataclass(frozen=True)
class PeftAdapterConfig:
    """What tinkex takes from an ``adapter_config.json``."""

    rank: int
    alpha: float
    target_modules: list[str] | str
    base_model: str | None


def _refuse(key: str, problem: str, fix: str = _REFUSE_FIX) -> EngineInputError:
    return EngineInputError(f"{_FIELD}:{key}", problem, fix)


def parse_peft_config(cfg: Mapping[str, Any]) -> PeftAdapterConfig:
    """Check an ``adapter_config.json`` dict against what the engine implements."""
    peft_type = cfg.get("peft_type")
    if peft_type != "LORA":
        raise _refuse("peft_type", f"only LORA adapters are supported, got {peft_type!r}")
    task = cfg.get("task_type")
    if task not in (None, "CAUSAL_LM"):
        raise _refuse("task_type", f"must be CAUSAL_LM, got {task!r}")
    for key, problem in _MUST_BE_UNSET.items():
        value = cfg.get(key)
        if value not in (None, False, [], {}, ""):
            raise _refuse(key, f"{problem} (got {value!r})")
    bias = cfg.get("bias", "none")
    if bias != "none":
        raise _refuse("bias", f"bias training is not supported (got {bias!r})")
    init = cfg.get("init_lora_weights", True)
    if init not in (True, False, "gaussian"):
        raise _refuse(
            "init_lora_weights",
            f"{init!r} initialisation changes the base weights, which tinkex does not load",
        )
    rank = cfg.get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise _refuse("r", f"must be a positive integer, got {rank!r}", "fix adapter_config.json")
    alpha = cfg.get("lora_alpha", 8)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or alpha <= 0:
        raise _refuse("lora_alpha", f"must be a positive number, got {alpha!r}", "fix it")
    targets = cfg.get("target_modules")
    if not (isinstance(targets, str) and targets) and not (
        isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)
    ):
        raise _refuse("target_modules", f"must be a list of module names, got {targets!r}")
    base = cfg.get("base_model_name_or_path")
    return PeftAdapterConfig(rank, float(alpha), targets, str(base) if base else None)


def read_peft_config(directory: str | os.PathLike[str]) -> PeftAdapterConfig:
    """:func:`parse_peft_config` of ``directory/adapter_config.json``."""
    return parse_peft_config(read_json(Path(directory) / _FIELD, field=_FIELD))


def match_target_modules(model: DecoderLM, targets: list[str] | str) -> tuple[str, ...]:
    """The short names (``q_proj``...) PEFT's ``target_modules`` selects on ``model``.

    Matching follows PEFT: a string is ``all-linear`` (every projection except ``lm_head``)
    or a regular expression matched in full against module paths; a list entry matches a
    module path equal to it or ending in ``.<entry>``. Every entry must match one of our
    projections, and a short name must be matched in every layer.
    """
    keys = [(key, short) for key, short, _i, _o in model.lora_targets()]
    if targets == "all-linear":
        return tuple(m for m in LORA_MODULES if m != "lm_head")
    hits: dict[str, set[str]] = {}
    if isinstance(targets, str):
        try:
            pattern = re.compile(targets)
        except re.error as exc:
            raise _refuse("target_modules", f"is not a valid regex: {exc}") from None
        for key, short in keys:
            if pattern.fullmatch(key):
                hits.setdefault(short, set()).add(key)
    else:
        for entry in targets:
            found = [(k, s) for k, s in keys if k == entry or k.endswith(f".{entry}")]
            if not found:
                raise _refuse(
                    "target_modules",
                    f"{entry!r} is not a module tinkex adapts",
                    f"target only {', '.join(LORA_MODULES)}",
                )
            for key, short in found:
                hits.setdefault(short, set()).add(key)
    if not hits:
        raise _refuse("target_modules", f"{targets!r} matches no module tinkex adapts")
    for short, matched in hits.items():
        every = {k for k, s in keys if s == short}
        if matched != every:
            raise _refuse(
                "target_modules",
                f"{targets!r} selects {short} in only some layers",
                "target a projection in every layer",
            )
    return tuple(m for m in LORA_MODULES if m in hits)


def merged_state_dict(model: DecoderLM, adapter: Adapter) -> dict[str, Tensor]:
    """Base weights with ``scale * B @ A`` added to every adapted projection.

    With tied embeddings and an adapted ``lm_head`` the result has its own
    ``lm_head.weight`` (the merged model is untied); otherwise a tied model has none.
    """
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    with torch.no_grad():
        for key, (a, b) in adapter.params.items():
            delta = (b.detach() @ a.detach()) * adapter.scale
            if key == "lm_head":
                state["lm_head.weight"] = model.unembedding.detach() + delta
            else:
                state[f"{key}.weight"] = state[f"{key}.weight"] + delta
    return state


def _drop_base_copies(tensors: dict[str, Tensor], model: DecoderLM) -> dict[str, Tensor]:
    """Remove the copy of the base ``lm_head`` that peft saves next to an ``lm_head`` LoRA
    (``save_embedding_layers``); a copy that differs from our base is refused."""
    name = "base_model.model.lm_head.base_layer.weight"
    copy = tensors.pop(name, None)
    if copy is not None:
        ours = model.unembedding.detach()
        if copy.shape != ours.shape or not torch.equal(copy.to(torch.float32), ours):
            raise EngineInputError(
                "adapter_model.safetensors",
                f"{name} (a saved copy of the output layer) differs from the base model's",
                "use the base model the adapter was trained on; a modified lm_head cannot be "
                "imported",
            )
    return tensors


def _tokenizer_source(base: BaseModel) -> Path | None:
    if is_builtin_model(base.name):
        return builtin_tokenizer_dir()
    path = Path(base.source)
    return path if path.is_dir() else None


def write_merged_model(
    base: BaseModel, adapter: Adapter, directory: str | os.PathLike[str]
) -> Path:
    """Write ``config.json``, ``model.safetensors`` (float32) and the base's tokenizer
    files of the merged model to ``directory`` (replaced atomically as a whole)."""
    state = merged_state_dict(base.module, adapter)
    config = base.config.to_hf()
    config["tie_word_embeddings"] = "lm_head.weight" not in state
    config["dtype"] = "float32"
    source = _tokenizer_source(base)
    with atomic_directory(directory) as tmp:
        atomic_write_json(tmp / "config.json", config)
        write_safetensors(tmp / "model.safetensors", state, {"format": "pt"})
        for name in MERGED_EXTRA_FILES if source is not None else ():
            assert source is not None
            if (source / name).is_file():
                shutil.copyfile(source / name, tmp / name)
    return Path(directory)


class PeftMixin(EngineCore):
    """Importing outside PEFT adapters and exporting merged models."""

    def _adapter_from_peft(
        self, directory: Path, base_model: str | None, trainable: bool, seed: int | None
    ) -> tuple[BaseModel, Adapter]:
        cfg = read_peft_config(directory)
        name = base_model or cfg.base_model
        if not name:
            raise EngineInputError(
                "base_model",
                f"{directory / _FIELD} names no base_model_name_or_path",
                "pass base_model (a built-in name or a local model directory)",
            )
        base = self._base(name)
        modules = match_target_modules(base.module, cfg.target_modules)
        spec = LoraSpec(
            rank=cfg.rank,
            alpha=cfg.alpha,
            seed=seed if seed is not None else self._rng.randrange(2**62),
            modules=modules,
        )
        adapter = Adapter(name, base.module, spec, trainable=trainable)
        weights = directory / "adapter_model.safetensors"
        if not weights.is_file() and (directory / "adapter_model.bin").is_file():
            raise EngineInputError(
                "adapter_model.safetensors",
                f"{directory} holds only adapter_model.bin (pickle)",
                "re-save the adapter with save_pretrained(..., safe_serialization=True)",
            )
        tensors = _drop_base_copies(
            read_safetensors(weights, field="adapter_model.safetensors"), base.module
        )
        adapter.load_state_dict(tensors, source="adapter_model.safetensors")
        return base, adapter

    def import_peft_adapter(
        self,
        model_id: str,
        directory: str | os.PathLike[str],
        *,
        base_model: str | None = None,
        trainable: bool = True,
        seed: int | None = None,
    ) -> AdapterInfo:
        """Register the PEFT adapter in ``directory`` (``adapter_config.json`` +
        ``adapter_model.safetensors``) under ``model_id``: a training model with a fresh
        AdamW (``trainable=True``) or frozen sampler weights. ``base_model`` defaults to the
        config's ``base_model_name_or_path``; unsupported adapters raise naming the key."""
        with self._lock:
            if model_id in self._slots:
                raise EngineInputError(
                    "model_id", f"{model_id!r} already exists", "use a new model id"
                )
            base, adapter = self._adapter_from_peft(Path(directory), base_model, trainable, seed)
            optimizer = AdamW(adapter.named_parameters()) if trainable else None
            self._slots[model_id] = Slot(model_id, base, adapter, optimizer)
            return self._adapter_info(self._slots[model_id])

    def export_merged(self, model_id: str, directory: str | os.PathLike[str]) -> Path:
        """Write a registered adapter merged into its base model as a Hugging Face model
        directory (``config.json``, ``model.safetensors``, tokenizer files) that
        ``transformers.AutoModelForCausalLM.from_pretrained`` loads."""
        with self._lock:
            slot = self._slot(model_id)
            return write_merged_model(slot.base, slot.adapter, directory)

    def export_merged_checkpoint(
        self,
        checkpoint: str | os.PathLike[str],
        directory: str | os.PathLike[str],
        *,
        base_model: str | None = None,
    ) -> Path:
        """Merge the adapter of a checkpoint directory (tinkex sampler weights or training
        state, or any supported PEFT adapter) into its base model and write it like
        :meth:`export_merged`. ``base_model`` overrides the checkpoint's base model."""
        with self._lock:
            path = Path(checkpoint)
            if not path.is_dir():
                raise EngineInputError("path", f"checkpoint {path} does not exist", "check it")
            name = base_model
            state_file = path / "tinkex_state.json"
            if name is None and state_file.is_file():
                name = str(read_json(state_file, field="checkpoint").get("base_model") or "")
            base, adapter = self._adapter_from_peft(path, name or None, False, 0)
            return write_merged_model(base, adapter, directory)
