"""tinker 0.38's sampling extras on the client side: checking the arguments before anything
is sent (errors name the argument) and checking that the server honoured them (a server
that predates a field ignores it; the caller then gets an error, not silently less)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tinkex_clients._validate import as_non_negative_int
from tinkex_types import SampleResponse, TensorData, TinkexError, TinkexValidationError

__all__ = ["SampleExtras", "as_extras", "check_honoured"]


@dataclass(frozen=True)
class SampleExtras:
    """The checked extras of one sample request (the :class:`SampleRequest` fields)."""

    topk_sample_logprobs: int = 0
    target_prompt_logprobs: TensorData | None = None
    prompt_alt_tokens_k: int = 0
    prompt_logprobs_last_n: int | None = None

    def fields(self) -> dict[str, Any]:
        return {
            "topk_sample_logprobs": self.topk_sample_logprobs,
            "target_prompt_logprobs": self.target_prompt_logprobs,
            "prompt_alt_tokens_k": self.prompt_alt_tokens_k,
            "prompt_logprobs_last_n": self.prompt_logprobs_last_n,
        }


def _as_target(value: Any) -> TensorData | None:
    field = "target_prompt_logprobs"
    if value is None:
        return None
    if isinstance(value, TensorData):
        tensor = value
    elif hasattr(value, "detach") and hasattr(value, "cpu"):
        tensor = TensorData.from_torch(value)
    elif hasattr(value, "__array__") and hasattr(value, "dtype"):
        tensor = TensorData.from_numpy(value)
    else:
        raise TinkexValidationError(
            field,
            f"must be a TensorData of int64 token ids, got {type(value).__name__}",
            "build it with TensorData.from_torch(ids) (shape [len(prompt) - 1, K], -1 = none)",
        )
    if tensor.dtype != "int64":
        raise TinkexValidationError(
            field, f"must be an int64 tensor of token ids, got {tensor.dtype}", "use int64 ids"
        )
    if len(tensor.effective_shape) != 2:
        raise TinkexValidationError(
            field,
            f"must be 2-D, [len(prompt) - 1, K], got shape {tensor.effective_shape}",
            "give one row per prompt position after the first",
        )
    return tensor


def as_extras(
    include_prompt_logprobs: bool,
    topk_sample_logprobs: Any,
    target_prompt_logprobs: Any,
    prompt_alt_tokens_k: Any,
    prompt_logprobs_last_n: Any,
) -> SampleExtras:
    """The extras, checked as tinker 0.38 checks them before sending."""
    last_n: int | None = None
    if prompt_logprobs_last_n is not None:
        if (
            isinstance(prompt_logprobs_last_n, bool)
            or not isinstance(prompt_logprobs_last_n, int)
            or prompt_logprobs_last_n < 1
        ):
            raise TinkexValidationError(
                "prompt_logprobs_last_n",
                f"must be an int >= 1 or None, got {prompt_logprobs_last_n!r}",
                "give how many of the last prompt tokens to score",
            )
        if not include_prompt_logprobs:
            raise TinkexValidationError(
                "prompt_logprobs_last_n",
                "applies to prompt logprobs, and include_prompt_logprobs is False",
                "set include_prompt_logprobs=True",
            )
        last_n = prompt_logprobs_last_n
    return SampleExtras(
        topk_sample_logprobs=as_non_negative_int(topk_sample_logprobs, "topk_sample_logprobs"),
        target_prompt_logprobs=_as_target(target_prompt_logprobs),
        prompt_alt_tokens_k=as_non_negative_int(prompt_alt_tokens_k, "prompt_alt_tokens_k"),
        prompt_logprobs_last_n=last_n,
    )


def check_honoured(response: SampleResponse, extras: SampleExtras) -> None:
    """Raise when the server ignored an extra that was asked for."""
    k = extras.prompt_alt_tokens_k
    if k > 0 and response.prompt_alt_tokens is None:
        raise TinkexError(
            f"prompt_alt_tokens_k={k} was requested but the server returned no "
            "prompt_alt_tokens (it may predate the field)"
        )
    if extras.target_prompt_logprobs is not None and response.target_prompt_logprobs is None:
        raise TinkexError(
            "target_prompt_logprobs was requested but the server returned none "
            "(it may predate the field)"
        )
    if extras.topk_sample_logprobs > 0 and any(s.topk_logprobs is None for s in response.sequences):
        raise TinkexError(
            f"topk_sample_logprobs={extras.topk_sample_logprobs} was requested but the server "
            "returned no top-k logprobs for the sampled tokens (it may predate the field)"
        )
    last_n = extras.prompt_logprobs_last_n
    logprobs = response.prompt_logprobs
    if (
        last_n is not None
        and logprobs is not None
        and any(lp is not None for lp in logprobs[: len(logprobs) - last_n])
    ):
        raise TinkexError(
            f"prompt_logprobs_last_n={last_n} was requested but the server returned prompt "
            "logprobs before that suffix (it may predate the field)"
        )
