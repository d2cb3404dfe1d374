"""The one validation of sampling parameters, used by the client and the server alike.

:class:`~tinkex_types.SamplingParams` parses the wire shape; :func:`check_sampling_params`
adds every rule a sampler needs and pydantic does not enforce (finite numbers, infinity
included; ``max_tokens >= 1``; 64-bit ranges; non-empty, unmixed stop lists). It re-checks
the types too, so a model built with ``model_construct`` or mutated afterwards is caught.
Every error is a :class:`~tinkex_types.TinkexValidationError` naming the sub-field
(``sampling_params.temperature``) and the fix.

:func:`split_stop` and :func:`resolve_max_tokens` are the two steps a sampler takes next:
the stop list as strings and token ids, and the effective ``max_tokens`` for a prompt.
"""

from __future__ import annotations

import math

from tinkex_types._errors import TinkexValidationError
from tinkex_types._params import SamplingParams

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "check_sampling_params",
    "resolve_max_tokens",
    "split_stop",
]

#: The signed 64-bit range every integer of the protocol fits (protobuf ``int64``).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _int(value: object, where: str, low: int, fix: str) -> int:
    """An ``int`` (never a ``bool``) in ``[low, INT64_MAX]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TinkexValidationError(where, f"must be an integer, got {value!r}", fix)
    if not low <= value <= INT64_MAX:
        raise TinkexValidationError(where, f"{value} is out of range [{low}, 2**63)", fix)
    return value


def _finite(value: object, where: str, fix: str) -> float:
    """A finite ``int``/``float`` (never a ``bool``, NaN or infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TinkexValidationError(where, f"must be a number, got {value!r}", fix)
    number = float(value)
    if not math.isfinite(number):
        raise TinkexValidationError(where, f"must be finite, got {value!r}", fix)
    return number


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
            ids.append(_int(item, where, 0, "stop token ids are ints >= 0"))
        if strings and ids:
            raise TinkexValidationError(
                field,
                "mixes strings and token ids",
                "pass either a list of strings or a list of token ids",
            )
    return tuple(strings), tuple(ids)


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
        _int(params.max_tokens, f"{field}.max_tokens", 1, "use max_tokens >= 1, or None")
    if params.seed is not None:
        _int(params.seed, f"{field}.seed", INT64_MIN, "use a signed 64-bit integer, or None")
    temperature = _finite(params.temperature, f"{field}.temperature", "use 0 (greedy) or more")
    if temperature < 0:
        raise TinkexValidationError(
            f"{field}.temperature", f"must be >= 0, got {temperature}", "use 0 (greedy) or more"
        )
    _int(params.top_k, f"{field}.top_k", -1, "use -1 (off) or a positive k")
    top_p = _finite(params.top_p, f"{field}.top_p", "use a value in (0, 1]; 1 is off")
    if not 0 < top_p <= 1:
        raise TinkexValidationError(
            f"{field}.top_p", f"must be in (0, 1], got {top_p}", "use a value in (0, 1]; 1 is off"
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
    max_tokens = _int(params.max_tokens, f"{field}.max_tokens", 1, "use max_tokens >= 1")
    if max_tokens > room:
        raise TinkexValidationError(
            f"{field}.max_tokens",
            f"{max_tokens} exceeds the room left in the context: prompt {prompt_tokens} "
            f"+ max_tokens must be <= {context_length}",
            f"use max_tokens <= {room}",
        )
    return max_tokens
