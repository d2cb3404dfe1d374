"""The torch engine behind tinkex-server: base models, multi-LoRA training and sampling.

One :class:`Engine` holds any number of frozen base models (loaded on first use, shared) and
any number of adapters keyed by model id. Every public method takes a lock, so calling it from
several threads is safe (calls are serialised); the server drives it from one worker thread.

Conventions (protocol.md §3):

* ``forward``/``forward_backward`` return per-datum ``logprobs`` (float32, the shape of
  ``target_tokens``; position i scores ``target_tokens[i]`` given ``tokens[:i+1]``) and
  ``elementwise_loss``, plus ``metrics["loss:sum"]``. Losses are sums over tokens and datums,
  never means; weights may be any real numbers.
* ``forward_backward`` adds gradients into the adapter; ``optim_step`` applies AdamW and
  clears them. ``forward`` never touches gradients or optimizer state.
* Every user mistake raises :class:`EngineInputError` (a ``TinkexValidationError`` naming
  field, problem and fix); unknown ids raise :class:`UnknownModelError`. A failed call changes
  nothing (inputs are validated before any gradient is accumulated).
* Deterministic: adapter initialisation is seeded, sampling uses per-row generators, and
  the same calls give bit-identical results on CPU with a fixed thread count.
"""

from __future__ import annotations

import math
import os
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import torch
from torch import Tensor

from tinkex_server._builtin import builtin_models
from tinkex_server._engine.errors import EngineInputError, UnknownModelError
from tinkex_server._engine.fileio import (
    atomic_directory,
    atomic_write_json,
    make_archive,
    read_json,
    read_safetensors,
    write_safetensors,
)
from tinkex_server._engine.lora import Adapter, LoraSpec
from tinkex_server._engine.losses import (
    REQUIRED_INPUTS,
    check_loss_fn,
    elementwise_loss,
    resolve_loss_config,
)
from tinkex_server._engine.optim import AdamParams, AdamW
from tinkex_server._engine.registry import BaseModel, load_base_model
from tinkex_server._engine.sampling import SampleRow, generate
from tinkex_server._engine.types import (
    AdapterInfo,
    Datum,
    FlatTensor,
    ForwardResult,
    LoraConfig,
    ModelInfo,
    SampledSequence,
    SampleRequest,
    SampleResult,
    StateInfo,
)
from tinkex_types import Tokenizer

__all__ = ["DEFAULT_LORA_ALPHA", "Engine"]

DEFAULT_LORA_ALPHA = 32.0
STATE_FORMAT = "tinkex-training-state"
STATE_FILE = "tinkex_state.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
OPTIMIZER_FILE = "optimizer.safetensors"
_FLOAT_INPUTS = ("weights", "logprobs", "advantages")


@dataclass
class _Slot:
    model_id: str
    base: BaseModel
    adapter: Adapter
    optimizer: AdamW | None


@dataclass
class _Prepared:
    index: int
    tokens: Tensor  # [N] long
    targets: Tensor  # [N] or [N, K] long
    inputs: dict[str, Tensor]  # float32, shape of targets


def _to_tensor(value: Any, field: str) -> Tensor:
    """A TensorData-like object, tensor, array or (nested) list -> tensor."""
    try:
        if isinstance(value, Tensor):
            return value.detach()
        data = getattr(value, "data", None)
        if isinstance(data, list) and hasattr(value, "shape"):
            t = torch.tensor(data)
            shape = value.shape
            return t.reshape(list(shape)) if shape is not None else t
        if hasattr(value, "__array__"):
            import numpy as np

            return torch.from_numpy(np.ascontiguousarray(np.asarray(value)))
        return torch.tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise EngineInputError(
            field, f"cannot be read as a tensor ({exc})", "pass a list of numbers or TensorData"
        ) from None


def _datum_tokens(datum: Any, where: str) -> list[int]:
    """Token ids of an engine :class:`Datum` (``tokens``) or a wire ``Datum``
    (``model_input.to_ints()``; image chunks are refused)."""
    tokens = getattr(datum, "tokens", None)
    if isinstance(tokens, Tensor):
        return list(tokens.tolist())
    if tokens is not None:
        return list(tokens)
    model_input = getattr(datum, "model_input", None)
    to_ints = getattr(model_input, "to_ints", None)
    if to_ints is None:
        raise EngineInputError(f"{where}.model_input", "missing", "give the input token ids")
    try:
        return list(to_ints())
    except ValueError as exc:
        raise EngineInputError(
            f"{where}.model_input", str(exc), "this server only takes text token chunks"
        ) from None


def _flat(t: Tensor, dtype: Literal["float32", "int64"] = "float32") -> FlatTensor:
    data = t.reshape(-1).tolist()
    return FlatTensor(data=data, dtype=dtype, shape=list(t.shape))


def _attr(obj: Any, name: str, default: Any) -> Any:
    if obj is None:
        return default
    value = obj.get(name, default) if isinstance(obj, Mapping) else getattr(obj, name, default)
    return default if value is None else value


class Engine:
    """Multi-LoRA training and sampling over shared frozen base models.

    Parameters:
        lora_alpha: LoRA alpha for adapters created without one (scale = alpha / rank).
        seed: seeds the engine's own RNG, used only to draw LoRA seeds and sampling seeds
            that callers leave out; ``None`` draws it from the OS.
        max_microbatch_tokens: padded tokens per forward chunk in training (memory bound;
            results are sums, so chunking does not change them beyond float rounding).
        max_sample_rows: rows (prompts x samples) decoded together in one batch.
    """

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
        self._slots: dict[str, _Slot] = {}

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

    def model_info(self, base_model: str) -> ModelInfo:
        """Describe a base model (loading it if needed)."""
        return self.load_base_model(base_model)

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

    def base_state_dict(self, base_model: str) -> dict[str, Tensor]:
        """Copies of a base model's weights under Hugging Face names."""
        with self._lock:
            return {k: v.clone() for k, v in self._base(base_model).module.state_dict().items()}

    def unload_unused_bases(self) -> list[str]:
        """Forget base models that no adapter uses; returns their names."""
        with self._lock:
            used = {slot.base.name for slot in self._slots.values()}
            gone = [name for name in self._bases if name not in used]
            for name in gone:
                del self._bases[name]
            return gone

    # ------------------------------------------------------------------ adapters
    def _slot(self, model_id: str) -> _Slot:
        slot = self._slots.get(model_id)
        if slot is None:
            raise UnknownModelError(
                "model_id", f"no model {model_id!r} is loaded", "create it first (create_model)"
            )
        return slot

    def _spec(self, lora: Any) -> LoraSpec:
        rank = _attr(lora, "rank", 32)
        seed = _attr(lora, "seed", None)
        if seed is None:
            seed = self._rng.randrange(2**62)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise EngineInputError("lora_config.seed", f"must be an integer, got {seed!r}")
        return LoraSpec(
            rank=rank,
            alpha=float(_attr(lora, "alpha", self.lora_alpha)),
            seed=seed,
            train_attn=bool(_attr(lora, "train_attn", True)),
            train_mlp=bool(_attr(lora, "train_mlp", True)),
            train_unembed=bool(_attr(lora, "train_unembed", True)),
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
            self._slots[model_id] = _Slot(
                model_id, base, adapter, AdamW(adapter.named_parameters())
            )
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
    def _adapter_info(slot: _Slot) -> AdapterInfo:
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

    # ------------------------------------------------------------------ forward
    def _prepare(
        self, base: BaseModel, data: Sequence[Datum | Any], loss_fn: str
    ) -> list[_Prepared]:
        check_loss_fn(loss_fn)
        if isinstance(data, str | bytes) or not isinstance(data, Sequence) or not data:
            raise EngineInputError("data", "must be a non-empty list of datums")
        vocab = base.config.vocab_size
        required = REQUIRED_INPUTS[loss_fn]
        out: list[_Prepared] = []
        for i, datum in enumerate(data):
            where = f"data[{i}]"
            raw_tokens = _datum_tokens(datum, where)
            tokens = _to_tensor(raw_tokens, f"{where}.model_input")
            if tokens.ndim != 1 or tokens.numel() == 0 or tokens.is_floating_point():
                raise EngineInputError(
                    f"{where}.model_input", "must be a non-empty list of integer token ids"
                )
            tokens = tokens.to(torch.long)
            if int(tokens.min()) < 0 or int(tokens.max()) >= vocab:
                raise EngineInputError(
                    f"{where}.model_input",
                    f"token id out of range [0, {vocab})",
                    "tokenize with this model's tokenizer",
                )
            n = tokens.shape[0]
            if n > base.config.max_position_embeddings:
                raise EngineInputError(
                    f"{where}.model_input",
                    f"has {n} tokens, more than the context length "
                    f"{base.config.max_position_embeddings}",
                    "split or truncate the sequence",
                )
            lfi = getattr(datum, "loss_fn_inputs", None) or {}
            missing = [k for k in required if k not in lfi]
            if missing:
                raise EngineInputError(
                    f"{where}.loss_fn_inputs",
                    f"{loss_fn} needs {', '.join(missing)}",
                    f"give {', '.join(required)}, each with one entry per input token",
                )
            targets = _to_tensor(lfi["target_tokens"], f"{where}.loss_fn_inputs.target_tokens")
            if targets.is_floating_point() and not torch.equal(targets, targets.round()):
                raise EngineInputError(
                    f"{where}.loss_fn_inputs.target_tokens", "must hold integers"
                )
            targets = targets.to(torch.long)
            if targets.ndim not in (1, 2) or targets.shape[0] != n:
                raise EngineInputError(
                    f"{where}.loss_fn_inputs.target_tokens",
                    f"has shape {list(targets.shape)}, but the model input has {n} tokens",
                    f"give {n} targets (shape [{n}] or [{n}, K])",
                )
            if int(targets.min()) < 0 or int(targets.max()) >= vocab:
                raise EngineInputError(
                    f"{where}.loss_fn_inputs.target_tokens", f"token id out of range [0, {vocab})"
                )
            inputs: dict[str, Tensor] = {}
            for key in required:
                if key == "target_tokens":
                    continue
                t = _to_tensor(lfi[key], f"{where}.loss_fn_inputs.{key}").to(torch.float32)
                if tuple(t.shape) != tuple(targets.shape):
                    raise EngineInputError(
                        f"{where}.loss_fn_inputs.{key}",
                        f"has shape {list(t.shape)}, target_tokens has {list(targets.shape)}",
                        "give one value per target token",
                    )
                if not bool(torch.isfinite(t).all()):
                    raise EngineInputError(
                        f"{where}.loss_fn_inputs.{key}", "contains NaN or infinity"
                    )
                inputs[key] = t
            out.append(_Prepared(i, tokens, targets, inputs))
        return out

    def _microbatches(self, items: list[_Prepared]) -> list[list[_Prepared]]:
        batches: list[list[_Prepared]] = []
        cur: list[_Prepared] = []
        width = 0
        for item in items:
            n = item.tokens.shape[0]
            new_width = max(width, n)
            if cur and new_width * (len(cur) + 1) > self.max_microbatch_tokens:
                batches.append(cur)
                cur, new_width = [], n
            cur.append(item)
            width = new_width
        if cur:
            batches.append(cur)
        return batches

    def _run(
        self,
        slot: _Slot,
        data: Sequence[Datum | Any],
        loss_fn: str,
        loss_fn_config: Mapping[str, Any] | None,
        backward: bool,
    ) -> ForwardResult:
        # Everything is validated before any gradient is accumulated.
        config = resolve_loss_config(loss_fn, loss_fn_config)
        items = self._prepare(slot.base, data, loss_fn)
        model = slot.base.module
        lora = slot.adapter.context()
        outputs: list[dict[str, FlatTensor]] = [{} for _ in items]
        total = 0.0
        for mb in self._microbatches(items):
            width = max(it.tokens.shape[0] for it in mb)
            tokens = torch.zeros(len(mb), width, dtype=torch.long)
            for row, it in enumerate(mb):
                tokens[row, : it.tokens.shape[0]] = it.tokens
            with torch.set_grad_enabled(backward):
                hidden = model.hidden_states(tokens, lora=lora)
                mb_loss: Tensor | None = None
                for row, it in enumerate(mb):
                    n = it.tokens.shape[0]
                    logits = model.logits(hidden[row, :n], lora)  # [n, vocab]
                    lse = torch.logsumexp(logits, dim=-1)
                    idx = it.targets if it.targets.ndim == 2 else it.targets[:, None]
                    lp = logits.gather(-1, idx) - lse[:, None]
                    if it.targets.ndim == 1:
                        lp = lp[:, 0]
                    el = elementwise_loss(loss_fn, lp, it.inputs, config)
                    s = el.sum()
                    mb_loss = s if mb_loss is None else mb_loss + s
                    outputs[it.index] = {
                        "logprobs": _flat(lp.detach()),
                        "elementwise_loss": _flat(el.detach()),
                    }
                    total += float(s.detach().to(torch.float64))
                if backward and mb_loss is not None and mb_loss.requires_grad:
                    torch.autograd.backward([mb_loss])
        return ForwardResult(loss_fn_outputs=outputs, metrics={"loss:sum": total})

    def forward(
        self,
        model_id: str,
        data: Sequence[Datum | Any],
        loss_fn: str = "cross_entropy",
        loss_fn_config: Mapping[str, Any] | None = None,
    ) -> ForwardResult:
        """Logprobs and loss of ``data`` under the current adapter; no gradient, no state
        change."""
        with self._lock:
            slot = self._slot(model_id)
            return self._run(slot, data, loss_fn, loss_fn_config, backward=False)

    def forward_backward(
        self,
        model_id: str,
        data: Sequence[Datum | Any],
        loss_fn: str = "cross_entropy",
        loss_fn_config: Mapping[str, Any] | None = None,
    ) -> ForwardResult:
        """Like :meth:`forward`, and add the gradient of ``loss:sum`` into the adapter."""
        with self._lock:
            slot = self._slot(model_id)
            if not slot.adapter.trainable or slot.optimizer is None:
                raise EngineInputError(
                    "model_id",
                    f"{model_id!r} holds sampler weights and cannot be trained",
                    "create a training model, or load_state into one",
                )
            return self._run(slot, data, loss_fn, loss_fn_config, backward=True)

    def compute_logprobs(
        self,
        tokens: Sequence[int],
        *,
        model_id: str | None = None,
        base_model: str | None = None,
    ) -> list[float | None]:
        """Logprob of each token given the previous ones (``None`` for the first)."""
        req = SampleRequest(
            prompt=list(tokens),
            max_tokens=1,
            model_id=model_id,
            base_model=base_model,
            temperature=0.0,
            prompt_logprobs=True,
            stop_at_eos=False,
        )
        result = self.sample(req)
        assert result.prompt_logprobs is not None
        return result.prompt_logprobs

    # ------------------------------------------------------------------ optimizer
    def optim_step(self, model_id: str, adam_params: AdamParams | Any = None) -> dict[str, float]:
        """One AdamW update of the adapter with the accumulated gradients, then clear them.

        ``adam_params``: an :class:`AdamParams`, the wire model or a mapping with keys
        ``learning_rate``, ``beta1``, ``beta2``, ``eps``, ``weight_decay``,
        ``grad_clip_norm`` (missing ones take Tinker's defaults). Returns metrics
        ``grad_norm:mean``, ``learning_rate:mean``, ``step:max``.
        """
        with self._lock:
            slot = self._slot(model_id)
            if slot.optimizer is None or not slot.adapter.trainable:
                raise EngineInputError(
                    "model_id", f"{model_id!r} holds sampler weights and cannot be trained"
                )
            defaults = AdamParams()
            hp = AdamParams(
                **{
                    name: _attr(adam_params, name, getattr(defaults, name))
                    for name in (
                        "learning_rate",
                        "beta1",
                        "beta2",
                        "eps",
                        "weight_decay",
                        "grad_clip_norm",
                    )
                }
            )
            hp.validate()
            return slot.optimizer.step(hp)

    # ------------------------------------------------------------------ checkpoints
    @staticmethod
    def _peft_config(slot: _Slot) -> dict[str, Any]:
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

    def _write_adapter(self, slot: _Slot, directory: Path) -> None:
        write_safetensors(directory / ADAPTER_WEIGHTS, slot.adapter.state_dict(), {"format": "pt"})
        atomic_write_json(directory / ADAPTER_CONFIG, self._peft_config(slot))

    def save_sampler_weights(self, model_id: str, directory: str | os.PathLike[str]) -> Path:
        """Write the adapter in PEFT layout (``adapter_model.safetensors`` +
        ``adapter_config.json``) to ``directory`` (replaced atomically as a whole)."""
        with self._lock:
            slot = self._slot(model_id)
            with atomic_directory(directory) as tmp:
                self._write_adapter(slot, tmp)
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
            spec = slot.adapter.spec
            step = slot.optimizer.step_count if slot.optimizer is not None else 0
            with atomic_directory(directory) as tmp:
                self._write_adapter(slot, tmp)
                has_opt = with_optimizer and slot.optimizer is not None
                if has_opt and slot.optimizer is not None:
                    write_safetensors(
                        tmp / OPTIMIZER_FILE, slot.optimizer.state_tensors(), {"format": "pt"}
                    )
                atomic_write_json(
                    tmp / STATE_FILE,
                    {
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
                        "step": step,
                        "has_optimizer": has_opt,
                    },
                )
            return Path(directory)

    @staticmethod
    def read_state_info(directory: str | os.PathLike[str]) -> StateInfo:
        """Read ``tinkex_state.json`` of a training checkpoint (or, for a bare PEFT
        directory, its ``adapter_config.json``)."""
        path = Path(directory)
        if not path.is_dir():
            raise EngineInputError("path", f"checkpoint {path} does not exist", "check the path")
        if (path / STATE_FILE).is_file():
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
                raise EngineInputError(
                    "checkpoint", f"{path / STATE_FILE} is incomplete ({exc})"
                ) from None
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
            info = self.read_state_info(directory)
            spec = slot.adapter.spec
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
            info = self.read_state_info(directory)
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
            self._slots[model_id] = _Slot(model_id, base, adapter, None)
            return self._adapter_info(self._slots[model_id])

    @staticmethod
    def make_archive(directory: str | os.PathLike[str], archive: str | os.PathLike[str]) -> Path:
        """A deterministic ``.tar.gz`` of a checkpoint directory, written atomically."""
        return make_archive(directory, archive)

    # ------------------------------------------------------------------ sampling
    def _rows_for(self, req: SampleRequest, seed: int) -> tuple[BaseModel, list[SampleRow]]:
        adapter: Adapter | None = None
        if req.model_id is not None:
            slot = self._slot(req.model_id)
            base = slot.base
            adapter = slot.adapter
            if req.base_model is not None and req.base_model != base.name:
                raise EngineInputError(
                    "base_model",
                    f"model {req.model_id!r} is built on {base.name!r}, not {req.base_model!r}",
                )
        elif req.base_model is not None:
            base = self._base(req.base_model)
        else:
            raise EngineInputError("model_id", "give a model_id or a base_model to sample from")
        cfg = base.config
        prompt = list(req.prompt)
        if not prompt or not all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < cfg.vocab_size
            for t in prompt
        ):
            raise EngineInputError(
                "prompt",
                f"must be a non-empty list of token ids in [0, {cfg.vocab_size})",
                "tokenize with this model's tokenizer",
            )

        def _int(name: str, value: Any, lo: int) -> int:
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise EngineInputError(
                    f"sampling_params.{name}", f"must be an integer >= {lo}, got {value!r}"
                )
            return value

        def _num(name: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise EngineInputError(f"sampling_params.{name}", f"must be a number: {value!r}")
            if not math.isfinite(value):
                raise EngineInputError(f"sampling_params.{name}", "must be finite")
            return float(value)

        max_tokens = _int("max_tokens", req.max_tokens, 1)
        num_samples = _int("num_samples", req.num_samples, 1)
        top_k = req.top_k if req.top_k is not None else -1
        if isinstance(top_k, bool) or not isinstance(top_k, int):
            raise EngineInputError(
                "sampling_params.top_k", f"must be an integer (-1 = off), got {top_k!r}"
            )
        temperature = _num("temperature", req.temperature)
        if temperature < 0:
            raise EngineInputError("sampling_params.temperature", "must be >= 0 (0 is greedy)")
        top_p = _num("top_p", req.top_p)
        if not 0 < top_p <= 1:
            raise EngineInputError("sampling_params.top_p", f"must be in (0, 1], got {top_p}")
        topk_prompt = _int("topk_prompt_logprobs", req.topk_prompt_logprobs, 0)
        if len(prompt) + max_tokens > cfg.max_position_embeddings:
            raise EngineInputError(
                "sampling_params.max_tokens",
                f"prompt ({len(prompt)} tokens) + max_tokens ({max_tokens}) exceeds the "
                f"context length {cfg.max_position_embeddings}",
                "lower max_tokens or shorten the prompt",
            )
        stop_ids = set()
        for t in req.stop_token_ids:
            if isinstance(t, bool) or not isinstance(t, int):
                raise EngineInputError("sampling_params.stop", f"bad stop token id {t!r}")
            stop_ids.add(t)
        if req.stop_at_eos:
            stop_ids.update(base.eos_token_ids)
        stop_strings = tuple(s for s in req.stop_strings)
        if any(not isinstance(s, str) or not s for s in stop_strings):
            raise EngineInputError("sampling_params.stop", "stop strings must be non-empty")
        if stop_strings and base.tokenizer is None:
            raise EngineInputError(
                "sampling_params.stop",
                f"stop strings need a tokenizer and {base.name!r} has none",
                "use stop token ids",
            )
        rows = [
            SampleRow(
                prompt=prompt,
                adapter=adapter,
                max_tokens=max_tokens,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                seed=(seed + i) % 2**63,
                stop_ids=frozenset(stop_ids),
                stop_strings=stop_strings,
                prompt_logprobs=bool(req.prompt_logprobs) and i == 0,
                topk_prompt_logprobs=topk_prompt if i == 0 else 0,
            )
            for i in range(num_samples)
        ]
        return base, rows

    @overload
    def sample_batch(
        self, requests: Sequence[SampleRequest], *, return_exceptions: Literal[False] = ...
    ) -> list[SampleResult]: ...

    @overload
    def sample_batch(
        self, requests: Sequence[SampleRequest], *, return_exceptions: Literal[True]
    ) -> list[SampleResult | Exception]: ...

    def sample_batch(
        self, requests: Sequence[SampleRequest], *, return_exceptions: bool = False
    ) -> list[SampleResult] | list[SampleResult | Exception]:
        """Run many sampling requests together (rows of the same base model are decoded in
        shared batches, whatever their adapters). Results come back in request order.

        With ``return_exceptions`` an invalid request yields its exception in its slot and
        the others still run; otherwise the first invalid request raises before anything
        runs.
        """
        with self._lock:
            prepared: list[tuple[BaseModel, list[SampleRow], int] | Exception] = []
            for req in requests:
                seed = req.seed if req.seed is not None else self._rng.randrange(2**62)
                try:
                    if isinstance(seed, bool) or not isinstance(seed, int):
                        raise EngineInputError("sampling_params.seed", f"bad seed {seed!r}")
                    base, rows = self._rows_for(req, seed)
                    prepared.append((base, rows, seed))
                except EngineInputError as exc:
                    if not return_exceptions:
                        raise
                    prepared.append(exc)
            # Group rows by base model, then decode in chunks of max_sample_rows.
            by_base: dict[str, list[tuple[int, int, SampleRow]]] = {}
            bases: dict[str, BaseModel] = {}
            for ri, item in enumerate(prepared):
                if isinstance(item, Exception):
                    continue
                base, rows, _ = item
                bases[base.name] = base
                by_base.setdefault(base.name, []).extend(
                    (ri, si, row) for si, row in enumerate(rows)
                )
            row_out: dict[tuple[int, int], Any] = {}
            for name, entries in by_base.items():
                base = bases[name]
                pad = base.config.pad_token_id if base.config.pad_token_id is not None else 0
                for start in range(0, len(entries), self.max_sample_rows):
                    chunk = entries[start : start + self.max_sample_rows]
                    outs = generate(
                        base.module,
                        [row for _, _, row in chunk],
                        tokenizer=base.tokenizer,
                        pad_id=pad,
                    )
                    for (ri, si, _), out in zip(chunk, outs, strict=True):
                        row_out[(ri, si)] = out
            results: list[SampleResult | Exception] = []
            for ri, item in enumerate(prepared):
                if isinstance(item, Exception):
                    results.append(item)
                    continue
                _, rows, seed = item
                outs = [row_out[(ri, si)] for si in range(len(rows))]
                results.append(
                    SampleResult(
                        sequences=[
                            SampledSequence(o.tokens, o.logprobs, o.stop_reason) for o in outs
                        ],
                        seed=seed,
                        prompt_logprobs=outs[0].prompt_logprobs,
                        topk_prompt_logprobs=outs[0].topk_prompt_logprobs,
                    )
                )
            return results

    def sample(self, request: SampleRequest) -> SampleResult:
        """One sampling request (see :meth:`sample_batch`)."""
        return self.sample_batch([request])[0]
