"""Splitting a training batch into request-sized chunks and combining their results
(tinkex-features.md §5.1, §5.2; protocol.md §2.9, §2.14)."""

from __future__ import annotations

from collections.abc import Sequence

from tinkex_http import ByteEstimator, get_logger
from tinkex_types import Datum, ForwardBackwardOutput, TinkexValidationError

__all__ = [
    "DEFAULT_MAX_CHUNK_BYTES",
    "DEFAULT_MAX_CHUNK_ITEMS",
    "chunk_data",
    "combine_forward_backward_outputs",
    "reduce_metrics",
]

_log = get_logger("tinkex.clients.chunking")

#: A new chunk starts when the current one holds this many datums ...
DEFAULT_MAX_CHUNK_ITEMS = 1024
#: ... or when the next datum would push the estimate (10 bytes per token/element) past this.
DEFAULT_MAX_CHUNK_BYTES = 5_000_000


def chunk_data(
    data: Sequence[Datum],
    max_items: int = DEFAULT_MAX_CHUNK_ITEMS,
    max_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> list[list[Datum]]:
    """Greedy, order-preserving split; never yields an empty chunk (a single datum larger
    than ``max_bytes`` gets a chunk of its own)."""
    if max_items < 1:
        raise TinkexValidationError("max_items", f"must be >= 1, got {max_items}")
    if max_bytes < 1:
        raise TinkexValidationError("max_bytes", f"must be >= 1, got {max_bytes}")
    chunks: list[list[Datum]] = []
    current: list[Datum] = []
    current_bytes = 0
    for datum in data:
        size = ByteEstimator.datum_bytes(datum)
        if current and (len(current) >= max_items or current_bytes + size > max_bytes):
            chunks.append(current)
            current, current_bytes = [], 0
        current.append(datum)
        current_bytes += size
    if current:
        chunks.append(current)
    return chunks


def _weighted_mean(values: Sequence[float], weights: Sequence[int]) -> float:
    total = sum(weights)
    if total == 0:
        return 0.0
    return sum(v * w for v, w in zip(values, weights, strict=True)) / total


def reduce_metrics(metrics: Sequence[dict[str, float]], weights: Sequence[int]) -> dict[str, float]:
    """Merge per-chunk metrics by the reduction named after the last ``:`` of each key.

    ``sum``, ``min``, ``max``; ``mean`` weighted by ``weights`` (the datums per chunk);
    ``slack`` = max − weighted mean; ``unique`` keeps the first value under the key and
    the others under ``key_2``, ``key_3``...; ``hash_unordered`` hashes the sorted values;
    no or an unknown suffix → weighted mean. Only keys of the first chunk are merged, and
    chunks without a key are skipped for it.
    """
    if not metrics:
        return {}
    if len(metrics) != len(weights):
        raise ValueError("reduce_metrics needs one weight per chunk")
    out: dict[str, float] = {}
    for key in metrics[0]:
        present = [(m[key], w) for m, w in zip(metrics, weights, strict=True) if key in m]
        values = [float(v) for v, _ in present]
        ws = [w for _, w in present]
        reduction = key.rsplit(":", 1)[1] if ":" in key else ""
        if reduction == "sum":
            out[key] = float(sum(values))
        elif reduction == "min":
            out[key] = min(values)
        elif reduction == "max":
            out[key] = max(values)
        elif reduction == "slack":
            out[key] = max(values) - _weighted_mean(values, ws)
        elif reduction == "unique":
            out[key] = values[0]
            for i, value in enumerate(values[1:], start=2):
                out[f"{key}_{i}"] = value
        elif reduction == "hash_unordered":
            out[key] = float(hash(tuple(sorted(values))))
        else:
            out[key] = _weighted_mean(values, ws)
    return out


def combine_forward_backward_outputs(
    outputs: Sequence[ForwardBackwardOutput],
) -> ForwardBackwardOutput:
    """One result from per-chunk results: outputs concatenated in order, metrics reduced.

    A single result is returned unchanged.
    """
    if not outputs:
        return ForwardBackwardOutput(loss_fn_output_type="", loss_fn_outputs=[], metrics={})
    if len(outputs) == 1:
        return outputs[0]
    kinds = {o.loss_fn_output_type for o in outputs}
    if len(kinds) > 1:
        _log.warning("chunk_output_types_differ", types=sorted(kinds))
    return ForwardBackwardOutput(
        loss_fn_output_type=outputs[0].loss_fn_output_type,
        loss_fn_outputs=[item for o in outputs for item in o.loss_fn_outputs],
        metrics=reduce_metrics(
            [o.metrics for o in outputs], [len(o.loss_fn_outputs) for o in outputs]
        ),
    )
