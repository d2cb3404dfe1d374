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


def _dump_model(model: BaseModel, exclude_none: bool) -> Any:
    return model.model_dump(mode="python", by_alias=True, exclude_none=exclude_none)


def to_jsonable(value: Any, *, exclude_none: bool = False) -> Any:
    """Turn ``value`` into something orjson serialises, with the least Python work.

    Models are dumped; mappings are copied without ``NOT_GIVEN`` entries (and without
    ``None`` entries when ``exclude_none``); lists are visited only when their first item is
    a container (a list of numbers is passed through untouched).
    """
    if isinstance(value, BaseModel):
        return _dump_model(value, exclude_none)
    if isinstance(value, Mapping):
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


def encode_json(body: Any, *, exclude_none: bool = False) -> bytes:
    """Encode a request body (model, mapping, list or scalar) to JSON bytes.

    NaN and infinity are refused (``TinkexValidationError`` naming where they are): orjson
    would write them as ``null``, which a server reads as "not given" or a default.
    """
    jsonable = to_jsonable(body, exclude_none=exclude_none)
    try:
        out = orjson.dumps(jsonable, default=_default, option=_OPTS)
    except TypeError as exc:
        raise TypeError(f"request body is not JSON-encodable: {exc}") from None
    if b"null" in out:  # only then can a non-finite number have been written
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
