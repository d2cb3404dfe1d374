"""Checkpoint IO of the engine: PEFT-layout sampler weights and training states.

A training state is a directory with ``adapter_model.safetensors`` + ``adapter_config.json``
(PEFT layout, loadable by peft), ``optimizer.safetensors`` (AdamW moments, optional) and
``tinkex_state.json`` (base model, LoRA config, step). Every directory is written to a
temporary sibling and renamed into place as a whole.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from tinkex_server._engine.adapters import DEFAULT_LORA_ALPHA, EngineCore, Slot
from tinkex_server._engine.errors import EngineInputError
from tinkex_server._engine.fileio import (
    atomic_directory,
    atomic_write_json,
    make_archive,
    read_json,
    read_safetensors,
    write_safetensors,
)
from tinkex_server._engine.lora import Adapter, LoraSpec
from tinkex_server._engine.optim import AdamW
from tinkex_server._engine.types import AdapterInfo, LoraConfig, StateInfo

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "OPTIMIZER_FILE",
    "STATE_FILE",
    "STATE_FORMAT",
    "CheckpointMixin",
    "read_state_info",
]

STATE_FORMAT = "tinkex-training-state"
STATE_FILE = "tinkex_state.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
OPTIMIZER_FILE = "optimizer.safetensors"


def _peft_config(slot: Slot) -> dict[str, Any]:
    spec = slot.adapter.spec
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": slot.base.name,
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": 0.0,
        "target_modules": spec.target_modules(),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "use_rslora": False,
        "modules_to_save": None,
    }


def _state_json(slot: Slot, has_optimizer: bool) -> dict[str, Any]:
    spec = slot.adapter.spec
    return {
        "format": STATE_FORMAT,
        "version": 1,
        "base_model": slot.base.name,
        "lora": {
            "rank": spec.rank,
            "alpha": spec.alpha,
            "seed": spec.seed,
            "train_attn": spec.train_attn,
            "train_mlp": spec.train_mlp,
            "train_unembed": spec.train_unembed,
        },
        "step": slot.optimizer.step_count if slot.optimizer is not None else 0,
        "has_optimizer": has_optimizer,
    }


def _write_adapter(slot: Slot, directory: Path) -> None:
    write_safetensors(directory / ADAPTER_WEIGHTS, slot.adapter.state_dict(), {"format": "pt"})
    atomic_write_json(directory / ADAPTER_CONFIG, _peft_config(slot))


def _read_tinkex_state(path: Path) -> StateInfo:
    meta = read_json(path / STATE_FILE, field="checkpoint")
    lora = meta.get("lora") or {}
    try:
        return StateInfo(
            base_model=str(meta["base_model"]),
            lora=LoraConfig(
                rank=int(lora["rank"]),
                seed=int(lora["seed"]),
                train_attn=bool(lora["train_attn"]),
                train_mlp=bool(lora["train_mlp"]),
                train_unembed=bool(lora["train_unembed"]),
                alpha=float(lora["alpha"]),
            ),
            step=int(meta.get("step", 0)),
            has_optimizer=bool(meta.get("has_optimizer", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EngineInputError("checkpoint", f"{path / STATE_FILE} is incomplete ({exc})") from None


def _read_peft_state(path: Path) -> StateInfo:
    peft = read_json(path / ADAPTER_CONFIG, field="checkpoint")
    raw_targets = peft.get("target_modules") or []
    if not isinstance(raw_targets, list):
        raise EngineInputError(
            "checkpoint",
            f"{path / ADAPTER_CONFIG}: target_modules must be a list of module names",
            "save the adapter with explicit target_modules (regexes are not supported)",
        )
    targets = {str(t) for t in raw_targets}
    try:
        return StateInfo(
            base_model=str(peft.get("base_model_name_or_path")),
            lora=LoraConfig(
                rank=int(peft["r"]),
                seed=0,
                train_attn=bool(targets & {"q_proj", "k_proj", "v_proj", "o_proj"}),
                train_mlp=bool(targets & {"gate_proj", "up_proj", "down_proj"}),
                train_unembed="lm_head" in targets,
                alpha=float(peft.get("lora_alpha", DEFAULT_LORA_ALPHA)),
            ),
            step=0,
            has_optimizer=False,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EngineInputError(
            "checkpoint", f"{path / ADAPTER_CONFIG} is incomplete ({exc})"
        ) from None


def read_state_info(directory: str | os.PathLike[str]) -> StateInfo:
    """Read ``tinkex_state.json`` of a training checkpoint (or, for a bare PEFT
    directory, its ``adapter_config.json``)."""
    path = Path(directory)
    if not path.is_dir():
        raise EngineInputError("path", f"checkpoint {path} does not exist", "check the path")
    if (path / STATE_FILE).is_file():
        return _read_tinkex_state(path)
    return _read_peft_state(path)


def _check_same_lora(model_id: str, spec: LoraSpec, info: StateInfo) -> None:
    lc = info.lora
    if (lc.rank, lc.train_attn, lc.train_mlp, lc.train_unembed) != (
        spec.rank,
        spec.train_attn,
        spec.train_mlp,
        spec.train_unembed,
    ) or (lc.alpha is not None and not math.isclose(lc.alpha, spec.alpha)):
        raise EngineInputError(
            "path",
            f"checkpoint LoRA (rank {lc.rank}, alpha {lc.alpha}, attn/mlp/unembed "
            f"{lc.train_attn}/{lc.train_mlp}/{lc.train_unembed}) does not match model "
            f"{model_id!r} (rank {spec.rank}, alpha {spec.alpha}, "
            f"{spec.train_attn}/{spec.train_mlp}/{spec.train_unembed})",
            "create the training model from the checkpoint's own LoRA config "
            "(Engine.read_state_info)",
        )


class CheckpointMixin(EngineCore):
    """Saving and loading adapters and training states."""

    def save_sampler_weights(self, model_id: str, directory: str | os.PathLike[str]) -> Path:
        """Write the adapter in PEFT layout (``adapter_model.safetensors`` +
        ``adapter_config.json``) to ``directory`` (replaced atomically as a whole)."""
        with self._lock:
            slot = self._slot(model_id)
            with atomic_directory(directory) as tmp:
                _write_adapter(slot, tmp)
            return Path(directory)

    def save_state(
        self,
        model_id: str,
        directory: str | os.PathLike[str],
        *,
        with_optimizer: bool = True,
    ) -> Path:
        """Write a training checkpoint: the PEFT-layout adapter, AdamW moments
        (``optimizer.safetensors``, when ``with_optimizer``) and ``tinkex_state.json``
        (base model, LoRA config, step). The directory is replaced atomically."""
        with self._lock:
            slot = self._slot(model_id)
            with atomic_directory(directory) as tmp:
                _write_adapter(slot, tmp)
                has_opt = with_optimizer and slot.optimizer is not None
                if has_opt and slot.optimizer is not None:
                    write_safetensors(
                        tmp / OPTIMIZER_FILE, slot.optimizer.state_tensors(), {"format": "pt"}
                    )
                atomic_write_json(tmp / STATE_FILE, _state_json(slot, has_opt))
            return Path(directory)

    @staticmethod
    def read_state_info(directory: str | os.PathLike[str]) -> StateInfo:
        """Read ``tinkex_state.json`` of a training checkpoint (or, for a bare PEFT
        directory, its ``adapter_config.json``)."""
        return read_state_info(directory)

    def load_state(
        self,
        model_id: str,
        directory: str | os.PathLike[str],
        *,
        with_optimizer: bool = True,
    ) -> AdapterInfo:
        """Load adapter weights (and, when ``with_optimizer``, the AdamW moments and step)
        into an existing training model whose rank, alpha and targets match. Accumulated
        gradients are dropped; without optimizer state the optimizer restarts at step 0."""
        with self._lock:
            slot = self._slot(model_id)
            if slot.optimizer is None:
                raise EngineInputError("model_id", f"{model_id!r} is not a training model")
            info = read_state_info(directory)
            spec = slot.adapter.spec
            _check_same_lora(model_id, spec, info)
            path = Path(directory)
            tensors = read_safetensors(path / ADAPTER_WEIGHTS, field="checkpoint")
            opt_tensors: dict[str, Tensor] | None = None
            if with_optimizer:
                if not info.has_optimizer:
                    raise EngineInputError(
                        "path",
                        f"checkpoint {path} has no optimizer state",
                        "load it without optimizer state (load_weights instead of "
                        "load_weights_with_optimizer)",
                    )
                opt_tensors = read_safetensors(path / OPTIMIZER_FILE, field="checkpoint")
            # Check everything before touching the live adapter.
            probe = Adapter(slot.base.name, slot.base.module, spec)
            probe.load_state_dict(tensors, source="checkpoint")
            if opt_tensors is not None:
                AdamW(probe.named_parameters()).load_state_tensors(
                    opt_tensors, info.step, source="checkpoint"
                )
            slot.adapter.load_state_dict(tensors, source="checkpoint")
            slot.adapter.zero_grad()
            if opt_tensors is not None:
                slot.optimizer.load_state_tensors(opt_tensors, info.step, source="checkpoint")
            else:
                slot.optimizer.reset()
            return self._adapter_info(slot)

    def load_sampler_weights(
        self,
        model_id: str,
        directory: str | os.PathLike[str],
        *,
        base_model: str | None = None,
    ) -> AdapterInfo:
        """Register a frozen adapter from a PEFT-layout directory (ours, or PEFT's own)
        under ``model_id``, for sampling. ``base_model`` defaults to the directory's
        ``base_model_name_or_path``."""
        with self._lock:
            if model_id in self._slots:
                raise EngineInputError("model_id", f"{model_id!r} already exists")
            info = read_state_info(directory)
            name = base_model or info.base_model
            base = self._base(name)
            lc = info.lora
            spec = LoraSpec(
                rank=lc.rank,
                alpha=lc.alpha if lc.alpha is not None else self.lora_alpha,
                seed=lc.seed or 0,
                train_attn=lc.train_attn,
                train_mlp=lc.train_mlp,
                train_unembed=lc.train_unembed,
            )
            adapter = Adapter(name, base.module, spec, trainable=False)
            tensors = read_safetensors(Path(directory) / ADAPTER_WEIGHTS, field="checkpoint")
            adapter.load_state_dict(tensors, source="checkpoint")
            self._slots[model_id] = Slot(model_id, base, adapter, None)
            return self._adapter_info(self._slots[model_id])

    @staticmethod
    def make_archive(directory: str | os.PathLike[str], archive: str | os.PathLike[str]) -> Path:
        """A deterministic ``.tar.gz`` of a checkpoint directory, written atomically."""
        return make_archive(directory, archive)
