"""The engine's registry: shared frozen base models and adapters keyed by model id.

:class:`EngineCore` holds the state every part of :class:`~tinkex_server._engine.engine.Engine`
works on (the lock, the base models, the adapter slots, the engine RNG) and the methods that
create, describe and forget adapters. Training, sampling and checkpoint IO extend it.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from tinkex_server._builtin import builtin_models
from tinkex_server._engine.errors import EngineInputError, UnknownModelError
from tinkex_server._engine.lora import Adapter, LoraSpec
from tinkex_server._engine.optim import AdamW
from tinkex_server._engine.registry import BaseModel, load_base_model
from tinkex_server._engine.types import AdapterInfo, LoraConfig, ModelInfo
from tinkex_types import Tokenizer

__all__ = ["DEFAULT_LORA_ALPHA", "EngineCore", "Slot", "attr"]

DEFAULT_LORA_ALPHA = 32.0


@dataclass
class Slot:
    """One registered adapter: its base model, weights and (training only) optimizer."""

    model_id: str
    base: BaseModel
    adapter: Adapter
    optimizer: AdamW | None


def attr(obj: Any, name: str, default: Any) -> Any:
    """``obj[name]`` or ``obj.name`` (mapping or object), ``default`` when absent or None."""
    if obj is None:
        return default
    value = obj.get(name, default) if isinstance(obj, Mapping) else getattr(obj, name, default)
    return default if value is None else value


class EngineCore:
    """Base models and adapters; see :class:`~tinkex_server._engine.engine.Engine`."""

    def __init__(
        self,
        *,
        lora_alpha: float = DEFAULT_LORA_ALPHA,
        seed: int | None = None,
        max_microbatch_tokens: int = 8192,
        max_sample_rows: int = 64,
    ) -> None:
        self.lora_alpha = float(lora_alpha)
        self._rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8)))
        self.max_microbatch_tokens = max_microbatch_tokens
        self.max_sample_rows = max_sample_rows
        self._lock = threading.RLock()
        self._bases: dict[str, BaseModel] = {}
        self._slots: dict[str, Slot] = {}

    # ------------------------------------------------------------------ base models
    @staticmethod
    def builtin_models() -> list[str]:
        """Names of the built-in tiny models."""
        return builtin_models()

    def _base(self, name: str) -> BaseModel:
        if not isinstance(name, str) or not name:
            raise EngineInputError("base_model", f"must be a non-empty string, got {name!r}")
        base = self._bases.get(name)
        if base is None:
            base = load_base_model(name)
            self._bases[name] = base
        return base

    def load_base_model(self, base_model: str) -> ModelInfo:
        """Load (or reuse) a base model and describe it."""
        with self._lock:
            return self._model_info(self._base(base_model))

    @staticmethod
    def _model_info(base: BaseModel) -> ModelInfo:
        cfg = base.config
        return ModelInfo(
            name=base.name,
            architecture=cfg.architecture,
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_hidden_layers,
            context_length=cfg.max_position_embeddings,
            num_parameters=base.num_parameters(),
            eos_token_ids=base.eos_token_ids,
            tokenizer_id=base.name if base.tokenizer is not None else None,
            source=base.source,
        )

    def tokenizer(self, base_model: str) -> Tokenizer | None:
        """The tokenizer of a base model (``None`` if its directory has none)."""
        with self._lock:
            return self._base(base_model).tokenizer

    # ------------------------------------------------------------------ adapters
    def _slot(self, model_id: str) -> Slot:
        slot = self._slots.get(model_id)
        if slot is None:
            raise UnknownModelError(
                "model_id", f"no model {model_id!r} is loaded", "create it first (create_model)"
            )
        return slot

    def _training_slot(self, model_id: str, fix: str | None = None) -> Slot:
        slot = self._slot(model_id)
        if slot.optimizer is None or not slot.adapter.trainable:
            raise EngineInputError(
                "model_id", f"{model_id!r} holds sampler weights and cannot be trained", fix
            )
        return slot

    def _spec(self, lora: Any) -> LoraSpec:
        rank = attr(lora, "rank", 32)
        seed = attr(lora, "seed", None)
        if seed is None:
            seed = self._rng.randrange(2**62)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise EngineInputError("lora_config.seed", f"must be an integer, got {seed!r}")
        modules = attr(lora, "target_modules", None)
        return LoraSpec(
            rank=rank,
            alpha=float(attr(lora, "alpha", self.lora_alpha)),
            seed=seed,
            train_attn=bool(attr(lora, "train_attn", True)),
            train_mlp=bool(attr(lora, "train_mlp", True)),
            train_unembed=bool(attr(lora, "train_unembed", True)),
            modules=tuple(modules) if modules is not None else None,
        )

    def create_adapter(
        self, model_id: str, base_model: str, lora: LoraConfig | Any = None
    ) -> AdapterInfo:
        """Create a trainable adapter (plus its AdamW state) for ``model_id``.

        ``lora`` is a :class:`LoraConfig`, a wire ``LoraConfig`` or a mapping with the same
        keys (``rank``, ``seed``, ``train_attn``, ``train_mlp``, ``train_unembed``,
        optional ``alpha``); ``None`` means all defaults (rank 32).
        """
        with self._lock:
            if model_id in self._slots:
                raise EngineInputError(
                    "model_id", f"{model_id!r} already exists", "use a new model id"
                )
            spec = self._spec(lora)
            base = self._base(base_model)
            adapter = Adapter(base_model, base.module, spec)
            self._slots[model_id] = Slot(model_id, base, adapter, AdamW(adapter.named_parameters()))
            return self._adapter_info(self._slots[model_id])

    def remove_adapter(self, model_id: str) -> None:
        """Forget an adapter (training or sampler); unknown ids raise."""
        with self._lock:
            self._slot(model_id)
            del self._slots[model_id]

    def has_adapter(self, model_id: str) -> bool:
        """Whether ``model_id`` is registered."""
        with self._lock:
            return model_id in self._slots

    def list_adapters(self) -> list[str]:
        """Registered model ids, in creation order."""
        with self._lock:
            return list(self._slots)

    def adapter_info(self, model_id: str) -> AdapterInfo:
        """Describe a registered adapter."""
        with self._lock:
            return self._adapter_info(self._slot(model_id))

    @staticmethod
    def _adapter_info(slot: Slot) -> AdapterInfo:
        spec = slot.adapter.spec
        return AdapterInfo(
            model_id=slot.model_id,
            base_model=slot.base.name,
            rank=spec.rank,
            alpha=spec.alpha,
            seed=spec.seed,
            train_attn=spec.train_attn,
            train_mlp=spec.train_mlp,
            train_unembed=spec.train_unembed,
            trainable=slot.adapter.trainable,
            step=slot.optimizer.step_count if slot.optimizer is not None else 0,
            num_parameters=slot.adapter.num_parameters(),
            target_modules=spec.target_modules(),
        )

    def adapter_state(self, model_id: str) -> dict[str, Tensor]:
        """Copies of an adapter's tensors under PEFT names."""
        with self._lock:
            return self._slot(model_id).adapter.state_dict()

    def adapter_grads(self, model_id: str) -> dict[str, Tensor | None]:
        """Copies of the accumulated gradients (PEFT names; ``None`` where none yet)."""
        with self._lock:
            return {
                name: (p.grad.clone() if p.grad is not None else None)
                for name, p in self._slot(model_id).adapter.named_parameters()
            }

    def zero_grad(self, model_id: str) -> None:
        """Discard accumulated gradients without stepping."""
        with self._lock:
            self._slot(model_id).adapter.zero_grad()
