"""The one validation of sampling parameters, used by the client and the server alike.

:class:`~tinkex_types.SamplingParams` parses the wire shape; :func:`check_sampling_params`
checks the same rules (both use :mod:`tinkex_types._numbers`: finite numbers, infinity
included; ``max_tokens >= 1``; 64-bit ranges; non-empty, unmixed stop lists), so a model
that validated passes it; it re-checks the values, so a model built with
``model_construct`` or mutated afterwards is caught.
Every error is a :class:`~tinkex_types.TinkexValidationError` naming the sub-field
(``sampling_params.temperature``) and the fix.

:func:`split_stop` and :func:`resolve_max_tokens` are the two steps a sampler takes next:
the stop list as strings and token ids, and the effective ``max_tokens`` for a prompt.
"""

from __future__ import annotations

from tinkex_types._errors import TinkexValidationError
from tinkex_types._numbers import INT64_MAX, INT64_MIN, check_float, check_int
from tinkex_types._params import SamplingParams, split_stop

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "check_sampling_params",
    "resolve_max_tokens",
    "split_stop",
]


def check_sampling_params(params: SamplingParams, field: str = "sampling_params") -> SamplingParams:
    """``params`` unchanged if a sampler can run it, else a :class:`TinkexValidationError`
    naming the sub-field (``f"{field}.top_p"``).

    * ``max_tokens``: ``None`` (the server's default) or an int in ``[1, 2**63)``; whether
      it fits the context is :func:`resolve_max_tokens`'s question (it needs the prompt).
    * ``seed``: ``None`` or a signed 64-bit int.
    * ``temperature``: a finite number ``>= 0`` (0 is greedy).
    * ``top_k``: an int ``>= -1`` (-1 and 0 disable it).
    * ``top_p``: a finite number in ``(0, 1]``.
    * ``stop``: see :func:`split_stop`.
    """
    if not isinstance(params, SamplingParams):
        raise TinkexValidationError(
            field,
            f"must be types.SamplingParams, got {type(params).__name__}",
            "pass types.SamplingParams(max_tokens=20)",
        )
    if params.max_tokens is not None:
        check_int(
            params.max_tokens, f"{field}.max_tokens", low=1, fix="use max_tokens >= 1, or None"
        )
    if params.seed is not None:
        check_int(params.seed, f"{field}.seed", fix="use a signed 64-bit integer, or None")
    check_float(params.temperature, f"{field}.temperature", ge=0.0, fix="use 0 (greedy) or more")
    check_int(params.top_k, f"{field}.top_k", low=-1, fix="use -1 (off) or a positive k")
    check_float(
        params.top_p, f"{field}.top_p", gt=0.0, le=1.0, fix="use a value in (0, 1]; 1 is off"
    )
    split_stop(params.stop, f"{field}.stop")
    return params


def resolve_max_tokens(
    params: SamplingParams,
    *,
    prompt_tokens: int,
    context_length: int,
    default: int,
    field: str = "sampling_params",
    prompt_field: str = "prompt",
) -> int:
    """The ``max_tokens`` to sample for a prompt of ``prompt_tokens`` tokens.

    ``None`` means ``min(default, room)``; an explicit value must fit the room the prompt
    leaves in the context (``prompt_tokens + max_tokens <= context_length``). A prompt that
    leaves no room is an error naming ``prompt_field``.
    """
    room = context_length - prompt_tokens
    if room < 1:
        raise TinkexValidationError(
            prompt_field,
            f"{prompt_tokens} tokens leave no room in the context ({context_length})",
            "shorten the prompt",
        )
    if params.max_tokens is None:
        return min(room, default)
    max_tokens = check_int(
        params.max_tokens, f"{field}.max_tokens", low=1, fix="use max_tokens >= 1"
    )
    if max_tokens > room:
        raise TinkexValidationError(
            f"{field}.max_tokens",
            f"{max_tokens} exceeds the room left in the context: prompt {prompt_tokens} "
            f"+ max_tokens must be <= {context_length}",
            f"use max_tokens <= {room}",
        )
    return max_tokens
