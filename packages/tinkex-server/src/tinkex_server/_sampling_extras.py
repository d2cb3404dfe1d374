"""The tinker 0.38 extras of a sample request, checked (400 naming the field) and answered.

* ``prompt_logprobs_last_n``: between 1 and ``len(prompt) - 1``; needs prompt logprobs
  (``prompt_logprobs`` or ``topk_prompt_logprobs``).
* ``topk_sample_logprobs`` and ``prompt_alt_tokens_k``: at most the server's top-k width
  (``max_topk_prompt_logprobs``).
* ``target_prompt_logprobs``: a dense int64 ``[len(prompt) - 1, K]`` tensor (K >= 1) of
  token ids or ``-1``; the answer is float32 of the same shape.
* ``record_stability_info``: refused when true (tinkex serve records no stability
  information; tinker does not say what it holds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tinkex_server._problems import bad_request
from tinkex_types import PromptAltTokens, SampledSequence, SampleRequest, TensorData

if TYPE_CHECKING:
    from tinkex_server._engine import SampledSequence as EngineSequence
    from tinkex_server._engine import SampleResult

__all__ = ["check_extras", "result_extras", "sequence_model", "target_ids"]


def check_extras(req: SampleRequest, prompt_len: int, max_width: int) -> None:
    """400 naming the field for an extra this server refuses or a value out of range."""
    if req.record_stability_info:
        raise bad_request(
            "record_stability_info",
            "tinkex serve does not record stability information (StableReinforce)",
            "leave record_stability_info false (SamplingClient(record_stability_info=False))",
        )
    for field in ("topk_sample_logprobs", "prompt_alt_tokens_k"):
        value = getattr(req, field)
        if value > max_width:
            raise bad_request(field, f"{value} is too large", f"use at most {max_width}")
    last_n = req.prompt_logprobs_last_n
    if last_n is None:
        return
    if not req.prompt_logprobs and req.topk_prompt_logprobs == 0:
        raise bad_request(
            "prompt_logprobs_last_n",
            "applies to prompt logprobs, and none were asked for",
            "set prompt_logprobs (include_prompt_logprobs=True)",
        )
    if not 1 <= last_n <= prompt_len - 1:
        raise bad_request(
            "prompt_logprobs_last_n",
            f"must be between 1 and len(prompt) - 1 = {prompt_len - 1}, got {last_n}",
            "score fewer tokens, or omit it to score the whole prompt",
        )


def target_ids(tensor: TensorData | None, prompt_len: int, vocab: int) -> list[list[int]] | None:
    """``target_prompt_logprobs`` as rows of token ids, checked."""
    if tensor is None:
        return None
    field = "target_prompt_logprobs"
    if getattr(tensor, "sparse_crow_indices", None) is not None:
        raise bad_request(
            field,
            "sparse tensors are not supported by tinkex serve",
            "send it dense: TensorData.from_torch(ids) with -1 in the cells you do not need",
        )
    if tensor.dtype != "int64":
        raise bad_request(field, f"must be int64 token ids, got {tensor.dtype}", "use int64")
    shape = tensor.effective_shape
    if len(shape) != 2 or shape[0] != prompt_len - 1 or shape[1] < 1:
        raise bad_request(
            field,
            f"must have shape [len(prompt) - 1, K] = [{prompt_len - 1}, K >= 1], got {shape}",
            "give one row per prompt position after the first",
        )
    rows: list[list[int]] = tensor.tolist()
    if any(t < -1 or (vocab and t >= vocab) for row in rows for t in row):
        raise bad_request(
            field,
            f"holds ids outside [0, {vocab}) other than -1",
            "use the model's token ids, and -1 for cells you do not need",
        )
    return rows


def sequence_model(seq: EngineSequence, want_topk: bool) -> SampledSequence:
    """The wire sequence of an engine sequence (top-k per token when asked)."""
    topk: list[Any] | None = None
    if want_topk and seq.topk_logprobs is not None:
        topk = [[(int(t), float(lp)) for t, lp in pos] for pos in seq.topk_logprobs]
    return SampledSequence.model_construct(
        stop_reason=seq.stop_reason,
        tokens=list(seq.tokens),
        logprobs=list(seq.logprobs),
        topk_logprobs=topk,
    )


def _matrix(rows: list[list[Any]], dtype: str) -> TensorData:
    width = len(rows[0]) if rows else 0
    flat = [v for row in rows for v in row]
    return TensorData(data=flat, dtype=dtype, shape=[len(rows), width])  # type: ignore[arg-type]


def result_extras(output: SampleResult) -> dict[str, Any]:
    """``target_prompt_logprobs`` and ``prompt_alt_tokens`` of the response, when computed."""
    extras: dict[str, Any] = {}
    if output.target_prompt_logprobs is not None:
        extras["target_prompt_logprobs"] = _matrix(output.target_prompt_logprobs, "float32")
    if output.prompt_alt_tokens is not None:
        tokens, logprobs = output.prompt_alt_tokens
        extras["prompt_alt_tokens"] = PromptAltTokens(
            tokens=_matrix(tokens, "int64"), logprobs=_matrix(logprobs, "float32")
        )
    return extras
