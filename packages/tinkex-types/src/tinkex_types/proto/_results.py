"""ForwardBackwardOutput and SampleResponse <-> their ``tinker_public`` messages."""

from __future__ import annotations

import math
from itertools import chain, pairwise
from typing import Any

import numpy as np

from tinkex_types._codec import WireDecodeError
from tinkex_types._errors import TinkexValidationError
from tinkex_types._responses import (
    ForwardBackwardOutput,
    PromptAltTokens,
    SampledSequence,
    SampleResponse,
    TopkEntry,
)
from tinkex_types._tensor import TensorData
from tinkex_types.proto import tinker_public_pb2 as pb
from tinkex_types.proto._arrays import (
    WIRE_DTYPE,
    buffer_of,
    decode_f32,
    decode_i32,
    dims_of,
    encode_f32,
    encode_i32,
    tensor_array,
    tensor_from_proto,
    tensor_to_proto,
    values_to_list,
    wire_dtype_of,
)
from tinkex_types.proto._request import parse_message

__all__ = [
    "MASK_LOGPROB",
    "decode_forward_backward_output",
    "decode_sample_response",
    "encode_forward_backward_output",
    "encode_sample_response",
    "forward_backward_output_from_proto",
    "forward_backward_output_to_proto",
    "sample_response_from_proto",
    "sample_response_to_proto",
]

#: The logprob of padding cells in top-k matrices (their token id is 0).
MASK_LOGPROB = -99999.0
_STOP_TO_WIRE = {"stop": pb.STOP_REASON_STOP, "length": pb.STOP_REASON_LENGTH}
_STOP_FROM_WIRE: dict[int, Any] = {pb.STOP_REASON_STOP: "stop", pb.STOP_REASON_LENGTH: "length"}
_OFFSET_DTYPE = np.dtype("<i8")


# -- ForwardBackwardOutput ---------------------------------------------------------------


def _trailing(td: TensorData) -> tuple[int, ...]:
    return tuple(td.shape[1:]) if td.shape else ()


def _record_to_proto(
    group: list[dict[str, TensorData]], names: list[str], rec: pb.ArrayRecord, type_tag: str
) -> None:
    rec.type_tag = type_tag
    rec.num_datums = len(group)
    for name in names:
        tds = [d[name] for d in group]
        wire, np_dtype = WIRE_DTYPE[tds[0].dtype]
        joined = TensorData.model_construct(
            data=list(chain.from_iterable(td.data for td in tds)), dtype=tds[0].dtype
        )
        sizes = np.fromiter((len(td.data) for td in tds), dtype=np.int64, count=len(tds))
        offsets = np.zeros(len(tds) + 1, dtype="<i8")
        np.cumsum(sizes * np_dtype.itemsize, out=offsets[1:])
        bt = rec.fields[name]
        bt.data = tensor_array(joined, f"loss_fn_outputs.{name}").tobytes()
        bt.offsets = offsets.tobytes()
        bt.dtype = wire
        bt.trailing_shape.extend(_trailing(tds[0]))


def forward_backward_output_to_proto(out: ForwardBackwardOutput) -> pb.ForwardBackwardOutput:
    """One ArrayRecord per run of datums whose fields agree in dtype and trailing shape
    (usually one for the whole batch). Every datum must have the same field names."""
    msg = pb.ForwardBackwardOutput(loss_fn_output_type=out.loss_fn_output_type)
    for key, value in out.metrics.items():
        msg.metrics[key] = value
    outputs = out.loss_fn_outputs
    if not outputs:
        return msg
    names = list(outputs[0])
    signatures = []
    for i, datum in enumerate(outputs):
        if datum.keys() != outputs[0].keys():
            raise TinkexValidationError(
                f"loss_fn_outputs[{i}]",
                f"has fields {sorted(datum)} but loss_fn_outputs[0] has {sorted(names)}",
                "give every datum's output the same fields",
            )
        signatures.append(tuple((datum[n].dtype, _trailing(datum[n])) for n in names))
    start = 0
    for i in range(1, len(outputs) + 1):
        if i == len(outputs) or signatures[i] != signatures[start]:
            group = outputs[start:i]
            _record_to_proto(group, names, msg.loss_fn_outputs.add(), out.loss_fn_output_type)
            start = i
    return msg


def _batched_from_proto(bt: pb.BatchedTensor, field: str) -> list[TensorData]:
    """One record field's per-datum tensors. The offsets (one per datum, plus one) are
    checked as Python ints: a result holds few datums, and numpy calls on arrays this small
    cost more than the loop."""
    np_dtype, tensor_dtype = wire_dtype_of(bt.dtype, field)
    trailing = dims_of(bt.trailing_shape, f"{field}.trailing_shape")
    data = buffer_of(bt.data, np_dtype, f"{field}.data")
    offsets: list[int] = buffer_of(bt.offsets, _OFFSET_DTYPE, f"{field}.offsets").tolist()
    if not offsets:
        if len(data):
            raise WireDecodeError(f"{field}.offsets", "is empty but data is not")
        return []
    size = np_dtype.itemsize
    if not _offsets_ok(offsets, size, len(bt.data)):
        raise WireDecodeError(
            f"{field}.offsets",
            f"must be non-decreasing byte offsets, multiples of {size}, within the "
            f"{len(bt.data)} bytes of data",
        )
    bounds = [o // size for o in offsets]
    counts = [b - a for a, b in pairwise(bounds)]
    per = math.prod(trailing) if trailing else 1
    if per and any(c % per for c in counts):
        raise WireDecodeError(
            f"{field}.trailing_shape", f"{trailing} does not divide every datum's element count"
        )
    if not per and any(counts):
        raise WireDecodeError(f"{field}.trailing_shape", f"{trailing} holds no elements")
    leading = [c // per for c in counts] if per else counts
    values = values_to_list(data, bt.dtype)
    return [
        TensorData.model_construct(data=values[a:b], dtype=tensor_dtype, shape=[n, *trailing])
        for a, b, n in zip(bounds, bounds[1:], leading, strict=False)
    ]


def _offsets_ok(offsets: list[int], size: int, nbytes: int) -> bool:
    """Non-negative, non-decreasing multiples of ``size`` ending within ``nbytes``."""
    previous = offsets[0]
    if previous < 0 or offsets[-1] > nbytes:
        return False
    for offset in offsets:
        if offset < previous or offset % size:
            return False
        previous = offset
    return True


def forward_backward_output_from_proto(msg: pb.ForwardBackwardOutput) -> ForwardBackwardOutput:
    """Per-datum outputs from the batched records (INT32 -> int64, BFLOAT16 -> float32);
    ``loss_fn_output_type`` keeps the text after the last ``:``."""
    outputs: list[dict[str, TensorData]] = []
    first_names: list[str] | None = None
    for r, rec in enumerate(msg.loss_fn_outputs):
        where = f"loss_fn_outputs[{r}]"
        names = sorted(rec.fields)
        if first_names is None:
            first_names = names
        elif names != first_names:
            raise WireDecodeError(
                f"{where}.fields", f"are {names} but loss_fn_outputs[0] has {first_names}"
            )
        fields = {n: _batched_from_proto(bt, f"{where}.fields.{n}") for n, bt in rec.fields.items()}
        if rec.num_datums < 0:
            raise WireDecodeError(f"{where}.num_datums", f"is negative ({rec.num_datums})")
        count = rec.num_datums or (len(next(iter(fields.values()))) if fields else 0)
        for name, per_datum in fields.items():
            if len(per_datum) != count:
                raise WireDecodeError(
                    f"{where}.fields.{name}.offsets",
                    f"hold {len(per_datum)} datums but the record has {count}",
                )
        outputs.extend({n: fields[n][i] for n in fields} for i in range(count))
    kind = msg.loss_fn_output_type.rsplit(":", 1)[-1] or "ArrayRecord"
    return ForwardBackwardOutput.model_construct(
        loss_fn_output_type=kind, loss_fn_outputs=outputs, metrics=dict(msg.metrics)
    )


def encode_forward_backward_output(out: ForwardBackwardOutput) -> bytes:
    """:func:`forward_backward_output_to_proto`, serialised."""
    return forward_backward_output_to_proto(out).SerializeToString()


def decode_forward_backward_output(body: bytes) -> ForwardBackwardOutput:
    """Bytes of a ``tinker_public.ForwardBackwardOutput``; errors are :class:`WireDecodeError`."""
    msg = pb.ForwardBackwardOutput()
    parse_message(msg, body)
    return forward_backward_output_from_proto(msg)


# -- SampleResponse ----------------------------------------------------------------------


def _topk_to_proto(rows: list[TopkEntry | None], out: pb.TopkLogprobs) -> None:
    n = len(rows)
    k = max((len(r) for r in rows if r), default=0)
    if not n or not k:
        return
    tokens = np.zeros((n, k), dtype="<i4")
    logprobs = np.full((n, k), MASK_LOGPROB, dtype="<f4")
    if all(r is not None and len(r) == k for r in rows):
        pairs = np.asarray(rows, dtype=np.float64)  # (n, k, 2), one C-level pass
        tokens[:] = pairs[..., 0]
        logprobs[:] = pairs[..., 1]
    else:
        for i, row in enumerate(rows):
            if row:
                pairs = np.asarray(row, dtype=np.float64)
                tokens[i, : len(row)] = pairs[:, 0]
                logprobs[i, : len(row)] = pairs[:, 1]
    out.token_ids = tokens.tobytes()
    out.logprobs = logprobs.tobytes()
    out.k = k
    out.length = n


def _topk_from_proto(msg: pb.TopkLogprobs, field: str) -> list[TopkEntry | None] | None:
    n, k = msg.length, msg.k
    if not n or not k:
        return None
    tokens = buffer_of(msg.token_ids, np.dtype("<i4"), f"{field}.token_ids")
    logprobs = buffer_of(msg.logprobs, np.dtype("<f4"), f"{field}.logprobs")
    for name, arr in (("token_ids", tokens), ("logprobs", logprobs)):
        if len(arr) != n * k:
            raise WireDecodeError(
                f"{field}.{name}", f"holds {len(arr)} values, not length x k = {n} x {k}"
            )
    pad = ((tokens == 0) & (logprobs == np.float32(MASK_LOGPROB))).reshape(n, k)
    keep = (k - np.cumprod(pad[:, ::-1], axis=1).sum(axis=1)).tolist()
    empty = pad[:, 0].tolist()
    pairs = list(zip(tokens.tolist(), logprobs.astype(np.float64).tolist(), strict=True))
    return [None if empty[i] else pairs[i * k : i * k + keep[i]] for i in range(n)]


def sample_response_to_proto(resp: SampleResponse) -> pb.SampleResponse:
    """Tokens int32, logprobs float32 (``None`` prompt logprobs as NaN), top-k as padded
    ``length x k`` matrices."""
    msg = pb.SampleResponse()
    for i, seq in enumerate(resp.sequences):
        out = msg.sequences.add()
        out.stop_reason = _STOP_TO_WIRE[seq.stop_reason]
        out.tokens = encode_i32(seq.tokens, f"sequences[{i}].tokens")
        if seq.logprobs is not None:
            out.logprobs = encode_f32(seq.logprobs)
        if seq.topk_logprobs is not None:
            _topk_to_proto(seq.topk_logprobs, out.topk_sampled_logprobs)
    if resp.prompt_logprobs is not None:
        msg.prompt_logprobs = encode_f32(resp.prompt_logprobs)
    if resp.topk_prompt_logprobs is not None:
        _topk_to_proto(resp.topk_prompt_logprobs, msg.topk_prompt_logprobs)
    if resp.prompt_cache_hit_tokens:
        msg.prompt_cache_hit_tokens = resp.prompt_cache_hit_tokens
    if resp.target_prompt_logprobs is not None:
        tensor_to_proto(
            resp.target_prompt_logprobs, "target_prompt_logprobs", msg.target_prompt_logprobs
        )
    if resp.prompt_alt_tokens is not None:
        alt = resp.prompt_alt_tokens
        tensor_to_proto(alt.tokens, "prompt_alt_tokens.tokens", msg.prompt_alt_tokens.tokens)
        tensor_to_proto(alt.logprobs, "prompt_alt_tokens.logprobs", msg.prompt_alt_tokens.logprobs)
    return msg


def _sequence_from_proto(seq: pb.SampledSequence, field: str) -> SampledSequence:
    reason = _STOP_FROM_WIRE.get(seq.stop_reason)
    if reason is None:
        raise WireDecodeError(
            f"{field}.stop_reason", f"{seq.stop_reason} is not STOP (0) or LENGTH (1)"
        )
    tokens = decode_i32(seq.tokens, f"{field}.tokens")
    logprobs = None
    if seq.logprobs:
        logprobs = values_to_list(decode_f32(seq.logprobs, f"{field}.logprobs"), pb.DTYPE_FLOAT32)
        if len(logprobs) != len(tokens):
            raise WireDecodeError(
                f"{field}.logprobs", f"holds {len(logprobs)} values for {len(tokens)} tokens"
            )
    topk = None
    if seq.HasField("topk_sampled_logprobs"):
        topk = _topk_from_proto(seq.topk_sampled_logprobs, f"{field}.topk_sampled_logprobs")
    return SampledSequence.model_construct(
        stop_reason=reason, tokens=tokens, logprobs=logprobs, topk_logprobs=topk
    )


def _prompt_logprobs(buf: bytes) -> list[float | None]:
    arr = decode_f32(buf, "prompt_logprobs")
    out: list[float | None] = arr.astype(np.float64).tolist()
    for i in np.flatnonzero(np.isnan(arr)).tolist():
        out[i] = None
    return out


def sample_response_from_proto(msg: pb.SampleResponse) -> SampleResponse:
    """The official client's reading: NaN prompt logprobs are ``None``, top-k rows lose
    their padding (an all-padding row is ``None``), empty buffers are absent."""
    sequences = [_sequence_from_proto(s, f"sequences[{i}]") for i, s in enumerate(msg.sequences)]
    values: dict[str, Any] = {"sequences": sequences}
    if msg.prompt_logprobs:
        values["prompt_logprobs"] = _prompt_logprobs(msg.prompt_logprobs)
    if msg.HasField("topk_prompt_logprobs"):
        topk = _topk_from_proto(msg.topk_prompt_logprobs, "topk_prompt_logprobs")
        if topk is not None:
            values["topk_prompt_logprobs"] = topk
    if msg.prompt_cache_hit_tokens:
        values["prompt_cache_hit_tokens"] = msg.prompt_cache_hit_tokens
    if msg.HasField("target_prompt_logprobs"):
        values["target_prompt_logprobs"] = tensor_from_proto(
            msg.target_prompt_logprobs, "target_prompt_logprobs"
        )
    if msg.HasField("prompt_alt_tokens"):
        alt = msg.prompt_alt_tokens
        values["prompt_alt_tokens"] = PromptAltTokens.model_construct(
            tokens=tensor_from_proto(alt.tokens, "prompt_alt_tokens.tokens"),
            logprobs=tensor_from_proto(alt.logprobs, "prompt_alt_tokens.logprobs"),
        )
    return SampleResponse.model_construct(**values)


def encode_sample_response(resp: SampleResponse) -> bytes:
    """:func:`sample_response_to_proto`, serialised."""
    return sample_response_to_proto(resp).SerializeToString()


def decode_sample_response(body: bytes) -> SampleResponse:
    """Bytes of a ``tinker_public.SampleResponse``; errors are :class:`WireDecodeError`."""
    msg = pb.SampleResponse()
    parse_message(msg, body)
    return sample_response_from_proto(msg)
