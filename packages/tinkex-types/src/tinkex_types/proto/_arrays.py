"""Raw little-endian buffers <-> Python lists and TensorData, with numpy (no per-element loops).

Every decoding helper checks what it reads and raises :class:`WireDecodeError` naming the
field; every encoding helper raises :class:`TinkexValidationError` naming the field.
"""

from __future__ import annotations

import array
import math
import sys
from typing import Any

import numpy as np
import numpy.typing as npt

from tinkex_types._base import TensorDtype
from tinkex_types._codec import WireDecodeError
from tinkex_types._errors import TinkexValidationError
from tinkex_types._lazy import stored_array
from tinkex_types._model_input import EncodedTextChunk
from tinkex_types._numbers import INT32_MAX, INT32_MIN
from tinkex_types._sparse import csr_problem
from tinkex_types._tensor import TensorData, _f32_to_pylist, _pylist_to_f32, array_of
from tinkex_types.proto import tinker_public_pb2 as pb

__all__ = [
    "DTYPE_OF",
    "WIRE_DTYPE",
    "buffer_of",
    "decode_f32",
    "decode_i32",
    "dims_of",
    "encode_f32",
    "encode_i32",
    "encode_tokens",
    "tensor_array",
    "tensor_buffer",
    "tensor_from_proto",
    "tensor_to_proto",
    "tokens_buffer",
    "values_to_list",
    "wire_dtype_of",
]

Array = npt.NDArray[Any]

#: proto DType -> (numpy dtype of the buffer, TensorData dtype after widening).
DTYPE_OF: dict[int, tuple[np.dtype[Any], TensorDtype]] = {
    pb.DTYPE_FLOAT32: (np.dtype("<f4"), "float32"),
    pb.DTYPE_INT64: (np.dtype("<i8"), "int64"),
    pb.DTYPE_INT32: (np.dtype("<i4"), "int64"),
    pb.DTYPE_BFLOAT16: (np.dtype("<u2"), "float32"),
}
#: TensorData dtype -> (proto DType, numpy dtype written).
WIRE_DTYPE: dict[str, tuple[pb.DType, np.dtype[Any]]] = {
    "float32": (pb.DTYPE_FLOAT32, np.dtype("<f4")),
    "int64": (pb.DTYPE_INT64, np.dtype("<i8")),
}


def buffer_of(buf: bytes, dtype: np.dtype[Any], field: str) -> Array:
    """``buf`` as a read-only array of ``dtype``; a ragged length is refused."""
    if len(buf) % dtype.itemsize:
        raise WireDecodeError(
            field,
            f"holds {len(buf)} bytes, not a whole number of {dtype.itemsize}-byte values",
            "send a raw little-endian array",
        )
    return np.frombuffer(buf, dtype=dtype)


def decode_i32(buf: bytes, field: str) -> list[int]:
    """Packed int32 (token ids) -> a list of ints."""
    out: list[int] = buffer_of(buf, np.dtype("<i4"), field).tolist()
    return out


def decode_f32(buf: bytes, field: str) -> Array:
    """Packed float32 -> a float32 array (read-only view of ``buf``)."""
    return buffer_of(buf, np.dtype("<f4"), field)


def _narrow_i32(arr: Array, field: str) -> Array:
    if arr.size and (arr.min() < INT32_MIN or arr.max() > INT32_MAX):
        raise _not_int32(field)
    return arr.astype("<i4")


def tokens_buffer(chunk: EncodedTextChunk, field: str) -> Array:
    """A text chunk's token ids as a packed int32 array (from the array a numpy-built
    chunk holds, without its list); ids outside int32 are refused. A buffer, so that
    ``bytes.join`` copies it once, into the body."""
    arr = stored_array(chunk, _I8)
    if arr is not None:
        return _narrow_i32(arr, field)
    tokens = chunk.tokens  # checked ints: one C pass, which refuses what int32 cannot hold
    try:
        return np.fromiter(tokens, "<i4", count=len(tokens))
    except (OverflowError, ValueError, TypeError):
        raise _not_int32(field) from None


def encode_tokens(chunk: EncodedTextChunk, field: str) -> bytes:
    """:func:`tokens_buffer` as bytes."""
    packed: bytes = tokens_buffer(chunk, field).tobytes()
    return packed


def encode_i32(values: Any, field: str) -> bytes:
    """Token ids -> packed int32; ids outside int32 are refused."""
    arr = array_of(values, _I8)
    if arr is not None:  # kept from a numpy array: check the range and narrow, vectorised
        narrowed: bytes = _narrow_i32(arr, field).tobytes()
        return narrowed
    if _C_INT32:
        try:
            exact = values if type(values) is list else list(values)  # array's fast path
            packed = array.array("i", exact)  # one C pass; refuses what int32 cannot hold
        except (OverflowError, ValueError, TypeError):
            raise _not_int32(field) from None
        if sys.byteorder != "little":  # pragma: no cover - little-endian hosts
            packed.byteswap()
        return packed.tobytes()
    try:  # pragma: no cover - a C int of another width
        return np.asarray(values, dtype="<i4").tobytes()
    except (OverflowError, ValueError, TypeError):
        raise _not_int32(field) from None


_C_INT32 = array.array("i").itemsize == 4
#: Whether ``array`` packs C float / long long as little-endian float32 / int64 here.
_C_PACKS = (
    sys.byteorder == "little" and array.array("f").itemsize == 4 and array.array("q").itemsize == 8
)
_I8 = np.dtype("<i8")


def _not_int32(field: str) -> TinkexValidationError:
    return TinkexValidationError(
        field, "holds a value that is not an int32 token id", "token ids must fit int32"
    )


def encode_f32(values: Any) -> bytes:
    """Floats (``None`` allowed, written as NaN) -> packed float32."""
    if isinstance(values, np.ndarray):
        return values.astype("<f4", copy=False).tobytes()
    arr = np.asarray(values, dtype=np.float64)  # None -> NaN
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype("<f4").tobytes()


def values_to_list(arr: Array, wire: int) -> list[Any]:
    """A decoded buffer as Python numbers of its TensorData dtype (bf16/f32 -> float,
    int32/int64 -> int), float32 bit-exact (NaN payloads kept)."""
    if wire == pb.DTYPE_BFLOAT16:
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    if arr.dtype.kind == "f":
        return _f32_to_pylist(arr)
    out: list[Any] = arr.tolist()
    return out


def dims_of(dims: Any, field: str) -> list[int]:
    """A repeated int64 shape field as a list; negative dimensions are refused."""
    shape = [int(d) for d in dims]
    if any(d < 0 for d in shape):
        raise WireDecodeError(field, f"has a negative dimension: {shape}")
    return shape


def wire_dtype_of(value: int, field: str) -> tuple[np.dtype[Any], TensorDtype]:
    found = DTYPE_OF.get(value)
    if found is None:
        raise WireDecodeError(
            f"{field}.dtype",
            f"DType {value} is not FLOAT32, INT64, INT32 or BFLOAT16",
            "set the tensor's dtype",
        )
    return found


def _densify_csr(msg: pb.Tensor, np_dtype: np.dtype[Any], shape: list[int], field: str) -> Array:
    csr = msg.sparse_csr
    where = f"{field}.sparse_csr"
    if len(shape) != 2:
        raise WireDecodeError(f"{field}.shape", f"a CSR tensor needs a 2-D shape, got {shape}")
    rows, cols = shape
    values = buffer_of(csr.values, np_dtype, f"{where}.values")
    crow = buffer_of(csr.crow_indices, np.dtype("<i8"), f"{where}.crow_indices")
    col = buffer_of(csr.col_indices, np.dtype("<i8"), f"{where}.col_indices")
    nnz = len(values)
    if len(crow) != rows + 1 or crow[0] != 0 or crow[-1] != nnz or np.any(np.diff(crow) < 0):
        raise WireDecodeError(
            f"{where}.crow_indices",
            f"must be {rows + 1} non-decreasing row offsets from 0 to {nnz}",
        )
    if len(col) != nnz or (nnz and (col.min() < 0 or col.max() >= cols)):
        raise WireDecodeError(
            f"{where}.col_indices", f"must be {nnz} column indices in [0, {cols})"
        )
    dense = np.zeros(rows * cols, dtype=np_dtype)
    row_of = np.repeat(np.arange(rows, dtype=np.int64), np.diff(crow))
    dense[row_of * cols + col] = values
    return dense


def _sparse_from_proto(
    msg: pb.Tensor, np_dtype: np.dtype[Any], tensor_dtype: TensorDtype, shape: list[int], field: str
) -> TensorData:
    csr = msg.sparse_csr
    where = f"{field}.sparse_csr"
    values = buffer_of(csr.values, np_dtype, f"{where}.values")
    crow: list[int] = buffer_of(csr.crow_indices, np.dtype("<i8"), f"{where}.crow_indices").tolist()
    col: list[int] = buffer_of(csr.col_indices, np.dtype("<i8"), f"{where}.col_indices").tolist()
    problem = csr_problem(crow, col, len(values), shape)
    if problem is not None:
        raise WireDecodeError(where, problem)
    return TensorData.model_construct(
        data=values_to_list(values, msg.dtype),
        dtype=tensor_dtype,
        shape=shape,
        sparse_crow_indices=crow,
        sparse_col_indices=col,
    )


def tensor_from_proto(msg: pb.Tensor, field: str, *, keep_sparse: bool = False) -> TensorData:
    """A proto ``Tensor`` (dense or CSR) as :class:`TensorData`. A CSR tensor is densified
    (unlisted entries 0: what a request's loss input means), or kept sparse with
    ``keep_sparse``. An empty ``shape`` means 1-D. INT32 widens to int64 and BFLOAT16 to
    float32.
    """
    np_dtype, tensor_dtype = wire_dtype_of(msg.dtype, field)
    shape = dims_of(msg.shape, f"{field}.shape")
    if msg.WhichOneof("encoding") == "sparse_csr":
        if keep_sparse:
            return _sparse_from_proto(msg, np_dtype, tensor_dtype, shape, field)
        flat = _densify_csr(msg, np_dtype, shape, field)
    else:
        flat = buffer_of(msg.dense, np_dtype, f"{field}.dense")
    if shape and math.prod(shape) != len(flat):
        raise WireDecodeError(
            f"{field}.shape", f"{shape} holds {math.prod(shape)} elements but data has {len(flat)}"
        )
    return TensorData.model_construct(
        data=values_to_list(flat, msg.dtype), dtype=tensor_dtype, shape=shape or None
    )


def tensor_array(td: TensorData, field: str) -> Array:
    """The values of ``td`` as a little-endian array of its wire dtype (the array a
    ``from_numpy``/``from_torch`` tensor holds, without a conversion)."""
    wire = WIRE_DTYPE.get(td.dtype)
    arr = None if wire is None else stored_array(td, wire[1])
    if arr is not None:
        return arr  # type: ignore[no-any-return]
    data = td.data
    if td.dtype == "float32":
        if getattr(data, "finite", False):  # no NaN whose payload a cast could change
            return np.asarray(data, dtype="<f4")
        out: Array = _pylist_to_f32(data)
        return out.astype("<f4", copy=False)
    try:
        return np.asarray(data, dtype="<i8")
    except (OverflowError, ValueError, TypeError):
        raise TinkexValidationError(field, "holds a value that does not fit int64") from None


def tensor_buffer(td: TensorData, field: str) -> Array:
    """:func:`tensor_array`, where a list of checked values is packed in one C pass
    (``numpy.fromiter``, faster than ``numpy.asarray`` on a list)."""
    wire = WIRE_DTYPE.get(td.dtype)
    if wire is not None and stored_array(td, wire[1]) is None:
        data = td.data
        if td.dtype == "int64":
            try:
                return np.fromiter(data, wire[1], count=len(data))
            except (OverflowError, ValueError, TypeError):
                raise TinkexValidationError(
                    field, "holds a value that does not fit int64"
                ) from None
        if getattr(data, "finite", False):  # finite and within float32: a plain cast
            return np.fromiter(data, wire[1], count=len(data))
    return tensor_array(td, field)


def tensor_to_proto(td: TensorData, field: str, out: pb.Tensor | None = None) -> pb.Tensor:
    """:class:`TensorData` as a proto ``Tensor``: dense, or CSR for a sparse one (the shape
    is always written)."""
    msg = pb.Tensor() if out is None else out
    wire = WIRE_DTYPE.get(td.dtype)
    if wire is None:
        raise TinkexValidationError(f"{field}.dtype", f"{td.dtype!r} is not float32 or int64")
    msg.dtype = wire[0]
    msg.shape.extend(td.effective_shape)
    values = tensor_buffer(td, field).tobytes()
    if td.is_sparse:  # as SDK 0.38: the listed values, and the indices as int64
        msg.sparse_csr.values = values
        msg.sparse_csr.crow_indices = np.asarray(td.sparse_crow_indices, "<i8").tobytes()
        msg.sparse_csr.col_indices = np.asarray(td.sparse_col_indices, "<i8").tobytes()
    else:
        msg.dense = values
    return msg
