"""The loss table: one definition of every loss the protocol knows.

Client validation, the wire codecs and the local server all read this table; the server
looks its implementations up by the same names. Adding a loss is one :class:`LossSpec`
entry here plus one implementation in the server (docs/architecture.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from tinkex_types._errors import TinkexValidationError

__all__ = ["LOSSES", "PER_TOKEN_INPUTS", "LossSpec", "loss_spec", "resolve_loss_config"]

#: Inputs that, when present, carry one value per target token (same shape as targets).
PER_TOKEN_INPUTS: tuple[str, ...] = ("weights", "logprobs", "advantages", "sequence_ratio_mask")


@dataclass(frozen=True)
class LossSpec:
    """One loss: its wire name, the ``loss_fn_inputs`` it needs and may take, and the
    ``loss_fn_config`` keys it reads with their defaults (other keys are ignored)."""

    name: str
    required_inputs: tuple[str, ...]
    optional_inputs: tuple[str, ...] = ()
    config_defaults: Mapping[str, float] = field(default_factory=dict)
    #: The first official client generation that can send it ("0.16" = the JSON one).
    since: str = "0.16"
    #: Config keys that must satisfy ``low <= high`` (named after the low key).
    ordered_pairs: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "config_defaults", MappingProxyType(dict(self.config_defaults)))


_RL = ("target_tokens", "logprobs", "advantages")
_CLIP = (("clip_low_threshold", "clip_high_threshold"),)

#: Every loss, by wire name (protocol.md §2.8 and §4.3).
LOSSES: Mapping[str, LossSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            LossSpec("cross_entropy", ("target_tokens", "weights")),
            LossSpec("importance_sampling", _RL),
            LossSpec(
                "ppo",
                _RL,
                config_defaults={"clip_low_threshold": 0.8, "clip_high_threshold": 1.2},
                ordered_pairs=_CLIP,
            ),
            LossSpec(
                "cispo",
                _RL,
                config_defaults={"clip_low_threshold": 0.0, "clip_high_threshold": 4.0},
                ordered_pairs=_CLIP,
            ),
            LossSpec("dro", _RL, config_defaults={"beta": 0.05}),
            # GSPO-token: one sequence-level ratio over the tokens sequence_ratio_mask marks
            # (all of them without it). The defaults are the GSPO paper's clip ranges
            # (3e-4 below, 4e-4 above 1); the service's own defaults are unpublished.
            LossSpec(
                "gspo",
                _RL,
                optional_inputs=("sequence_ratio_mask",),
                config_defaults={"clip_low_threshold": 0.9997, "clip_high_threshold": 1.0004},
                since="0.38",
                ordered_pairs=_CLIP,
            ),
        )
    }
)


def loss_spec(name: object, field: str = "loss_fn") -> LossSpec:
    """The spec of ``name``, or a :class:`TinkexValidationError` naming ``field``."""
    spec = LOSSES.get(name) if isinstance(name, str) else None
    if spec is None:
        raise TinkexValidationError(
            field, f"unknown loss {name!r}", f"use one of {', '.join(LOSSES)}"
        )
    return spec


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TinkexValidationError(where, f"must be a number, got {value!r}", "pass a float")
    try:
        number = float(value)
    except ValueError:
        raise TinkexValidationError(
            where, f"must be a number, got {value!r}", "pass a float"
        ) from None
    if not math.isfinite(number):
        raise TinkexValidationError(where, f"must be finite, got {value!r}", "pass a finite float")
    return number


def resolve_loss_config(
    loss_fn: object,
    config: Mapping[str, object] | None,
    field: str = "loss_fn_config",
) -> dict[str, float]:
    """The effective config of ``loss_fn``: its defaults overridden by ``config``.

    Unknown keys are ignored (protocol.md §2.8); known ones must be finite numbers (numeric
    strings are accepted); ordered pairs such as the clip thresholds must satisfy
    ``low <= high``.
    """
    spec = loss_spec(loss_fn)
    out = dict(spec.config_defaults)
    for key, value in (config or {}).items():
        if key in out:
            out[key] = _number(value, f"{field}.{key}")
    for low, high in spec.ordered_pairs:
        if out[low] > out[high]:
            raise TinkexValidationError(
                f"{field}.{low}",
                f"{out[low]} is above {high} {out[high]}",
                "thresholds are absolute ratio bounds, e.g. 0.8 and 1.2",
            )
    return out
