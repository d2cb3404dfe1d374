"""The server's implementations of Tinker's built-in losses (protocol.md §3, §4.3).

The loss *table* (names, required and optional ``loss_fn_inputs``, ``loss_fn_config`` keys
and defaults) is :data:`tinkex_types.LOSSES`; this module only holds one function per loss
name in :data:`LOSS_IMPLEMENTATIONS`. Adding a loss is one ``LossSpec`` in tinkex-types plus
one function registered here (docs/architecture.md).

Every function returns per-token loss terms (the shape of ``lp``); the datum's loss is their
sum and the request loss is the sum over datums, never a mean. Notation per token i: ``lp``
is the learner logprob of ``target_tokens[i]``, ``q`` the sampler logprob (input
``logprobs``), ``A`` the advantage, ``w`` the weight, ``r = exp(lp - q)`` and ``sg`` a
stop-gradient.

=====================  =========================================================
``cross_entropy``      ``-w * lp``  (any real weights, negative ones included)
``importance_sampling``  ``-r * A``
``ppo``                ``-min(r * A, clip(r, lo, hi) * A)``
``cispo``              ``-sg(clip(r, lo, hi)) * A * lp``
``dro``                ``-(lp * A - beta / 2 * (lp - q)^2)``
``gspo``               ``-min(s_t * A, clip(s_t, lo, hi) * A)`` with the sequence ratio
                       ``s = exp(mean over M of (lp - q))`` (``M``: tokens where
                       ``sequence_ratio_mask != 0``, all tokens when it is absent) and
                       ``s_t = sg(s) * exp(lp - sg(lp))`` (GSPO-token: the value of ``s``,
                       the gradient of the token's own ``lp``)
=====================  =========================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

import tinkex_types._losses as loss_table
from tinkex_server._engine.errors import EngineInputError
from tinkex_types import LossSpec, TinkexValidationError, loss_spec, resolve_loss_config

__all__ = [
    "LOSS_IMPLEMENTATIONS",
    "LossImplementation",
    "check_loss_inputs",
    "elementwise_loss",
    "engine_loss_config",
    "engine_loss_spec",
    "implemented_losses",
    "loss_is_elementwise",
    "register_loss",
]

#: ``(lp, inputs, config) -> per-token loss``. ``inputs`` holds the float inputs of the
#: loss's spec (required ones always, optional ones when given), each the shape of ``lp``;
#: ``config`` is the loss's resolved ``loss_fn_config``.
LossImplementation = Callable[[Tensor, Mapping[str, Tensor], Mapping[str, float]], Tensor]

#: The server's implementation of every loss in :data:`tinkex_types.LOSSES`, by name.
LOSS_IMPLEMENTATIONS: dict[str, LossImplementation] = {}

#: Losses whose every term depends only on its own token's values (no sum or mean over a
#: sequence): the engine computes them over a whole chunk of datums at once.
_ELEMENTWISE: set[str] = set()


def register_loss(
    name: str, *, elementwise: bool = False
) -> Callable[[LossImplementation], LossImplementation]:
    """Decorator: register ``fn`` as the implementation of the loss ``name``.

    ``elementwise``: each term is a function of its own token's ``lp`` and inputs only, so
    the terms of several datums may be computed from their concatenation."""

    def add(fn: LossImplementation) -> LossImplementation:
        LOSS_IMPLEMENTATIONS[name] = fn
        if elementwise:
            _ELEMENTWISE.add(name)
        else:
            _ELEMENTWISE.discard(name)
        return fn

    return add


def loss_is_elementwise(name: str) -> bool:
    """Whether ``name`` was registered as ``elementwise`` (see :func:`register_loss`)."""
    return name in _ELEMENTWISE


def implemented_losses() -> list[str]:
    """Names in :data:`tinkex_types.LOSSES` that this server implements, in table order."""
    return [name for name in loss_table.LOSSES if name in LOSS_IMPLEMENTATIONS]


def _as_engine_error(exc: TinkexValidationError) -> EngineInputError:
    return EngineInputError(exc.field, exc.problem, exc.fix)


def engine_loss_spec(loss_fn: object) -> LossSpec:
    """The table entry of ``loss_fn``; unknown names, and names this server has no
    implementation of, raise :class:`EngineInputError` on ``loss_fn``."""
    try:
        spec = loss_spec(loss_fn, "loss_fn")
    except TinkexValidationError as exc:
        raise _as_engine_error(exc) from None
    if spec.name not in LOSS_IMPLEMENTATIONS:
        raise EngineInputError(
            "loss_fn",
            f"loss {spec.name!r} is not implemented by this server",
            f"use one of {', '.join(implemented_losses())}",
        )
    return spec


def engine_loss_config(loss_fn: str, config: Mapping[str, object] | None) -> dict[str, float]:
    """:func:`tinkex_types.resolve_loss_config`, raising :class:`EngineInputError`."""
    engine_loss_spec(loss_fn)
    try:
        return resolve_loss_config(loss_fn, config, "loss_fn_config")
    except TinkexValidationError as exc:
        raise _as_engine_error(exc) from None


def check_loss_inputs(spec: LossSpec, inputs: Mapping[str, Tensor], where: str) -> None:
    """Checks a loss needs beyond one-value-per-token (run before any gradient)."""
    mask = inputs.get("sequence_ratio_mask")
    if spec.name == "gspo" and mask is not None and not bool((mask != 0).any()):
        raise EngineInputError(
            f"{where}.loss_fn_inputs.sequence_ratio_mask",
            "marks no token, so the sequence ratio is undefined",
            "mark the sampled tokens with 1 (or leave the mask out to use every token)",
        )


def elementwise_loss(
    loss_fn: str,
    lp: Tensor,
    inputs: Mapping[str, Tensor],
    config: Mapping[str, float],
) -> Tensor:
    """Per-token loss terms of ``loss_fn`` (same shape as ``lp``)."""
    return LOSS_IMPLEMENTATIONS[loss_fn](lp, inputs, config)


def _ratio(lp: Tensor, inputs: Mapping[str, Tensor]) -> Tensor:
    return torch.exp(lp - inputs["logprobs"])


def _clip(ratio: Tensor, config: Mapping[str, float]) -> Tensor:
    return ratio.clamp(config["clip_low_threshold"], config["clip_high_threshold"])


@register_loss("cross_entropy", elementwise=True)
def _cross_entropy(lp: Tensor, inputs: Mapping[str, Tensor], _: Mapping[str, float]) -> Tensor:
    return -inputs["weights"] * lp


@register_loss("importance_sampling", elementwise=True)
def _importance_sampling(
    lp: Tensor, inputs: Mapping[str, Tensor], _: Mapping[str, float]
) -> Tensor:
    return -_ratio(lp, inputs) * inputs["advantages"]


def _clipped_surrogate(ratio: Tensor, adv: Tensor, config: Mapping[str, float]) -> Tensor:
    return -torch.minimum(ratio * adv, _clip(ratio, config) * adv)


@register_loss("ppo", elementwise=True)
def _ppo(lp: Tensor, inputs: Mapping[str, Tensor], config: Mapping[str, float]) -> Tensor:
    return _clipped_surrogate(_ratio(lp, inputs), inputs["advantages"], config)


@register_loss("cispo", elementwise=True)
def _cispo(lp: Tensor, inputs: Mapping[str, Tensor], config: Mapping[str, float]) -> Tensor:
    clipped = _clip(_ratio(lp, inputs), config)
    return -clipped.detach() * inputs["advantages"] * lp


@register_loss("dro", elementwise=True)
def _dro(lp: Tensor, inputs: Mapping[str, Tensor], config: Mapping[str, float]) -> Tensor:
    q, adv = inputs["logprobs"], inputs["advantages"]
    return -(lp * adv - 0.5 * config["beta"] * (lp - q).pow(2))


@register_loss("gspo")
def _gspo(lp: Tensor, inputs: Mapping[str, Tensor], config: Mapping[str, float]) -> Tensor:
    mask = inputs.get("sequence_ratio_mask")
    log_ratio = lp.detach() - inputs["logprobs"]
    in_ratio = mask != 0 if mask is not None else torch.ones_like(lp, dtype=torch.bool)
    sequence_log_ratio = log_ratio[in_ratio].mean()
    ratio = torch.exp(sequence_log_ratio + lp - lp.detach())
    return _clipped_surrogate(ratio, inputs["advantages"], config)
