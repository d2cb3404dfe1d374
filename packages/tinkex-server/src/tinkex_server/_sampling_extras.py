"""The tinker 0.38 extras of a sample request, checked (400 naming the field) and answered.

* ``prompt_logprobs_last_n``: between 1 and ``len(prompt) - 1``; needs prompt logprobs
  (``prompt_logprobs`` or ``topk_prompt_logprobs``).
* ``topk_sample_logprobs`` and ``prompt_alt_tokens_k``: at most the server's top-k width
  (``max_topk_prompt_logprobs``).
* ``target_prompt_logprobs``: an int64 ``[len(prompt) - 1, K]`` tensor (K >= 1) of token ids
  or ``-1``, dense or sparse CSR (the cells it lists); the answer is float32 of the same
  shape and layout (a sparse request gets the logprobs of its listed cells). Its size is
  bounded by the request body limit; scoring reads logits the prefill computes anyway.
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

__all__ = [
    "SparseLayout",
    "check_extras",
    "result_extras",
    "sequence_model",
    "target_ids",
    "target_layout",
]


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


#: The CSR layout of a sparse ``target_prompt_logprobs``: (row offsets, columns).
SparseLayout = tuple[list[int], list[int]]


def target_layout(tensor: TensorData | None) -> SparseLayout | None:
    """The CSR layout of a sparse ``target_prompt_logprobs`` (``None``: dense or absent)."""
    if tensor is None or tensor.sparse_crow_indices is None:
        return None
    return list(tensor.sparse_crow_indices), list(tensor.sparse_col_indices or [])


def target_ids(tensor: TensorData | None, prompt_len: int, vocab: int) -> list[list[int]] | None:
    """``target_prompt_logprobs`` as dense rows of token ids (``-1``: none), checked."""
    if tensor is None:
        return None
    field = "target_prompt_logprobs"
    if tensor.dtype != "int64":
        raise bad_request(field, f"must be int64 token ids, got {tensor.dtype}", "use int64")
    shape = tensor.effective_shape
    if len(shape) != 2 or shape[0] != prompt_len - 1 or shape[1] < 1:
        raise bad_request(
            field,
            f"must have shape [len(prompt) - 1, K] = [{prompt_len - 1}, K >= 1], got {shape}",
            "give one row per prompt position after the first",
        )
    rows: list[list[int]] = tensor.tolist(pad_value=-1)
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


def _sparse(rows: list[list[float]], layout: SparseLayout) -> TensorData:
    crow, col = layout
    data = [rows[r][col[i]] for r in range(len(rows)) for i in range(crow[r], crow[r + 1])]
    width = len(rows[0]) if rows else 0
    return TensorData(
        data=data,
        dtype="float32",
        shape=[len(rows), width],
        sparse_crow_indices=crow,
        sparse_col_indices=col,
    )


def result_extras(output: SampleResult, layout: SparseLayout | None = None) -> dict[str, Any]:
    """``target_prompt_logprobs`` (in the request's ``layout``) and ``prompt_alt_tokens`` of
    the response, when computed."""
    extras: dict[str, Any] = {}
    target = output.target_prompt_logprobs
    if target is not None:
        extras["target_prompt_logprobs"] = (
            _matrix(target, "float32") if layout is None else _sparse(target, layout)
        )
    if output.prompt_alt_tokens is not None:
        tokens, logprobs = output.prompt_alt_tokens
        extras["prompt_alt_tokens"] = PromptAltTokens(
            tokens=_matrix(tokens, "int64"), logprobs=_matrix(logprobs, "float32")
        )
    return extras
