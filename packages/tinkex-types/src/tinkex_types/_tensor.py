"""TensorData: a flat list of numbers with a dtype and a shape (numpy/torch optional)."""

from __future__ import annotations

import math
import numbers
import operator
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Self

from pydantic import ConfigDict, ModelWrapValidatorHandler, field_validator, model_validator
from pydantic_core import PydanticCustomError

from tinkex_types._base import TensorDtype
from tinkex_types._lazy import ArrayList, LazyListModel, new_model, stored_array
from tinkex_types._numbers import (
    FLOAT32_MAX,
    all_finite,
    first_non_finite,
    int_rule,
    plain_int_list,
)
from tinkex_types._sparse import check_pad_value, csr_of, csr_problem, densify

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import numpy.typing as npt
    import torch

__all__ = [
    "ArrayList",
    "RefusedTensor",
    "TensorData",
    "array_of",
    "require_numpy",
    "require_torch",
    "tensor_all_finite",
    "tensor_first_non_finite",
]


def require_numpy() -> Any:
    """Import numpy or raise an ImportError that says what to install."""
    try:
        import numpy
    except ImportError as exc:  # pragma: no cover - numpy is present in every test env
        raise ImportError(
            "numpy is needed for array conversion; install it with `pip install numpy`"
        ) from exc
    return numpy


def require_torch() -> Any:
    """Import torch or raise an ImportError that says what to install."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is present in every test env
        raise ImportError(
            "torch is needed for tensor conversion; install it with `pip install torch` "
            "(or `pip install tinkex-clients[torch]`)"
        ) from exc
    return torch


def _product(shape: list[int]) -> int:
    return math.prod(shape)


# Type sets for C-speed element checks (``set.issuperset(map(type, data))``): exact types,
# so bools and numpy scalars take the slow, converting path.
_NUMBER_TYPES: frozenset[type] = frozenset({int, float})
#: The numpy dtype (little-endian) of each TensorData dtype.
_NP_DTYPE: dict[str, str] = {"int64": "<i8", "float32": "<f4"}
_INT_TYPE: frozenset[type] = frozenset({int})
#: The fields a tensor built from an array counts as set (``model_dump(exclude_unset=True)``).
_SET_FIELDS: frozenset[str] = frozenset({"data", "dtype", "shape"})


def _dense(dtype: TensorDtype, shape: list[int]) -> dict[str, Any]:
    """The fields after ``data`` of a dense tensor."""
    return {"dtype": dtype, "shape": shape, "sparse_crow_indices": None, "sparse_col_indices": None}


_FLOAT_TYPE: frozenset[type] = frozenset({float})


def _fits_int64(data: list[int]) -> bool:
    return not data or (min(data) >= -(2**63) and max(data) < 2**63)


def array_of(values: Any, np_dtype: Any) -> Any:
    """The numpy array an :class:`ArrayList` keeps, if it has one of ``np_dtype``."""
    arr = getattr(values, "array", None)
    if arr is not None and arr.dtype == np_dtype:
        return arr
    return None


def tensor_all_finite(td: TensorData) -> bool:
    """True when a tensor holds no NaN or infinity (vectorised for an array-held one)."""
    arr = stored_array(td, "<f4")
    if arr is not None:
        np_ = require_numpy()
        return bool(np_.isfinite(arr).all())
    return all_finite(td.data)


def tensor_first_non_finite(td: TensorData) -> int | None:
    """:func:`~tinkex_types._numbers.first_non_finite` of a float32 tensor's values
    (vectorised for an array-held one: float32 values are within the float32 range)."""
    arr = stored_array(td, "<f4")
    if arr is not None:
        np_ = require_numpy()
        bad = np_.flatnonzero(~np_.isfinite(arr))
        return int(bad[0]) if bad.size else None
    return first_non_finite(td.data)


class RefusedTensor:
    """Stands for a value that could not become a TensorData (a list holding ``None``, a
    ragged list...) where the conversion ran before pydantic's validation (``Datum``'s
    ``loss_fn_inputs``): validating it as a TensorData raises a validation error with
    ``problem`` at the value's own location (``loss_fn_inputs.weights``)."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def __repr__(self) -> str:
        return f"RefusedTensor({self.problem!r})"


class TensorData(LazyListModel):
    """``{"data": [...], "dtype": "int64" | "float32", "shape": [...]}``.

    ``data`` is the row-major flattening; ``shape`` ``None`` means 1-D. A sparse CSR
    tensor (SDK 0.38) also has ``sparse_crow_indices``/``sparse_col_indices`` (below).
    Extra keys are forbidden (0.16.1 rejects them in responses). ``from_numpy``/``to_numpy``
    and ``from_torch``/``to_torch`` are lossless for float32 (every bit, NaN payloads
    included) and int64. A tensor built from an array keeps a copy of it and builds the
    ``data`` list only when it is read (``tinkex_types._lazy``).
    """

    model_config = ConfigDict(extra="forbid")
    lazy_field: ClassVar[str] = "data"

    data: list[int] | list[float]
    dtype: TensorDtype
    shape: list[Annotated[int, int_rule(ge=0)]] | None = None
    #: Sparse CSR layout (SDK 0.38): ``data`` holds only the listed values, row by row;
    #: ``sparse_crow_indices`` the ``rows + 1`` row offsets into them and
    #: ``sparse_col_indices`` their columns; ``shape`` (2-D) is the dense shape. Every other
    #: entry is the ``pad_value`` given when densifying (0 when the server densifies).
    sparse_crow_indices: list[Annotated[int, int_rule(ge=0)]] | None = None
    sparse_col_indices: list[Annotated[int, int_rule(ge=0)]] | None = None

    def __init__(
        self,
        data: Any = None,
        dtype: TensorDtype | None = None,
        shape: list[int] | None = None,
        sparse_crow_indices: list[int] | None = None,
        sparse_col_indices: list[int] | None = None,
        **extra: Any,
    ) -> None:
        """As SDK 0.38: positional or keyword; ``data`` may be a list or a numpy array
        (converted to ``dtype``; its shape is kept when ``shape`` is not given) and defaults
        to empty. ``dtype`` is required."""
        values: dict[str, Any] = dict(extra)
        values["data"] = [] if data is None else data
        if _is_numpy_array(data):
            values["data"], array_shape = _array_values(data, dtype)
            if shape is None and sparse_crow_indices is None and len(array_shape) != 1:
                shape = array_shape
        for key, value in (
            ("dtype", dtype),
            ("shape", shape),
            ("sparse_crow_indices", sparse_crow_indices),
            ("sparse_col_indices", sparse_col_indices),
        ):
            if value is not None:
                values[key] = value
        super().__init__(**values)

    @field_validator("data", mode="plain", json_schema_input_type=list[int] | list[float])
    @classmethod
    def _numbers(cls, value: Any) -> list[int] | list[float]:
        # A plain validator: a union of two 1M-element list schemas costs seconds when the
        # first member fails on every element; the dtype-specific checks run after.
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ValueError(f"data must be a flat list of numbers, got {type(value).__name__}")
        out: list[Any] = value
        if not _NUMBER_TYPES.issuperset(map(type, out)):  # C-speed "all plain int/float"
            out = [_number(v, i) for i, v in enumerate(out)]
        return out

    @model_validator(mode="wrap")
    @classmethod
    def _checked(cls, value: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        # An existing instance is taken as it is, as pydantic does for models (an "after"
        # validator would re-scan every element each time a TensorData is nested).
        if isinstance(value, cls):
            return value
        if isinstance(value, RefusedTensor):
            raise PydanticCustomError("tensor_data", "{problem}", {"problem": value.problem})
        return handler(value)._check()

    def _check(self) -> Self:
        data = self.data
        crow, col = self.sparse_crow_indices, self.sparse_col_indices
        if crow is not None or col is not None:
            problem = csr_problem(crow, col, len(data), self.shape)
            if problem is not None:
                raise ValueError(problem)
        elif self.shape is not None and _product(self.shape) != len(data):
            raise ValueError(
                f"shape {self.shape} holds {_product(self.shape)} elements but data has "
                f"{len(data)}; give data as the row-major flattening of the shape"
            )
        if self.dtype == "int64":
            if not _INT_TYPE.issuperset(map(type, data)):
                ints: list[int] = []
                for i, v in enumerate(data):
                    if isinstance(v, float) and v.is_integer():
                        ints.append(int(v))
                    elif isinstance(v, int):
                        ints.append(v)
                    else:
                        raise ValueError(
                            f"dtype int64 needs integers, data[{i}] is {v!r} (values are "
                            "never rounded; use dtype float32 for fractional values)"
                        )
                self.__dict__["data"] = data = ints
            if data and not (min(data) >= -(2**63) and max(data) < 2**63):
                raise ValueError("data holds integers that do not fit int64")
        elif not _FLOAT_TYPE.issuperset(map(type, data)):
            self.__dict__["data"] = [float(v) for v in data]
        return self

    def __repr_args__(self) -> Any:
        # A dense tensor shows as before the sparse fields existed.
        for key, value in super().__repr_args__():
            if value is not None or not (key or "").startswith("sparse_"):
                yield key, value

    # -- helpers ------------------------------------------------------------------------
    @property
    def is_sparse(self) -> bool:
        """True for a sparse CSR tensor (``sparse_crow_indices`` set)."""
        return self.sparse_crow_indices is not None

    @property
    def size(self) -> int:
        """Number of elements (of the dense tensor, for a sparse one)."""
        return _product(self.shape) if self.is_sparse and self.shape else self._lazy_len()

    @property
    def effective_shape(self) -> list[int]:
        """``shape``, or ``[len(data)]`` when it is absent."""
        return list(self.shape) if self.shape is not None else [self._lazy_len()]

    def tolist(self, pad_value: int = 0) -> Any:
        """The values as nested Python lists following ``shape`` (a scalar for shape []);
        a sparse tensor is densified with ``pad_value`` in every unlisted entry."""
        if self.is_sparse:
            return self.to_numpy(pad_value).tolist()
        shape = self.effective_shape
        flat: list[Any] = list(self.data)
        if not shape:
            return flat[0]
        for dim in reversed(shape[1:]):
            flat = [flat[i : i + dim] for i in range(0, len(flat), dim)] if dim else []
        if len(shape) > 1 and any(d == 0 for d in shape[1:]):
            return _empty_nested(shape)
        return flat

    def densified(self, pad_value: int = 0) -> TensorData:
        """This tensor as a dense one (itself when it is dense already)."""
        if not self.is_sparse:
            return self
        return TensorData.from_numpy(self.to_numpy(pad_value))

    @classmethod
    def from_list(cls, values: Any, dtype: TensorDtype | None = None) -> TensorData:
        """Build from a (possibly nested) list of numbers; ``dtype`` is inferred if omitted
        (all ints -> int64, otherwise float32)."""
        if isinstance(values, (list, tuple)):
            fast = _flat_fast(values, dtype)
            if fast is not None:  # flat and already of the dtype: nothing left to check
                fields = {"data": fast[0], **_dense(fast[1], [len(values)])}
                return new_model(cls, fields, set(_SET_FIELDS))
        flat: list[Any]
        kinds: set[type] | None = None
        if isinstance(values, (list, tuple)):
            kinds = set(map(type, values))
        if kinds is not None and _NUMBER_TYPES.issuperset(kinds):
            flat, shape = list(values), [len(values)]  # the common flat case, fast
        else:
            kinds = None
            flat = []
            shape = _flatten(values, flat, 0, [])
        if dtype is None:
            dtype = (
                "int64"
                if flat and all(isinstance(v, int) and not isinstance(v, bool) for v in flat)
                else "float32"
            )
        if kinds is not None:
            # Flat plain ints/floats: when they already fit the dtype, the checks of
            # validation reduce to the int64 range, so skip the per-element passes.
            if dtype == "float32" and kinds <= _FLOAT_TYPE:
                return cls.model_construct(data=flat, dtype=dtype, shape=shape)
            if dtype == "int64" and kinds <= _INT_TYPE and _fits_int64(flat):
                return cls.model_construct(data=flat, dtype=dtype, shape=shape)
        return cls(data=flat, dtype=dtype, shape=shape)

    # -- numpy --------------------------------------------------------------------------
    @classmethod
    def from_numpy(cls, array: npt.ArrayLike) -> TensorData:
        """Build from a numpy array. Integer and bool arrays become int64; floating arrays
        become float32 (float16 widens exactly, float64 rounds to nearest float32)."""
        np_ = require_numpy()
        arr = np_.asarray(array)
        kind = arr.dtype.kind
        shape = [int(d) for d in arr.shape]
        if kind in "biu":
            if arr.dtype == np_.uint64 and arr.size and int(arr.max()) >= 2**63:
                raise ValueError("uint64 values >= 2**63 do not fit int64")
            i64 = np_.ascontiguousarray(arr.astype("<i8").ravel())
            return cls._lazy(i64, _dense("int64", shape), _SET_FIELDS)
        if kind == "f":
            with np_.errstate(over="ignore"):  # beyond float32: infinity (IEEE rounding)
                f32 = np_.ascontiguousarray(arr.astype("<f4").ravel())
            return cls._lazy(f32, _dense("float32", shape), _SET_FIELDS)
        raise TypeError(f"cannot convert a numpy array of dtype {arr.dtype} to TensorData")

    def _list_from(self, array: Any) -> list[Any]:
        if self.dtype == "float32":
            np_ = require_numpy()
            return ArrayList(_f32_to_pylist(array), array, finite=bool(np_.isfinite(array).all()))
        return ArrayList(array.tolist(), array, finite=True)

    def to_numpy(self, pad_value: int = 0) -> np.ndarray[Any, Any]:
        """A new numpy array (int64 or float32) with this shape; a sparse CSR tensor is
        densified with ``pad_value`` (an integer) in every unlisted entry."""
        if self.is_sparse:
            pad = check_pad_value(pad_value)
            flat = self._flat_numpy()
            crow, col = self.sparse_crow_indices or [], self.sparse_col_indices or []
            dense = densify(flat, crow, col, self.shape or [0, 0], pad)
            return dense  # type: ignore[no-any-return]
        return self._flat_numpy().reshape(tuple(self.effective_shape))  # type: ignore[no-any-return]

    def _flat_numpy(self) -> Any:
        """A new 1-D array of the stored values (the listed ones of a sparse tensor)."""
        np_ = require_numpy()
        arr = stored_array(self, _NP_DTYPE[self.dtype])
        if arr is not None:
            return arr.copy()
        if self.dtype == "int64":
            return np_.asarray(self.data, dtype=np_.int64)
        return _pylist_to_f32(self.data)

    # -- torch --------------------------------------------------------------------------
    @classmethod
    def from_torch(cls, tensor: torch.Tensor) -> TensorData:
        """Build from a torch tensor (any device; detached). Floating tensors become float32
        (bfloat16/float16 widen exactly), integer and bool tensors int64."""
        torch_ = require_torch()
        t = tensor.detach().cpu()
        if t.is_complex():
            raise TypeError(f"cannot convert a complex tensor ({t.dtype}) to TensorData")
        t = t.to(torch_.float32 if t.is_floating_point() else torch_.int64)
        return cls.from_numpy(t.numpy())

    @classmethod
    def from_torch_sparse(cls, tensor: torch.Tensor, pad_value: int = 0) -> TensorData:
        """A sparse CSR tensor from a dense 2-D torch tensor, leaving out the entries equal
        to ``pad_value`` (an integer); dense (as :meth:`from_torch`) when the tensor is not
        2-D or CSR would not be smaller (as SDK 0.38)."""
        pad = check_pad_value(pad_value)
        dense = cls.from_torch(tensor)
        if len(dense.effective_shape) != 2:
            return dense
        found = csr_of(dense.to_numpy(), pad)
        if found is None:
            return dense
        values, crow, col = found
        flat = cls.from_numpy(values)
        fields = {
            "dtype": dense.dtype,
            "shape": dense.effective_shape,
            "sparse_crow_indices": crow,
            "sparse_col_indices": col,
        }
        return cls._lazy(
            stored_array(flat, _NP_DTYPE[dense.dtype]), fields, {*_SET_FIELDS, *fields}
        )

    def to_torch(self, pad_value: int = 0) -> torch.Tensor:
        """A new CPU torch tensor (``torch.int64`` or ``torch.float32``) with this shape; a
        sparse CSR tensor is densified with ``pad_value``."""
        torch_ = require_torch()
        return torch_.from_numpy(self.to_numpy(pad_value))  # type: ignore[no-any-return]


def _is_numpy_array(value: object) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "ndim")


def _array_values(array: Any, dtype: TensorDtype | None) -> tuple[list[Any], list[int]]:
    """The data list (an :class:`ArrayList`) of a numpy array given to ``TensorData(...)``,
    converted to ``dtype`` when given, and the array's shape."""
    np_ = require_numpy()
    array = np_.asarray(array)
    shape = [int(d) for d in array.shape]
    if dtype == "int64" and array.dtype.kind in "fc":
        # Never rounded: validation converts integral values and names a fractional one.
        return array.ravel().tolist(), shape
    if dtype == "float32" and array.dtype.kind in "biu":
        array = array.astype(np_.float64)
    return TensorData.from_numpy(array).data, shape


_F32_VALIDATOR: Any = None


def _finite_floats(values: list[Any] | tuple[Any, ...]) -> list[float] | None:
    """``values`` as floats when each is a number (not a bool) that is finite and within the
    float32 range, in one pass in pydantic-core; None when any is not (check one by one)."""
    global _F32_VALIDATOR
    if _F32_VALIDATOR is None:
        from pydantic_core import SchemaValidator, ValidationError, core_schema

        item = core_schema.float_schema(
            strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX
        )
        _F32_VALIDATOR = (SchemaValidator(core_schema.list_schema(item)), ValidationError)
    validator, error = _F32_VALIDATOR
    try:
        out: list[float] = validator.validate_python(values)
    except error:
        return None
    return out


def _flat_fast(
    flat: list[Any] | tuple[Any, ...], dtype: TensorDtype | None
) -> tuple[list[Any], TensorDtype] | None:
    """The data (a new list) and dtype of a flat list that needs no per-element conversion,
    or None: plain ints (int64, or inferred), or finite float32-range numbers for dtype
    float32."""
    if dtype == "float32":
        floats = _finite_floats(flat)
        return None if floats is None else (ArrayList(floats, finite=True), "float32")
    if (dtype == "int64" or (dtype is None and flat)) and plain_int_list(flat):
        return list(flat), "int64"
    return None


def _number(value: Any, index: int) -> int | float:
    """A plain int or float from a number (numpy scalars included); bools are refused."""
    if isinstance(value, (bool, str, bytes)) or getattr(value, "dtype", None) == "bool":
        raise ValueError(f"data must hold numbers, data[{index}] is {value!r}")
    if isinstance(value, int) or hasattr(value, "__index__"):
        return operator.index(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise ValueError(f"data must hold numbers, data[{index}] is {value!r}")


def _empty_nested(shape: list[int]) -> Any:
    if not shape or shape[0] == 0:
        return []
    return [_empty_nested(shape[1:]) for _ in range(shape[0])]


def _flatten(values: Any, out: list[Any], depth: int, shape: list[int]) -> list[int]:
    if isinstance(values, (list, tuple)):
        if len(shape) <= depth:
            shape.append(len(values))
        elif shape[depth] != len(values):
            raise ValueError(
                f"ragged nested list: dimension {depth} has lengths "
                f"{shape[depth]} and {len(values)}"
            )
        for v in values:
            _flatten(v, out, depth + 1, shape)
        if not values and len(shape) > depth + 1:
            raise ValueError("ragged nested list")
        return shape
    if depth != len(shape):
        raise ValueError(f"ragged nested list: a scalar at depth {depth}")
    if isinstance(values, bool) or not isinstance(values, (int, float)):
        # A ValueError (not TypeError), so pydantic reports it as a validation error.
        shown = "null" if values is None else f"{values!r}"[:60]
        raise ValueError(
            f"element {len(out)} (row-major) is {shown} ({type(values).__name__}): "
            "tensor data must hold numbers only"
        )
    out.append(values)
    return shape


# float32 <-> Python float (float64), bit-exact also for NaN payloads (the FPU would quiet
# signalling NaNs on a plain cast).


_MASK_MIN = 64  # below this, the masks below cost more than they save
_ONE_BITS = 0x3F800000  # float32 1.0
_MASK_VALUES: Any = None


def _mask_to_pylist(f32: Any) -> list[float] | None:
    """A float32 array holding only +0.0 and 1.0 (a weights mask) as a list sharing two
    float objects (no float allocated per element), or None."""
    global _MASK_VALUES
    np_ = require_numpy()
    bits = f32.view(np_.uint32)
    ones = bits == _ONE_BITS
    if not (ones | (bits == 0)).all():
        return None
    if _MASK_VALUES is None:
        _MASK_VALUES = np_.array([0.0, 1.0], dtype=object)
    return _MASK_VALUES[ones.view(np_.uint8)].tolist()  # type: ignore[no-any-return]


def _f32_to_pylist(f32: Any) -> list[float]:
    np_ = require_numpy()
    if f32.size >= _MASK_MIN and f32.dtype == np_.dtype("<f4") and f32.flags.c_contiguous:
        mask = _mask_to_pylist(f32)
        if mask is not None:
            return mask
    with np_.errstate(invalid="ignore"):  # a signalling NaN: its bits are restored below
        f64 = f32.astype(np_.float64)
    nan = np_.isnan(f32)
    if nan.any():
        bits = f32.view(np_.uint32)[nan].astype(np_.uint64)
        sign = (bits >> np_.uint64(31)) << np_.uint64(63)
        mant = (bits & np_.uint64(0x7FFFFF)) << np_.uint64(29)
        f64.view(np_.uint64)[nan] = sign | np_.uint64(0x7FF0000000000000) | mant
    return f64.tolist()  # type: ignore[no-any-return]


def _pylist_to_f32(values: list[Any]) -> Any:
    np_ = require_numpy()
    f64 = np_.asarray(values, dtype=np_.float64)
    with np_.errstate(over="ignore", invalid="ignore"):
        out = f64.astype(np_.float32)
    nan = np_.isnan(f64)
    if nan.any():
        bits = f64.view(np_.uint64)[nan]
        sign = (bits >> np_.uint64(63)) << np_.uint64(31)
        mant = (bits >> np_.uint64(29)) & np_.uint64(0x7FFFFF)
        mant = np_.where(mant == 0, np_.uint64(0x400000), mant)
        out.view(np_.uint32)[nan] = (sign | np_.uint64(0x7F800000) | mant).astype(np_.uint32)
    return out
