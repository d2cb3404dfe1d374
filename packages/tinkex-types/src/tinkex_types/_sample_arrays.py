"""numpy views of sampling results (tinker 0.38's ``*_np`` parameters and attributes).

tinkex keeps sampled tokens and logprobs as Python lists (the JSON shape). tinker 0.38 code
builds :class:`~tinkex_types.SampledSequence` and :class:`~tinkex_types.SampleResponse` from
numpy arrays (``tokens_np=``, ``logprobs_np=``, ``topk_logprobs_np=``, ``prompt_logprobs_np=``,
``topk_prompt_logprobs_np=``) and reads them back as arrays: these helpers convert both ways.
numpy is imported on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "MASK_LOGPROB",
    "TopkLogprobs",
    "float_array",
    "int_array",
    "list_of",
    "prompt_logprobs_list",
    "topk_arrays",
    "topk_lists",
]

#: The logprob of a padding cell of a top-k matrix (its token id is 0).
MASK_LOGPROB = -99999.0


@dataclass(frozen=True, slots=True)
class TopkLogprobs:
    """Top-k candidates per position as two ``(length, k)`` matrices: int32 ``token_ids``
    and float32 ``logprobs``; padding cells hold token 0 and logprob ``MASK_LOGPROB``."""

    token_ids: Any
    logprobs: Any


def _np() -> Any:
    import numpy

    return numpy


def _vector(value: Any, name: str) -> Any:
    arr = _np().asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {tuple(arr.shape)}")
    return arr


def list_of(value: Any, name: str) -> list[Any]:
    """A 1-D array (or sequence) as a list of Python numbers."""
    return list(_vector(value, name).tolist())


def prompt_logprobs_list(value: Any, name: str) -> list[float | None]:
    """A 1-D float array as a list, NaN (not computed) as ``None``."""
    out: list[float | None] = list(_vector(value, name).astype("float64").tolist())
    return [None if v != v else v for v in out]


def topk_lists(value: Any, name: str) -> list[list[tuple[int, float]] | None]:
    """Top-k matrices (``.token_ids`` and ``.logprobs``) as lists of ``(token_id, logprob)``
    pairs per position: trailing padding cells dropped, an all-padding row ``None``."""
    np = _np()
    ids = np.asarray(getattr(value, "token_ids", None))
    lps = np.asarray(getattr(value, "logprobs", None), dtype="float32")
    if ids.ndim != 2 or ids.shape != lps.shape:
        raise ValueError(
            f"{name} must have token_ids and logprobs matrices of one (length, k) shape"
        )
    pad = (ids == 0) & (lps == np.float32(MASK_LOGPROB))
    out: list[list[tuple[int, float]] | None] = []
    for row_ids, row_lps, row_pad in zip(
        ids.tolist(), lps.astype("float64").tolist(), pad.tolist(), strict=True
    ):
        end = len(row_pad)
        while end and row_pad[end - 1]:
            end -= 1
        out.append(list(zip(row_ids[:end], row_lps[:end], strict=True)) if end else None)
    return out


def topk_arrays(rows: list[list[tuple[int, float]] | None]) -> TopkLogprobs:
    """The inverse of :func:`topk_lists` (``k`` is the longest row)."""
    np = _np()
    k = max((len(r) for r in rows if r), default=0)
    ids = np.zeros((len(rows), k), dtype="int32")
    lps = np.full((len(rows), k), MASK_LOGPROB, dtype="float32")
    for i, row in enumerate(rows):
        for j, (token, logprob) in enumerate(row or ()):
            ids[i, j] = token
            lps[i, j] = logprob
    return TopkLogprobs(token_ids=ids, logprobs=lps)


def int_array(values: list[int]) -> Any:
    return _np().asarray(values, dtype="int32")


def float_array(values: list[float | None]) -> Any:
    """float32, ``None`` as NaN."""
    return _np().asarray([float("nan") if v is None else v for v in values], dtype="float32")
