"""Parameters: AdamParams, LoraConfig, SamplingParams."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import Field, model_validator

from tinkex_types._base import WireModel

__all__ = ["DEFAULT_LORA_RANK", "AdamParams", "LoraConfig", "SamplingParams"]

DEFAULT_LORA_RANK = 32


class AdamParams(WireModel):
    """AdamW hyper-parameters of ``optim_step`` (missing keys take these defaults)."""

    learning_rate: float = Field(default=1e-4, ge=0.0)
    beta1: float = Field(default=0.9, ge=0.0, lt=1.0)
    beta2: float = Field(default=0.95, ge=0.0, lt=1.0)
    eps: float = Field(default=1e-12, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    grad_clip_norm: float = Field(default=0.0, ge=0.0)
    """Global-norm gradient clipping; 0 means none."""


class LoraConfig(WireModel):
    """LoRA adapter settings of ``create_model``; all five keys are always sent."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"seed"})

    rank: int = Field(default=DEFAULT_LORA_RANK, gt=0)
    seed: int | None = None
    """``None``: random initialisation."""
    train_mlp: bool = True
    train_attn: bool = True
    train_unembed: bool = True

    @model_validator(mode="after")
    def _something_trains(self) -> Self:
        if not (self.train_mlp or self.train_attn or self.train_unembed):
            raise ValueError(
                "train_mlp, train_attn and train_unembed are all false: set at least one true"
            )
        return self


class SamplingParams(WireModel):
    """Sampling settings; every key is optional. ``stop`` is a string, a list of strings or
    a list of token ids."""

    max_tokens: int | None = Field(default=None, ge=0)
    seed: int | None = None
    stop: str | list[str] | list[int] | None = None
    temperature: float = Field(default=1.0, ge=0.0)
    top_k: int = Field(default=-1, ge=-1)
    """-1 disables top-k."""
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
