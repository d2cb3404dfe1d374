"""ProtobufCodec: the ``application/x-protobuf`` :class:`~tinkex_types.WireCodec`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from tinkex_types._codec import PROTOBUF_MEDIA_TYPE, WireDecodeError
from tinkex_types._datum import Datum
from tinkex_types._requests import ForwardBackwardRequest, ForwardRequest
from tinkex_types._responses import ForwardBackwardOutput, SampleResponse
from tinkex_types._tensor import TensorData
from tinkex_types.proto import tinker_public_pb2 as pb
from tinkex_types.proto._arrays import tensor_from_proto, tensor_to_proto
from tinkex_types.proto._request import (
    datum_from_proto,
    decode_forward_backward_request,
    encode_datum,
    encode_forward_backward_request,
    parse_message,
)
from tinkex_types.proto._results import (
    decode_forward_backward_output,
    decode_sample_response,
    encode_forward_backward_output,
    encode_sample_response,
)

__all__ = ["ProtobufCodec"]

_M = TypeVar("_M", bound=BaseModel)


def _decode_forward(body: bytes) -> ForwardRequest:
    request = decode_forward_backward_request(body)
    return ForwardRequest.model_construct(
        forward_input=request.forward_backward_input,
        model_id=request.model_id,
        seq_id=request.seq_id,
    )


def _decode_datum(body: bytes) -> Datum:
    msg = pb.Datum()
    parse_message(msg, body)
    return datum_from_proto(msg)


def _decode_tensor(body: bytes) -> TensorData:
    msg = pb.Tensor()
    parse_message(msg, body)
    return tensor_from_proto(msg, "tensor", keep_sparse=True)


_ENCODERS: dict[type[BaseModel], Callable[[Any], bytes]] = {
    ForwardBackwardRequest: encode_forward_backward_request,
    ForwardRequest: encode_forward_backward_request,
    ForwardBackwardOutput: encode_forward_backward_output,
    SampleResponse: encode_sample_response,
    Datum: encode_datum,
    TensorData: lambda t: tensor_to_proto(t, "tensor").SerializeToString(),
}
_DECODERS: dict[type[BaseModel], Callable[[bytes], BaseModel]] = {
    ForwardBackwardRequest: decode_forward_backward_request,
    ForwardRequest: _decode_forward,
    ForwardBackwardOutput: decode_forward_backward_output,
    SampleResponse: decode_sample_response,
    Datum: _decode_datum,
    TensorData: _decode_tensor,
}


class ProtobufCodec:
    """``tinker_public`` protobuf for the models the official SDK (>= 0.25) sends as protobuf.

    Carries :class:`ForwardBackwardRequest` and :class:`ForwardRequest` (one message,
    ``forward_only`` set for the latter), :class:`ForwardBackwardOutput`,
    :class:`SampleResponse`, and the sub-messages :class:`Datum` and :class:`TensorData`.
    Every other model stays JSON. ``decode`` raises only :class:`WireDecodeError`.
    """

    media_type = PROTOBUF_MEDIA_TYPE

    def carries(self, model: type[BaseModel]) -> bool:
        return model in _ENCODERS

    def encode(self, value: BaseModel) -> bytes:
        encoder = _ENCODERS.get(type(value))
        if encoder is None:
            raise TypeError(f"{type(value).__name__} has no protobuf form: send it as JSON")
        return encoder(value)

    def decode(self, model: type[_M], body: bytes) -> _M:
        decoder = _DECODERS.get(model)
        if decoder is None:
            raise WireDecodeError(
                "Content-Type",
                f"{model.__name__} is not sent as protobuf",
                "send application/json",
            )
        try:
            return cast(_M, decoder(bytes(body)))
        except WireDecodeError:
            raise
        except (ValueError, TypeError, OverflowError, IndexError, KeyError) as exc:
            # A check this decoder lacks: still a 400 naming the message, never a 500.
            raise WireDecodeError(
                "body", f"is not a valid {model.__name__} ({type(exc).__name__}: {exc})"
            ) from None
