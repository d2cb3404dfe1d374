"""The protobuf wire format of the official Tinker SDK (>= 0.25): package ``tinker_public``.

``tinker_public.proto`` (here) is the schema; ``tinker_public_pb2`` is generated from it
by ``packages/tinkex-types/scripts/gen_proto.py`` with a pinned generator and committed.
This module converts between those messages and the pydantic wire models, with numpy for
every array (``numpy`` is needed from here on), and provides :class:`ProtobufCodec`, which
``tinkex_types.codec_for("application/x-protobuf")`` returns.

Decoding raises :class:`~tinkex_types.WireDecodeError` (the field, the problem, the fix);
encoding raises :class:`~tinkex_types.TinkexValidationError` for what the messages cannot
hold (an image-asset-pointer chunk, a token id outside int32).
"""

from __future__ import annotations

from tinkex_types.proto import tinker_public_pb2
from tinkex_types.proto._arrays import tensor_from_proto, tensor_to_proto
from tinkex_types.proto._codec import ProtobufCodec
from tinkex_types.proto._request import (
    datum_from_proto,
    datum_to_proto,
    decode_forward_backward_request,
    encode_forward_backward_request,
    forward_backward_request_from_proto,
    forward_backward_request_to_proto,
)
from tinkex_types.proto._results import (
    MASK_LOGPROB,
    decode_forward_backward_output,
    decode_sample_response,
    encode_forward_backward_output,
    encode_sample_response,
    forward_backward_output_from_proto,
    forward_backward_output_to_proto,
    sample_response_from_proto,
    sample_response_to_proto,
)

__all__ = [
    "MASK_LOGPROB",
    "ProtobufCodec",
    "datum_from_proto",
    "datum_to_proto",
    "decode_forward_backward_output",
    "decode_forward_backward_request",
    "decode_sample_response",
    "encode_forward_backward_output",
    "encode_forward_backward_request",
    "encode_sample_response",
    "forward_backward_output_from_proto",
    "forward_backward_output_to_proto",
    "forward_backward_request_from_proto",
    "forward_backward_request_to_proto",
    "sample_response_from_proto",
    "sample_response_to_proto",
    "tensor_from_proto",
    "tensor_to_proto",
    "tinker_public_pb2",
]
