"""Hand-rolled multi-adapter LoRA over a frozen :class:`DecoderLM`.

An :class:`Adapter` holds, for each targeted projection ``W`` (``out x in``), a pair
``A`` (``rank x in``) and ``B`` (``out x rank``); the projection becomes
``x W^T + (alpha / rank) * (x A^T) B^T``. ``A`` starts uniform in ``±1/sqrt(in)`` (Kaiming
uniform with ``a=sqrt(5)``, PEFT's default) drawn from a ``torch.Generator`` seeded with the
LoRA seed, ``B`` starts at zero, so a fresh adapter leaves the model unchanged.

Targets follow Tinker's LoraConfig: ``train_attn`` -> q/k/v/o, ``train_mlp`` ->
gate/up/down, ``train_unembed`` -> ``lm_head`` (the output projection; with tied embeddings
only the unembedding use of the matrix is adapted).

Exported names follow PEFT: ``base_model.model.<hf module path>.lora_A.weight`` (shape
``rank x in``) and ``...lora_B.weight`` (``out x rank``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinkex_server._engine.errors import EngineInputError
from tinkex_server._engine.model import DecoderLM

__all__ = [
    "ATTN_MODULES",
    "LORA_MODULES",
    "MLP_MODULES",
    "Adapter",
    "LoraSpec",
    "RowLora",
    "SingleLora",
    "peft_key",
]

ATTN_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
#: Every projection an adapter may target, in the engine's order.
LORA_MODULES = (*ATTN_MODULES, *MLP_MODULES, "lm_head")
_PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LoraSpec:
    """Everything that shapes an adapter. ``seed`` is always concrete here (the engine draws
    one when the caller gives none, and records it)."""

    rank: int
    alpha: float
    seed: int
    train_attn: bool = True
    train_mlp: bool = True
    train_unembed: bool = True
    #: An explicit subset of projections (short names), e.g. an imported PEFT adapter's
    #: ``("q_proj", "v_proj")``; ``None`` means the train_* groups.
    modules: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.modules is not None:
            unknown = sorted(set(self.modules) - set(LORA_MODULES))
            if unknown or not self.modules:
                raise EngineInputError(
                    "lora_config.target_modules",
                    f"unknown or empty target modules {unknown or list(self.modules)}",
                    f"use names from {', '.join(LORA_MODULES)}",
                )
            groups = set(self.modules)
            object.__setattr__(self, "modules", tuple(m for m in LORA_MODULES if m in groups))
            object.__setattr__(self, "train_attn", bool(groups & set(ATTN_MODULES)))
            object.__setattr__(self, "train_mlp", bool(groups & set(MLP_MODULES)))
            object.__setattr__(self, "train_unembed", "lm_head" in groups)
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise EngineInputError(
                "lora_config.rank", f"must be a positive integer, got {self.rank!r}"
            )
        if not (self.train_attn or self.train_mlp or self.train_unembed):
            raise EngineInputError(
                "lora_config",
                "train_attn, train_mlp and train_unembed are all false: nothing to train",
                "set at least one of them to true",
            )
        if not math.isfinite(self.alpha) or self.alpha <= 0:
            raise EngineInputError("lora_alpha", f"must be a positive number, got {self.alpha}")

    @property
    def scale(self) -> float:
        """``alpha / rank``."""
        return self.alpha / self.rank

    def wants(self, short_name: str) -> bool:
        """Whether a projection with this short name (``q_proj``, ``lm_head``...) is adapted."""
        if self.modules is not None:
            return short_name in self.modules
        if short_name in ATTN_MODULES:
            return self.train_attn
        if short_name in MLP_MODULES:
            return self.train_mlp
        if short_name == "lm_head":
            return self.train_unembed
        return False

    def target_modules(self) -> list[str]:
        """Short names of the adapted projections (PEFT's ``target_modules``)."""
        if self.modules is not None:
            return list(self.modules)
        names: list[str] = []
        if self.train_attn:
            names.extend(ATTN_MODULES)
        if self.train_mlp:
            names.extend(MLP_MODULES)
        if self.train_unembed:
            names.append("lm_head")
        return names


def peft_key(module_key: str, which: str) -> str:
    """PEFT tensor name of ``lora_A``/``lora_B`` for a Hugging Face module path."""
    return f"{_PEFT_PREFIX}{module_key}.{which}.weight"


class Adapter:
    """One LoRA adapter over a base model: its tensors and spec (no optimizer state)."""

    def __init__(
        self,
        base_model: str,
        model: DecoderLM,
        spec: LoraSpec,
        *,
        trainable: bool = True,
    ) -> None:
        self.base_model = base_model
        self.spec = spec
        self.trainable = trainable
        self.scale = spec.scale
        gen = torch.Generator().manual_seed(spec.seed % 2**63)
        drawn: list[tuple[str, Tensor, Tensor]] = []
        for key, short, fan_in, fan_out in model.lora_targets():
            if not spec.wants(short):
                continue
            bound = 1.0 / math.sqrt(fan_in)
            a = (torch.rand(spec.rank, fan_in, generator=gen) * 2 - 1) * bound
            drawn.append((key, a, torch.zeros(fan_out, spec.rank)))
        # Every tensor is a view of one flat buffer, in parameters() order, so the optimizer
        # updates the whole adapter with a handful of ops.
        flat = torch.cat([t.reshape(-1) for _, a, b in drawn for t in (a, b)] or [torch.zeros(0)])
        self.params: dict[str, tuple[nn.Parameter, nn.Parameter]] = {}
        offset = 0
        for key, a, b in drawn:
            views = []
            for t in (a, b):
                views.append(flat[offset : offset + t.numel()].view(t.shape))
                offset += t.numel()
            self.params[key] = (
                nn.Parameter(views[0], requires_grad=trainable),
                nn.Parameter(views[1], requires_grad=trainable),
            )

    def parameters(self) -> list[nn.Parameter]:
        """All tensors, in a fixed order (A then B per projection)."""
        out: list[nn.Parameter] = []
        for a, b in self.params.values():
            out.extend((a, b))
        return out

    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(peft name, tensor)`` pairs in :meth:`parameters` order."""
        out: list[tuple[str, nn.Parameter]] = []
        for key, (a, b) in self.params.items():
            out.append((peft_key(key, "lora_A"), a))
            out.append((peft_key(key, "lora_B"), b))
        return out

    def num_parameters(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters())

    def state_dict(self) -> dict[str, Tensor]:
        """Detached copies of every tensor under its PEFT name."""
        return {name: p.detach().clone().contiguous() for name, p in self.named_parameters()}

    def load_state_dict(self, tensors: Mapping[str, Tensor], *, source: str) -> None:
        """Copy tensors (PEFT names) into this adapter; names and shapes must match exactly."""
        expected = dict(self.named_parameters())
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing or extra:
            raise EngineInputError(
                source,
                f"adapter tensors do not match this model's LoRA config "
                f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''})",
                "load a checkpoint saved with the same base model, rank and train_* flags",
            )
        for name, param in expected.items():
            value = tensors[name]
            if tuple(value.shape) != tuple(param.shape):
                raise EngineInputError(
                    source,
                    f"tensor {name} has shape {tuple(value.shape)}, expected {tuple(param.shape)}",
                    "load a checkpoint saved with the same base model and rank",
                )
        with torch.no_grad():
            for name, param in expected.items():
                param.copy_(tensors[name].to(torch.float32))

    def zero_grad(self) -> None:
        """Drop accumulated gradients."""
        for p in self.parameters():
            p.grad = None

    def context(self) -> SingleLora:
        """A :class:`SingleLora` applying this adapter to a whole batch."""
        return SingleLora(self)


class SingleLora:
    """One adapter for every row of the batch (training and ``forward``)."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    def delta(self, key: str, x: Tensor) -> Tensor | None:
        pair = self.adapter.params.get(key)
        if pair is None:
            return None
        a, b = pair
        return F.linear(F.linear(x, a), b) * self.adapter.scale

    def factors(self, keys: Sequence[str], outs: Sequence[int]) -> tuple[Tensor, Tensor] | None:
        """``(A, B)`` of ``keys`` stacked for one fused matmul: ``A`` ``[sum r, in]`` (the
        adapted keys' rows), ``B`` ``[sum outs, sum r]`` block-diagonal, scale folded in."""
        pairs = [self.adapter.params.get(key) for key in keys]
        if all(pair is None for pair in pairs):
            return None
        scale = self.adapter.scale
        if len(keys) == 1:
            a, b = pairs[0]  # type: ignore[misc]
            return a, b * scale
        a_rows: list[Tensor] = [pair[0] for pair in pairs if pair is not None]
        # A projection of the group without an adapter is an [out, 0] block.
        blocks = [
            pair[1] * scale if pair is not None else torch.zeros(out, 0)
            for pair, out in zip(pairs, outs, strict=True)
        ]
        return torch.cat(a_rows), torch.block_diag(*blocks)  # type: ignore[no-untyped-call]


class RowLora:
    """A possibly different adapter per batch row (``None`` = base model), for sampling.

    Rows sharing an adapter are computed together with the same ops as :class:`SingleLora`.
    """

    def __init__(self, adapters: Sequence[Adapter | None]) -> None:
        self.adapters = list(adapters)
        groups: dict[int, tuple[Adapter, list[int]]] = {}
        for row, adapter in enumerate(self.adapters):
            if adapter is not None:
                groups.setdefault(id(adapter), (adapter, []))[1].append(row)
        self._groups = [(ad, torch.tensor(rows)) for ad, rows in groups.values()]
        self._all_rows = len(self._groups) == 1 and len(self._groups[0][1]) == len(self.adapters)

    def select(self, rows: Sequence[int]) -> RowLora:
        """The context for a subset of rows, in the given order."""
        return RowLora([self.adapters[r] for r in rows])

    def delta(self, key: str, x: Tensor) -> Tensor | None:
        if not self._groups:
            return None
        if self._all_rows:
            return SingleLora(self._groups[0][0]).delta(key, x)
        out: Tensor | None = None
        for adapter, rows in self._groups:
            pair = adapter.params.get(key)
            if pair is None:
                continue
            a, b = pair
            part = F.linear(F.linear(x.index_select(0, rows), a), b) * adapter.scale
            if out is None:
                out = x.new_zeros((*x.shape[:-1], b.shape[0]))
            out[rows] = part
        return out
