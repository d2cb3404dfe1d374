"""Checkpoint IO of the engine: PEFT-layout sampler weights and training states.

A training state is a directory with ``adapter_model.safetensors`` + ``adapter_config.json``
(PEFT layout, loadable by peft), ``optimizer.safetensors`` (AdamW moments, optional) and
``tinkex_state.json`` (base model, LoRA config, step). Every directory is written to a
temporary sibling and renamed into place as a whole.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from torch import Tensor

from tinkex_server._engine.adapters import Slot
from tinkex_server._engine.errors import EngineInputError
from tinkex_server._engine.fileio import (
    atomic_directory,
    atomic_write_json,
    make_archive,
    read_json,
    read_safetensors,
    write_safetensors,
)
from tinkex_server._engine.lora import ATTN_MODULES, LORA_MODULES, MLP_MODULES, Adapter, LoraSpec
from tinkex_server._engine.optim import AdamW
from tinkex_server._engine.peft_io import PeftMixin, read_peft_config
from tinkex_server._engine.types import AdapterInfo, LoraConfig, StateInfo
from tinkex_server._integrity import verify_checkpoint_dir, write_checkpoint_manifest

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
_GROUP = dict.fromkeys(ATTN_MODULES, "self_attn") | dict.fromkeys(MLP_MODULES, "mlp")


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
            "target_modules": list(spec.modules) if spec.modules is not None else None,
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
                target_modules=_modules(lora.get("target_modules")),
            ),
            step=int(meta.get("step", 0)),
            has_optimizer=bool(meta.get("has_optimizer", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EngineInputError("checkpoint", f"{path / STATE_FILE} is incomplete ({exc})") from None


def _modules(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise EngineInputError("checkpoint", f"target_modules must be a list, got {value!r}")
    return tuple(value)


def _peft_modules(targets: list[str] | str) -> tuple[str, ...]:
    """Short names selected by PEFT ``target_modules``, judged on layer 0 and lm_head
    (the full check against the model happens when the adapter is loaded)."""
    if targets == "all-linear":
        return tuple(m for m in LORA_MODULES if m != "lm_head")
    keys = {m: (m if m == "lm_head" else f"model.layers.0.{_GROUP[m]}.{m}") for m in LORA_MODULES}
    if isinstance(targets, str):
        return tuple(m for m, k in keys.items() if re.fullmatch(targets, k))
    return tuple(m for m, k in keys.items() if any(k == t or k.endswith(f".{t}") for t in targets))


def _read_peft_state(path: Path) -> StateInfo:
    cfg = read_peft_config(path)
    modules = _peft_modules(cfg.target_modules)
    if not modules:
        raise EngineInputError(
            "adapter_config.json:target_modules",
            f"{cfg.target_modules!r} matches no module tinkex adapts",
            f"target only {', '.join(LORA_MODULES)}",
        )
    return StateInfo(
        base_model=str(cfg.base_model),
        lora=LoraConfig(
            rank=cfg.rank,
            seed=0,
            train_attn=bool(set(modules) & set(ATTN_MODULES)),
            train_mlp=bool(set(modules) & set(MLP_MODULES)),
            train_unembed="lm_head" in modules,
            alpha=cfg.alpha,
            target_modules=modules,
        ),
        step=0,
        has_optimizer=False,
    )


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
    want = LoraSpec(
        rank=lc.rank,
        alpha=lc.alpha if lc.alpha is not None else spec.alpha,
        seed=0,
        train_attn=lc.train_attn,
        train_mlp=lc.train_mlp,
        train_unembed=lc.train_unembed,
        modules=lc.target_modules,
    )
    if (want.rank, want.target_modules()) != (spec.rank, spec.target_modules()) or (
        not math.isclose(want.alpha, spec.alpha)
    ):
        raise EngineInputError(
            "path",
            f"checkpoint LoRA (rank {want.rank}, alpha {want.alpha}, targets "
            f"{want.target_modules()}) does not match model {model_id!r} (rank {spec.rank}, "
            f"alpha {spec.alpha}, targets {spec.target_modules()})",
            "create the training model from the checkpoint's own LoRA config "
            "(Engine.read_state_info)",
        )


def _verify(directory: str | os.PathLike[str]) -> None:
    """Check an existing checkpoint directory against its manifest (a missing one is
    reported by the readers as a user error, as before)."""
    if Path(directory).is_dir():
        verify_checkpoint_dir(directory)


class CheckpointMixin(PeftMixin):
    """Saving and loading adapters and training states."""

    def save_sampler_weights(self, model_id: str, directory: str | os.PathLike[str]) -> Path:
        """Write the adapter in PEFT layout (``adapter_model.safetensors`` +
        ``adapter_config.json``, and the SHA-256 manifest ``tinkex_manifest.json``) to
        ``directory`` (replaced atomically as a whole)."""
        with self._lock:
            slot = self._slot(model_id)
            with atomic_directory(directory) as tmp:
                _write_adapter(slot, tmp)
                write_checkpoint_manifest(tmp)
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
        (base model, LoRA config, step), then the SHA-256 manifest of them all
        (``tinkex_manifest.json``). The directory is replaced atomically."""
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
                write_checkpoint_manifest(tmp)
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
            _verify(directory)
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
            _verify(directory)
            info = read_state_info(directory)
            _base, adapter = self._adapter_from_peft(
                Path(directory), base_model or info.base_model, False, info.lora.seed or 0
            )
            self._slots[model_id] = Slot(model_id, _base, adapter, None)
            return self._adapter_info(self._slots[model_id])

    @staticmethod
    def make_archive(directory: str | os.PathLike[str], archive: str | os.PathLike[str]) -> Path:
        """A deterministic ``.tar.gz`` of a checkpoint directory, written atomically."""
        return make_archive(directory, archive)
