"""DmelChunk: a DMel token tensor as a model-input chunk (tinker 0.38).

``dmel`` holds serialized TensorContainer bytes; JSON carries them as base64. Its
:attr:`~DmelChunk.length` (the token count) is the first dimension of the container's
shape, read from the header without decoding the payload.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from pydantic import field_serializer, field_validator

from tinkex_types._base import WireModel

__all__ = ["DmelChunk", "tensor_container_shape"]

_CONSTANT_MARKER = 254
_MAX_DTYPE_BYTE = 7


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 64, 7):
        if offset >= len(data):
            raise ValueError("the TensorContainer header is truncated")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
    raise ValueError("a TensorContainer varint is longer than 64 bits")


def tensor_container_shape(data: bytes) -> tuple[int, ...]:
    """The shape in a TensorContainer header: [254 (constant tensor)] dtype byte (0-7),
    ndim varint, one varint per dimension. ``ValueError`` when it is malformed."""
    if not data:
        raise ValueError("the TensorContainer bytes are empty")
    offset = 1 if data[0] == _CONSTANT_MARKER else 0
    if offset >= len(data):
        raise ValueError("the TensorContainer header is truncated")
    if data[offset] > _MAX_DTYPE_BYTE:
        raise ValueError(f"unknown TensorContainer dtype byte {data[offset]}")
    ndim, offset = _varint(data, offset + 1)
    shape: list[int] = []
    for _ in range(ndim):
        dim, offset = _varint(data, offset)
        shape.append(dim)
    return tuple(shape)


class DmelChunk(WireModel):
    """A DMel token tensor (TensorContainer bytes; base64 in JSON)."""

    dmel: bytes
    type: Literal["dmel"] = "dmel"

    @field_validator("dmel", mode="before")
    @classmethod
    def validate_dmel(cls, value: Any) -> Any:
        """A ``str`` is base64 (what JSON carries); bytes-like values are the raw bytes."""
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"dmel must be base64-encoded bytes: {exc}") from exc
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        return value

    @field_serializer("dmel", when_used="json")
    def serialize_dmel(self, value: bytes) -> str:
        """The bytes as base64 text (JSON)."""
        return base64.b64encode(value).decode("ascii")

    @property
    def length(self) -> int:
        """The number of tokens: the tensor's first dimension."""
        shape = tensor_container_shape(self.dmel)
        if not shape:
            raise ValueError("the DMel tensor has no dimension 0")
        return shape[0]
