"""Tinker's built-in losses (protocol.md §3): per-token terms, summed, never averaged.

Notation per token i: ``lp`` is the learner logprob of ``target_tokens[i]``, ``q`` the
sampler logprob (input ``logprobs``), ``A`` the advantage, ``w`` the weight,
``r = exp(lp - q)`` and ``sg`` a stop-gradient.

=====================  =========================================================
``cross_entropy``      ``-w * lp``  (any real weights, negative ones included)
``importance_sampling``  ``-r * A``
``ppo``                ``-min(r * A, clip(r, lo, hi) * A)``
``cispo``              ``-sg(clip(r, lo, hi)) * A * lp``
``dro``                ``-(lp * A - beta / 2 * (lp - q)^2)``
=====================  =========================================================

The request loss is the sum of every term of every datum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from tinkex_server._engine.errors import EngineInputError

__all__ = [
    "CONFIG_DEFAULTS",
    "LOSS_FUNCTIONS",
    "REQUIRED_INPUTS",
    "elementwise_loss",
    "resolve_loss_config",
]

LOSS_FUNCTIONS = ("cross_entropy", "importance_sampling", "ppo", "cispo", "dro")

_RL_INPUTS = ("target_tokens", "logprobs", "advantages")

#: Inputs each loss needs (all with the shape of ``target_tokens``).
REQUIRED_INPUTS: dict[str, tuple[str, ...]] = {
    "cross_entropy": ("target_tokens", "weights"),
    "importance_sampling": _RL_INPUTS,
    "ppo": _RL_INPUTS,
    "cispo": _RL_INPUTS,
    "dro": _RL_INPUTS,
}

#: ``loss_fn_config`` keys each loss reads, with their defaults. Other keys are ignored.
CONFIG_DEFAULTS: dict[str, dict[str, float]] = {
    "cross_entropy": {},
    "importance_sampling": {},
    "ppo": {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2},
    "cispo": {"clip_low_threshold": 0.0, "clip_high_threshold": 4.0},
    "dro": {"beta": 0.05},
}


def check_loss_fn(loss_fn: str) -> None:
    """Raise a clear error for an unknown loss name."""
    if loss_fn not in LOSS_FUNCTIONS:
        raise EngineInputError(
            "loss_fn",
            f"unknown loss {loss_fn!r}",
            f"use one of {', '.join(LOSS_FUNCTIONS)}",
        )


def resolve_loss_config(loss_fn: str, config: Mapping[str, object] | None) -> dict[str, float]:
    """The effective config of ``loss_fn``: defaults overridden by ``config`` (unknown keys
    are ignored; known ones must be finite numbers; clip bounds must satisfy lo <= hi)."""
    check_loss_fn(loss_fn)
    out = dict(CONFIG_DEFAULTS[loss_fn])
    for key, value in (config or {}).items():
        if key not in out:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EngineInputError(
                f"loss_fn_config.{key}", f"must be a number, got {value!r}", "pass a float"
            )
        if not math.isfinite(float(value)):
            raise EngineInputError(f"loss_fn_config.{key}", f"must be finite, got {value!r}")
        out[key] = float(value)
    if "clip_low_threshold" in out and out["clip_low_threshold"] > out["clip_high_threshold"]:
        raise EngineInputError(
            "loss_fn_config.clip_low_threshold",
            f"{out['clip_low_threshold']} is above clip_high_threshold "
            f"{out['clip_high_threshold']}",
            "thresholds are absolute ratio bounds, e.g. 0.8 and 1.2",
        )
    return out


def elementwise_loss(
    loss_fn: str,
    lp: Tensor,
    inputs: Mapping[str, Tensor],
    config: Mapping[str, float],
) -> Tensor:
    """Per-token loss terms (same shape as ``lp``); the datum's loss is their sum."""
    if loss_fn == "cross_entropy":
        return -inputs["weights"] * lp
    q = inputs["logprobs"]
    adv = inputs["advantages"]
    if loss_fn == "dro":
        return -(lp * adv - 0.5 * config["beta"] * (lp - q).pow(2))
    ratio = torch.exp(lp - q)
    if loss_fn == "importance_sampling":
        return -ratio * adv
    lo, hi = config["clip_low_threshold"], config["clip_high_threshold"]
    clipped = ratio.clamp(lo, hi)
    if loss_fn == "ppo":
        return -torch.minimum(ratio * adv, clipped * adv)
    if loss_fn == "cispo":
        return -clipped.detach() * adv * lp
    check_loss_fn(loss_fn)
    raise AssertionError("unreachable")  # pragma: no cover
