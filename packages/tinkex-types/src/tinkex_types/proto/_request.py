"""ForwardBackwardRequest (and ForwardRequest) <-> ``tinker_public.ForwardBackwardRequest``."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet
from pydantic import ValidationError

from tinkex_types._codec import WireDecodeError
from tinkex_types._datum import (
    Datum,
    PromptProvenanceSpan,
    SampledProvenanceSpan,
)
from tinkex_types._model_input import (
    EncodedTextChunk,
    ImageChunk,
    ImageDimensions,
    ModelInput,
    ModelInputChunk,
)
from tinkex_types._numbers import FLOAT32_MAX, first_non_finite
from tinkex_types._requests import ForwardBackwardInput, ForwardBackwardRequest, ForwardRequest
from tinkex_types._tensor import TensorData
from tinkex_types.proto import tinker_public_pb2 as pb
from tinkex_types.proto._arrays import decode_i32, tensor_from_proto, tensor_to_proto
from tinkex_types.proto._write import Buffer, chunk_to_proto, datum_parts, span_to_proto, varint

__all__ = [
    "datum_from_proto",
    "datum_to_proto",
    "decode_forward_backward_request",
    "encode_datum",
    "encode_forward_backward_request",
    "forward_backward_request_from_proto",
    "forward_backward_request_to_proto",
    "parse_message",
    "refuse_unknown",
    "validation_error",
]


def parse_message(msg: Message, body: bytes) -> None:
    """``msg.ParseFromString(body)``; malformed bytes are a :class:`WireDecodeError`."""
    try:
        msg.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        name = msg.DESCRIPTOR.name
        raise WireDecodeError(
            "body", f"is not a valid protobuf {name} ({exc})", f"send a serialised {name}"
        ) from None


def refuse_unknown(msg: Message, field: str) -> None:
    unknown = UnknownFieldSet(msg)
    if len(unknown):
        numbers = sorted({int(unknown[i].field_number) for i in range(len(unknown))})
        raise WireDecodeError(
            field,
            f"has field number(s) {numbers} that {msg.DESCRIPTOR.full_name} does not define",
            "this server speaks tinker_public as of the official SDK 0.38",
        )


# -- encode ------------------------------------------------------------------------------


def datum_to_proto(datum: Datum, field: str = "datum", out: pb.Datum | None = None) -> pb.Datum:
    """A :class:`Datum` as a proto ``Datum`` (token ids int32, tensors dense)."""
    msg = pb.Datum() if out is None else out
    for j, chunk in enumerate(datum.model_input.chunks):
        chunk_to_proto(chunk, msg.model_input.add(), f"{field}.model_input.chunks[{j}]")
    for name, td in datum.loss_fn_inputs.items():
        tensor_to_proto(td, f"{field}.loss_fn_inputs.{name}", msg.loss_fn_inputs[name])
    for span in datum.model_input_spans or ():
        span_to_proto(span, msg.model_input_spans.add())
    for span in datum.loss_fn_input_spans or ():
        span_to_proto(span, msg.loss_fn_input_spans.add())
    return msg


def _batch_of(
    request: ForwardBackwardRequest | ForwardRequest, forward_only: bool | None
) -> tuple[ForwardBackwardInput, str, bool]:
    if isinstance(request, ForwardRequest):
        batch, prefix, only = request.forward_input, "forward_input", True
    else:
        batch, prefix = request.forward_backward_input, "forward_backward_input"
        only = bool(request.forward_only)
    return batch, prefix, only if forward_only is None else forward_only


def _write_config(batch: ForwardBackwardInput, msg: pb.ForwardBackwardRequest) -> None:
    for key, number in (batch.loss_fn_config or {}).items():
        msg.loss_fn_config[key] = float(number)
        msg.loss_fn_config_v2[key].number = float(number)
    for key, value in (batch.loss_fn_config_v2 or {}).items():
        if isinstance(value, str):
            msg.loss_fn_config_v2[key].text = value
        else:
            msg.loss_fn_config[key] = float(value)
            msg.loss_fn_config_v2[key].number = float(value)


def forward_backward_request_to_proto(
    request: ForwardBackwardRequest | ForwardRequest, *, forward_only: bool | None = None
) -> pb.ForwardBackwardRequest:
    """The request as the official SDK (0.38) writes it.

    A :class:`ForwardRequest` (or ``forward_only=True``, or a request whose
    ``forward_only`` is set) becomes ``forward_only = true``. Numeric config values are
    written to both config maps, string values (``loss_fn_config_v2``) to the v2 map only.
    """
    batch, prefix, only = _batch_of(request, forward_only)
    msg = pb.ForwardBackwardRequest(model_id=request.model_id, loss_fn=batch.loss_fn)
    msg.seq_id = request.seq_id if request.seq_id is not None else 0
    msg.forward_only = only
    _write_config(batch, msg)
    for i, datum in enumerate(batch.data):
        datum_to_proto(datum, f"{prefix}.data[{i}]", msg.data.add())
    return msg


_DATA_TAG = b"\x1a"  # field 3 (data), wire type 2 (length-delimited)


def encode_forward_backward_request(
    request: ForwardBackwardRequest | ForwardRequest, *, forward_only: bool | None = None
) -> bytes:
    """:func:`forward_backward_request_to_proto`, serialised: the same message, with each
    datum written by :func:`~tinkex_types.proto._write.datum_parts` (the buffers are copied
    once, into the body)."""
    batch, prefix, only = _batch_of(request, forward_only)
    head = pb.ForwardBackwardRequest(model_id=request.model_id)
    head.seq_id = request.seq_id if request.seq_id is not None else 0
    tail = pb.ForwardBackwardRequest(loss_fn=batch.loss_fn, forward_only=only)
    _write_config(batch, tail)
    parts: list[Buffer] = [head.SerializeToString()]  # fields 1-2, 3 (data), 4-7: in order
    for i, datum in enumerate(batch.data):
        at = len(parts)
        parts.append(b"")
        size = datum_parts(datum, f"{prefix}.data[{i}]", parts)
        parts[at] = _DATA_TAG + varint(size)
    parts.append(tail.SerializeToString())
    return b"".join(parts)


def encode_datum(datum: Datum) -> bytes:
    """:func:`datum_to_proto`, serialised (written by ``datum_parts``)."""
    parts: list[Buffer] = []
    datum_parts(datum, "datum", parts)
    return b"".join(parts)


# -- decode ------------------------------------------------------------------------------


def _chunk_from_proto(chunk: pb.Chunk, field: str) -> ModelInputChunk:
    kind = chunk.WhichOneof("chunk")
    if kind == "encoded_text":
        refuse_unknown(chunk.encoded_text, f"{field}.encoded_text")
        tokens = decode_i32(chunk.encoded_text.tokens, f"{field}.encoded_text.tokens")
        return EncodedTextChunk.model_construct(tokens=tokens)
    if kind == "image":
        image = chunk.image
        refuse_unknown(image, f"{field}.image")
        values: dict[str, Any] = {"data": image.data, "format": image.format}
        if image.HasField("expected_tokens"):
            values["expected_tokens"] = image.expected_tokens
        if image.HasField("override_dimensions"):
            dims = image.override_dimensions
            values["override_dimensions"] = ImageDimensions(width=dims.width, height=dims.height)
        try:
            return ImageChunk.model_validate(values)
        except ValidationError as exc:
            raise validation_error(exc, f"{field}.image") from None
    if kind == "dmel":
        raise WireDecodeError(
            f"{field}.dmel", "audio (dmel) chunks are not supported", "send text or image chunks"
        )
    raise WireDecodeError(field, "is an empty chunk", "set encoded_text or image")


def _span_from_proto(
    span: pb.ProvenanceSpan, field: str
) -> PromptProvenanceSpan | SampledProvenanceSpan:
    kind = span.WhichOneof("span")
    if kind is None:
        raise WireDecodeError(field, "is an empty span", "set prompt_tokens or sampled_tokens")
    arm = span.prompt_tokens if kind == "prompt_tokens" else span.sampled_tokens
    cls = PromptProvenanceSpan if kind == "prompt_tokens" else SampledProvenanceSpan
    try:
        return cls(sequence_id=arm.sequence_id, offset=arm.offset, length=arm.length)
    except ValidationError as exc:
        raise validation_error(exc, f"{field}.{kind}") from None


def _finite_inputs(tensor: TensorData, where: str) -> TensorData:
    """The number rule ``Datum`` applies to JSON loss inputs, for a float32 buffer (it can
    hold NaN and infinity; ``model_construct`` below skips the model's own check)."""
    if tensor.dtype != "float32":
        return tensor
    bad = first_non_finite(list(tensor.data))
    if bad is not None:
        raise WireDecodeError(
            where,
            f"element {bad} is {tensor.data[bad]!r}: loss inputs must be finite numbers within "
            f"the float32 range (|x| <= {FLOAT32_MAX:.8g}); NaN and infinity are refused",
            "replace them, e.g. clip or zero them",
        )
    return tensor


def datum_from_proto(msg: pb.Datum, field: str = "datum") -> Datum:
    """A proto ``Datum`` as a :class:`Datum` (dmel chunks and unknown fields are refused)."""
    refuse_unknown(msg, field)
    chunks = [
        _chunk_from_proto(c, f"{field}.model_input[{j}]") for j, c in enumerate(msg.model_input)
    ]
    inputs = {}
    for name, tensor in msg.loss_fn_inputs.items():
        where = f"{field}.loss_fn_inputs.{name}"
        refuse_unknown(tensor, where)
        inputs[name] = _finite_inputs(tensor_from_proto(tensor, where), where)
    spans: dict[str, list[PromptProvenanceSpan | SampledProvenanceSpan] | None] = {}
    for key, items in (
        ("model_input_spans", msg.model_input_spans),
        ("loss_fn_input_spans", msg.loss_fn_input_spans),
    ):
        spans[key] = [_span_from_proto(s, f"{field}.{key}[{k}]") for k, s in enumerate(items)]
    if bool(spans["model_input_spans"]) != bool(spans["loss_fn_input_spans"]):
        raise WireDecodeError(
            f"{field}.model_input_spans", "provenance comes as a pair: send both span lists"
        )
    return Datum.model_construct(
        model_input=ModelInput.model_construct(chunks=chunks),
        loss_fn_inputs=inputs,
        model_input_spans=spans["model_input_spans"] or None,
        loss_fn_input_spans=spans["loss_fn_input_spans"] or None,
    )


def validation_error(exc: ValidationError, prefix: str) -> WireDecodeError:
    errors = exc.errors()
    if not errors:
        return WireDecodeError(prefix, str(exc))
    loc = ".".join(str(p) for p in errors[0]["loc"])
    return WireDecodeError(".".join(p for p in (prefix, loc) if p) or "body", errors[0]["msg"])


def _config(msg: pb.ForwardBackwardRequest) -> tuple[Any, Any]:
    v1: dict[str, float] = dict(msg.loss_fn_config)
    v2: dict[str, float | str] = {}
    for key, value in msg.loss_fn_config_v2.items():
        kind = value.WhichOneof("value")
        if kind is None:
            raise WireDecodeError(f"loss_fn_config_v2.{key}", "holds neither number nor text")
        v2[key] = value.number if kind == "number" else value.text
    # Numbers (v2's win over v1's: servers prefer v2) go to loss_fn_config; only what v1
    # cannot hold, the text values, to loss_fn_config_v2.
    numbers = {**v1, **{k: v for k, v in v2.items() if not isinstance(v, str)}}
    texts = {k: v for k, v in v2.items() if isinstance(v, str)}
    return (numbers or None), (texts or None)


def forward_backward_request_from_proto(
    msg: pb.ForwardBackwardRequest,
) -> ForwardBackwardRequest:
    """A proto request as a :class:`ForwardBackwardRequest` (``forward_only`` is ``True``
    or ``None``). ``loss_fn_config`` holds the numbers of both maps (v2's win),
    ``loss_fn_config_v2`` the text values of the v2 map (``None`` when there are none), so
    the whole config is ``{**loss_fn_config, **loss_fn_config_v2}``."""
    refuse_unknown(msg, "body")
    data = [datum_from_proto(d, f"data[{i}]") for i, d in enumerate(msg.data)]
    numbers, v2 = _config(msg)
    try:
        batch = ForwardBackwardInput.model_validate(
            {
                "data": data,
                "loss_fn": msg.loss_fn,
                "loss_fn_config": numbers,
                "loss_fn_config_v2": v2,
            }
        )
        return ForwardBackwardRequest.model_validate(
            {
                "forward_backward_input": batch,
                "model_id": msg.model_id,
                "seq_id": msg.seq_id,
                "forward_only": True if msg.forward_only else None,
            }
        )
    except ValidationError as exc:
        raise validation_error(exc, "") from None


def decode_forward_backward_request(body: bytes) -> ForwardBackwardRequest:
    """Bytes of a ``tinker_public.ForwardBackwardRequest`` as a :class:`ForwardBackwardRequest`;
    anything wrong is a :class:`WireDecodeError` naming the field."""
    msg = pb.ForwardBackwardRequest()
    parse_message(msg, body)
    return forward_backward_request_from_proto(msg)
