"""Fast JSON encoding of request bodies and decoding of responses (orjson).

Pydantic models are dumped once with ``model_dump(mode="python")`` (done in Rust) and the
result handed to orjson with ``OPT_SERIALIZE_NUMPY``, so large token lists and numpy arrays
are never walked element by element in Python. Plain dicts are walked only through their
mappings (``NOT_GIVEN`` values are dropped); lists of scalars are not visited. NaN and
infinity are refused, never written as ``null`` (only a body whose JSON holds ``null`` is
searched for them).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import math
import pathlib
import sys
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel

from tinkex_types import NotGiven, TinkexValidationError

__all__ = ["decode_json", "encode_json", "to_jsonable"]

_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_SCALARS = (str, int, float, bool, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)


def _dump_model(model: BaseModel, exclude_none: bool) -> Any:
    return model.model_dump(mode="python", by_alias=True, exclude_none=exclude_none)


def to_jsonable(value: Any, *, exclude_none: bool = False) -> Any:
    """Turn ``value`` into something orjson serialises, with the least Python work.

    Models are dumped; mappings are copied without ``NOT_GIVEN`` entries (and without
    ``None`` entries when ``exclude_none``); lists are visited only when their first item is
    a container (a list of numbers is passed through untouched).
    """
    kind = type(value)
    if isinstance(value, list) and (not value or type(value[0]) in _SCALAR_TYPES):
        return value  # the common case first: no ABC checks (isinstance on Mapping is slow)
    if kind is not dict and isinstance(value, BaseModel):
        return _dump_model(value, exclude_none)
    if kind is dict or isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if isinstance(v, NotGiven) or (exclude_none and v is None):
                continue
            out[k] = v if isinstance(v, _SCALARS) else to_jsonable(v, exclude_none=exclude_none)
        return out
    if isinstance(value, (list, tuple)):
        if not value or isinstance(value[0], _SCALARS):
            return value
        return [to_jsonable(v, exclude_none=exclude_none) for v in value]
    return value


def _default(obj: Any) -> Any:
    """orjson fallback for the types it does not know natively."""
    if isinstance(obj, BaseModel):
        return _dump_model(obj, False)
    if isinstance(obj, NotGiven):
        return None
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, tuple):
        return list(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    tolist = getattr(obj, "tolist", None)  # torch tensors, numpy scalars of odd dtypes
    if callable(tolist):
        return tolist()
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def _non_finite_at(value: Any, path: str) -> str | None:
    """The path of the first NaN/infinity in ``value`` (a to_jsonable result), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, Mapping):
        for k, v in value.items():
            found = _non_finite_at(v, f"{path}.{k}" if path else str(k))
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple)):
        try:  # C speed for lists of numbers: a non-finite element makes the sum non-finite
            if math.isfinite(sum(value, 0.0)):
                return None
        except (TypeError, OverflowError):
            pass
        for i, v in enumerate(value):
            found = _non_finite_at(v, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if isinstance(value, BaseModel):
        return _non_finite_at(_dump_model(value, False), path)
    dtype = getattr(value, "dtype", None)  # numpy arrays and scalars
    if getattr(dtype, "kind", "") in ("f", "c"):
        np_ = sys.modules.get("numpy")
        if np_ is not None and not bool(np_.isfinite(value).all()):
            return path or "body"
    return None


def _none_values(value: Any) -> int:
    """How many mapping entries of ``value`` (a to_jsonable result) hold ``None``; lists of
    scalars are not visited (what is not visited can only make the count smaller)."""
    count = 0
    if type(value) is dict or isinstance(value, Mapping):
        for v in value.values():
            if v is None:
                count += 1
            elif type(v) in _SCALAR_TYPES:
                continue
            elif isinstance(v, (dict, list, tuple, Mapping)):
                count += _none_values(v)
    elif isinstance(value, (list, tuple)) and value and not isinstance(value[0], _SCALARS):
        for v in value:
            count += _none_values(v)
    return count


def _nulls_explained(jsonable: Any, out: bytes) -> bool:
    """True when every ``null`` orjson wrote in ``out`` is a ``None`` mapping value, so none
    is a NaN or infinity (a C-speed search of the body plus a walk that skips number lists).

    An array element written as ``null`` follows ``[`` or ``,``: then, or when the body is
    not an object or array, the answer is False (search the values). Otherwise every
    ``null`` is a mapping value (``:null``); each ``None`` entry found accounts for one, and
    when they account for all of them, no NaN/infinity was written."""
    if out[:1] not in (b"{", b"["):
        return False
    values = 0
    at = out.find(b"n")  # one byte: memchr, far faster than searching for "null"
    while at >= 0:  # numbers hold no "n": only keys, strings and nulls are visited
        if out[at : at + 4] == b"null":
            if out[at - 1] != 0x3A:  # ':' -- else an array element, or inside a string
                return False
            values += 1
        at = out.find(b"n", at + 1)
    return _none_values(jsonable) == values


class _NotNative(Exception):
    """A value the direct encoding does not write as :func:`to_jsonable` would."""


#: The direct path hands every subclass of list, dict, str and int to :func:`_direct_default`.
_DIRECT_OPTS = _OPTS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _direct_default(obj: Any) -> Any:
    """orjson fallback of the direct path. A list that keeps the numpy array it was built
    from (``TensorData.data`` / ``EncodedTextChunk.tokens`` of a numpy-built model, which
    refuse in-place changes) is written from the array, float32 through float64 so the
    digits are those of its Python floats; another such list as a list; models are dumped
    (as :func:`to_jsonable` does). Anything else (``NOT_GIVEN``, which a mapping must drop,
    a str or dict subclass...) sends the body through :func:`to_jsonable`."""
    if isinstance(obj, list) and hasattr(obj, "finite"):  # tinkex_types' ArrayList
        array = getattr(obj, "array", None)
        if array is not None and array.ndim == 1 and len(array) == len(obj):
            return array.astype("<f8") if array.dtype.kind == "f" else array
        return orjson.Fragment(orjson.dumps(obj, option=_OPTS))
    if isinstance(obj, BaseModel):
        return _dump_model(obj, False)
    raise _NotNative


def _encode_direct(body: Any) -> bytes | None:
    """``body`` (a dict or list, e.g. a ``to_json_dict()``) written by orjson as it is, with
    no Python copy of its mappings; None when it holds something only
    :func:`to_jsonable` handles."""
    try:
        return orjson.dumps(body, default=_direct_default, option=_DIRECT_OPTS)
    except TypeError as exc:  # orjson.JSONEncodeError: the cause is our _NotNative
        if isinstance(exc.__cause__, _NotNative):
            return None
        raise TypeError(f"request body is not JSON-encodable: {exc}") from None


def encode_json(body: Any, *, exclude_none: bool = False) -> bytes:
    """Encode a request body (model, mapping, list or scalar) to JSON bytes.

    NaN and infinity are refused (``TinkexValidationError`` naming where they are): orjson
    would write them as ``null``, which a server reads as "not given" or a default.
    """
    direct = None
    if not exclude_none and type(body) in (dict, list):
        direct = _encode_direct(body)
    if direct is not None:
        jsonable, out = body, direct
    else:
        jsonable = to_jsonable(body, exclude_none=exclude_none)
        try:
            out = orjson.dumps(jsonable, default=_default, option=_OPTS)
        except TypeError as exc:
            raise TypeError(f"request body is not JSON-encodable: {exc}") from None
    if not _nulls_explained(jsonable, out):
        # Only then can a non-finite number have been written.
        where = _non_finite_at(jsonable, "")
        if where is not None:
            raise TinkexValidationError(
                where or "body",
                "is NaN or infinite, which JSON cannot carry (it would be sent as null)",
                "use a finite number",
            )
    return out


def decode_json(content: bytes) -> Any:
    """Decode a JSON response body; an empty body decodes to ``{}``.

    ``NaN``, ``Infinity`` and ``-Infinity`` (which servers write for a diverged loss, as
    Python's ``json`` does) are read as floats. Raises ``orjson.JSONDecodeError`` (a
    ``ValueError``) on invalid JSON.
    """
    if not content or not content.strip():
        return {}
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        if b"NaN" not in content and b"Infinity" not in content:
            raise
        try:
            return json.loads(content)  # orjson refuses the non-finite constants
        except ValueError:
            pass
        raise
