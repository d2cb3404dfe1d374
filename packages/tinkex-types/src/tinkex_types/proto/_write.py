"""Protobuf bytes of a :class:`Datum`, written directly.

A forward_backward request is a few small fields around many datums, each holding one or
a few large packed buffers. Building a ``pb.Datum`` per datum copies every buffer into the
message and again when serialising it (and the runtime spends tens of microseconds per
datum on the message itself). Here the common parts (text chunks, dense tensors) are
written as the wire format lays them out, and the buffers are referenced, not copied,
until the one final ``b"".join``. Image chunks, sparse tensors and provenance spans are
serialised by the protobuf runtime and spliced in. The bytes decode to the same message
as :func:`~tinkex_types.proto._request.datum_to_proto` builds (tests compare them).
"""

from __future__ import annotations

from tinkex_types._datum import Datum, ProvenanceSpan
from tinkex_types._errors import TinkexValidationError
from tinkex_types._model_input import EncodedTextChunk, ImageChunk, ModelInputChunk
from tinkex_types._tensor import TensorData
from tinkex_types.proto import tinker_public_pb2 as pb
from tinkex_types.proto._arrays import (
    WIRE_DTYPE,
    encode_tokens,
    tensor_buffer,
    tensor_to_proto,
    tokens_buffer,
)

#: A part of the body: bytes, or a view of a C-contiguous array (``bytes.join`` copies it
#: straight into the body).
Buffer = bytes | memoryview

__all__ = ["chunk_to_proto", "datum_parts", "span_to_proto", "varint"]

# Tags (field number << 3 | wire type 2, length-delimited) used below.
_F1 = b"\x0a"  # Datum.model_input, Chunk.encoded_text, EncodedTextChunk.tokens, Tensor.dense,
#                map entry key
_F2 = b"\x12"  # Datum.loss_fn_inputs, map entry value
_F3 = b"\x1a"  # Datum.model_input_spans
_F4 = b"\x22"  # Datum.loss_fn_input_spans, Tensor.shape (packed)
_DTYPE_TAG = b"\x18"  # Tensor.dtype (field 3, varint)

_SMALL = [bytes([n]) for n in range(128)]


def varint(value: int) -> bytes:
    """``value`` as a protobuf varint (negative values as their 64-bit two's complement)."""
    if 0 <= value < 128:
        return _SMALL[value]
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def chunk_to_proto(chunk: ModelInputChunk, out: pb.Chunk, field: str) -> None:
    if isinstance(chunk, EncodedTextChunk):
        out.encoded_text.tokens = encode_tokens(chunk, f"{field}.tokens")
    elif isinstance(chunk, ImageChunk):
        out.image.data = chunk.data
        out.image.format = chunk.format
        if chunk.expected_tokens is not None:
            out.image.expected_tokens = chunk.expected_tokens
        if chunk.override_dimensions is not None:
            out.image.override_dimensions.width = chunk.override_dimensions.width
            out.image.override_dimensions.height = chunk.override_dimensions.height
    else:
        raise TinkexValidationError(
            field,
            f"a {chunk.type} chunk cannot be sent as protobuf (the message has no such chunk)",
            "send the image bytes in an ImageChunk, or use the JSON encoding",
        )


def span_to_proto(span: ProvenanceSpan, out: pb.ProvenanceSpan) -> None:
    arm = out.prompt_tokens if span.source == "prompt" else out.sampled_tokens
    arm.sequence_id = span.sequence_id
    arm.offset = span.offset
    arm.length = span.length


def _text_chunk(chunk: EncodedTextChunk, field: str, out: list[Buffer]) -> int:
    tokens = tokens_buffer(chunk, f"{field}.tokens").data
    size = tokens.nbytes
    if size:  # EncodedTextChunk{tokens}; an empty bytes field is not written
        head = _F1 + varint(size)
        inner = len(head) + size
        lead = _F1 + varint(inner)  # Chunk{encoded_text}
        total = len(lead) + inner
        outer = _F1 + varint(total)  # Datum.model_input
        out += (outer + lead + head, tokens)
        return len(outer) + total
    out.append(b"\x0a\x02\x0a\x00")  # an empty EncodedTextChunk is still set in the oneof
    return 4


def _message(tag: bytes, body: bytes, out: list[Buffer]) -> int:
    head = tag + varint(len(body))
    out += (head, body)
    return len(head) + len(body)


def _tensor_entry(name: str, td: TensorData, field: str, out: list[Buffer]) -> int:
    """One ``loss_fn_inputs`` map entry (``{1: key, 2: Tensor}``) as Datum field 2."""
    key = name.encode()
    key_part = _F1 + varint(len(key)) + key
    wire = WIRE_DTYPE.get(td.dtype)
    if td.is_sparse or wire is None:  # rare: the runtime writes it (and names a bad dtype)
        body = tensor_to_proto(td, field).SerializeToString()
        value_head = _F2 + varint(len(body))
        entry = len(key_part) + len(value_head) + len(body)
        entry_head = _F2 + varint(entry)
        out += (entry_head, key_part, value_head, body)
        return len(entry_head) + entry
    values = tensor_buffer(td, field).data
    dense_head = _F1 + varint(values.nbytes)
    tail = _DTYPE_TAG + varint(wire[0])
    shape = b"".join(varint(d) for d in td.effective_shape)
    if shape:
        tail += _F4 + varint(len(shape)) + shape
    tensor = len(dense_head) + values.nbytes + len(tail)
    value_head = _F2 + varint(tensor)
    entry = len(key_part) + len(value_head) + tensor
    entry_head = _F2 + varint(entry)
    out += (entry_head + key_part + value_head + dense_head, values, tail)
    return len(entry_head) + entry


def datum_parts(datum: Datum, field: str, out: list[Buffer]) -> int:
    """Append the serialised ``pb.Datum`` of ``datum`` to ``out`` in parts; return its
    length."""
    size = 0
    for j, chunk in enumerate(datum.model_input.chunks):
        where = f"{field}.model_input.chunks[{j}]"
        if isinstance(chunk, EncodedTextChunk):
            size += _text_chunk(chunk, where, out)
        else:
            msg = pb.Chunk()
            chunk_to_proto(chunk, msg, where)
            size += _message(_F1, msg.SerializeToString(), out)
    for name, td in datum.loss_fn_inputs.items():
        if not isinstance(name, str):  # pragma: no cover - validated keys are strings
            raise TinkexValidationError(f"{field}.loss_fn_inputs", "keys must be strings")
        size += _tensor_entry(name, td, f"{field}.loss_fn_inputs.{name}", out)
    for tag, spans in ((_F3, datum.model_input_spans), (_F4, datum.loss_fn_input_spans)):
        for span in spans or ():
            msg_span = pb.ProvenanceSpan()
            span_to_proto(span, msg_span)
            size += _message(tag, msg_span.SerializeToString(), out)
    return size
