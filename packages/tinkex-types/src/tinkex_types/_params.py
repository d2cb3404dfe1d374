"""Parameters: AdamParams, LoraConfig, SamplingParams.

Every number is a strict number of :mod:`tinkex_types._numbers` (finite, integral where
integral, signed 64-bit): ``AdamParams(learning_rate=float("inf"))`` or
``LoraConfig(seed=2**70)`` is a validation error naming the field, on the client before
anything is sent and on the server (which decodes requests with these models) as a 4xx. An
explicit ``null`` for a number is refused too; omit the key to get the default.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Self

from pydantic import field_validator, model_validator
from pydantic_core import PydanticCustomError

from tinkex_types._base import WireModel
from tinkex_types._errors import TinkexValidationError
from tinkex_types._numbers import Int64, check_int, float_rule, int_rule

__all__ = ["DEFAULT_LORA_RANK", "AdamParams", "LoraConfig", "SamplingParams", "split_stop"]

DEFAULT_LORA_RANK = 32

_NonNegative = Annotated[float, float_rule(ge=0.0)]
_Beta = Annotated[float, float_rule(ge=0.0, lt=1.0)]


class AdamParams(WireModel):
    """AdamW hyper-parameters of ``optim_step`` (missing keys take these defaults)."""

    learning_rate: _NonNegative = 1e-4
    beta1: _Beta = 0.9
    beta2: _Beta = 0.95
    eps: Annotated[float, float_rule(gt=0.0)] = 1e-12
    weight_decay: _NonNegative = 0.0
    grad_clip_norm: _NonNegative = 0.0
    """Global-norm gradient clipping; 0 means none."""


class LoraConfig(WireModel):
    """LoRA adapter settings of ``create_model``; all five keys are always sent."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"seed"})

    rank: Annotated[int, int_rule(ge=1)] = DEFAULT_LORA_RANK
    seed: Int64 | None = None
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


def split_stop(
    stop: object, field: str = "sampling_params.stop"
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """``stop`` as (stop strings, stop token ids), checked.

    ``None`` or ``[]``: no stops. A string, a list of non-empty strings, or a list of token
    ids in ``[0, 2**63)``; a list may not mix strings and ids.
    """
    if stop is None:
        return (), ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list | tuple):
        raise TinkexValidationError(
            field,
            f"must be a string or a list, got {type(stop).__name__}",
            "pass a string, a list of strings or a list of token ids",
        )
    strings: list[str] = []
    ids: list[int] = []
    for i, item in enumerate(stop):
        where = f"{field}[{i}]"
        if isinstance(item, str):
            if not item:
                raise TinkexValidationError(where, "is an empty string", "remove it")
            strings.append(item)
        else:
            ids.append(check_int(item, where, low=0, fix="stop token ids are ints >= 0"))
        if strings and ids:
            raise TinkexValidationError(
                field,
                "mixes strings and token ids",
                "pass either a list of strings or a list of token ids",
            )
    return tuple(strings), tuple(ids)


class SamplingParams(WireModel):
    """Sampling settings; every key is optional. ``stop`` is a string, a list of strings or
    a list of token ids.

    The model refuses what :func:`tinkex_types.check_sampling_params` refuses (that
    function re-checks instances built with ``model_construct`` or changed afterwards).
    """

    max_tokens: Annotated[int, int_rule(ge=1, fix="use max_tokens >= 1, or None")] | None = None
    seed: Int64 | None = None
    stop: str | list[str] | list[int] | None = None
    temperature: Annotated[float, float_rule(ge=0.0, fix="use 0 (greedy) or more")] = 1.0
    top_k: Annotated[int, int_rule(ge=-1, fix="use -1 (off) or a positive k")] = -1
    """-1 disables top-k."""
    top_p: Annotated[float, float_rule(gt=0.0, le=1.0, fix="1 is off")] = 1.0

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, value: object) -> object:
        try:
            strings, ids = split_stop(value, "stop")
        except TinkexValidationError as exc:
            raise PydanticCustomError("tinkex_stop", "{problem}", {"problem": str(exc)}) from None
        if value is None or isinstance(value, str):
            return value
        return list(strings) if strings else list(ids)
