"""The one numeric validation of the protocol, shared by the client and the server.

Every number a request carries is checked by the same rules, wherever it enters:

* **finite**: NaN, ``+inf`` and ``-inf`` are refused (JSON cannot carry them, and encoders
  such as orjson or JavaScript's ``JSON.stringify`` write them as ``null``);
* **a number**: ``bool``, strings and ``None`` are refused (``True`` is not ``1`` here);
* **integral where integral**: an integer field takes ints (numpy integers included), never
  floats (``1.5`` is refused, not truncated; ``2.0`` too); tensor data of dtype int64 also
  takes floats with an integral value (numpy float arrays), see ``TensorData``;
* **in range**: integers fit signed 64 bits (what every integer of the JSON protocol and
  protobuf ``int64`` holds) or a tighter field range; float32 tensors hold values whose
  magnitude fits float32 (a larger one would silently become infinity).

Two faces of the same rules:

* :func:`check_int`, :func:`check_float` raise :class:`~tinkex_types.TinkexValidationError`
  naming the field (for code that validates values by hand, e.g. ``check_sampling_params``);
* :class:`NumberRule` (built by :func:`int_rule`/:func:`float_rule`; ready-made:
  :data:`Int64`, :data:`FiniteFloat`) annotates pydantic fields
  (``rank: Annotated[int, int_rule(ge=1)]``).
  The server decodes requests with the same models, so a bad number is a 4xx naming the
  field. Such fields also refuse an explicit ``null`` (``WireModel`` otherwise reads
  ``null`` as "absent, use the default"): a ``null`` where a number belongs is most likely
  a NaN or infinity that an encoder wrote as ``null``. Omit the key to get the default.
"""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from tinkex_types._errors import TinkexValidationError

__all__ = [
    "FLOAT32_MAX",
    "INT32_MAX",
    "INT32_MIN",
    "INT64_MAX",
    "INT64_MIN",
    "FiniteFloat",
    "Int64",
    "NumberRule",
    "all_finite",
    "check_float",
    "check_int",
    "finite_problem",
    "first_non_finite",
    "float_problem",
    "float_rule",
    "int_problem",
    "int_rule",
    "plain_int_list",
]

#: The signed 64-bit range (every integer of the JSON protocol; protobuf ``int64``).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: The signed 32-bit range (protobuf ``int32``: token ids, ``seq_id``).
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
#: The largest finite float32 (a float64 of larger magnitude becomes infinity in float32).
FLOAT32_MAX = 3.4028234663852886e38


def _bound(value: int) -> str:
    """``2**63``-style text for the protocol's range limits, digits otherwise."""
    for power in (63, 31):
        if value == 2**power - 1:
            return f"2**{power} - 1"
        if value == -(2**power):
            return f"-2**{power}"
    return str(value)


def _shown(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _as_int(value: object) -> int | str:
    """``value`` as an int, or the problem (a string)."""
    if isinstance(value, bool) or getattr(value, "dtype", None) == "bool":
        return f"must be an integer, got {_shown(value)} (a bool is not a number here)"
    if isinstance(value, int):
        return value
    if isinstance(value, numbers.Integral):  # numpy integers
        return operator.index(value)
    return f"must be an integer, got {_shown(value)}"


def int_problem(value: object, low: int = INT64_MIN, high: int = INT64_MAX) -> int | str:
    """``value`` as an int in ``[low, high]``, or a string saying what is wrong with it."""
    number = _as_int(value)
    if isinstance(number, str):
        return number
    if not low <= number <= high:
        return f"{_shown(number)} is out of range [{_bound(low)}, {_bound(high)}]"
    return number


def finite_problem(value: object) -> float | str:
    """``value`` as a finite float (ints included, never bools), or the problem."""
    if isinstance(value, bool) or getattr(value, "dtype", None) == "bool":
        return f"must be a number, got {_shown(value)} (a bool is not a number here)"
    if isinstance(value, float):
        number = value
    elif isinstance(value, numbers.Real) and not isinstance(value, (str, bytes)):
        try:
            number = float(value)
        except OverflowError:
            return f"{_shown(value)} is too large for a float"
    else:
        return f"must be a number, got {_shown(value)}"
    if not math.isfinite(number):
        return f"must be a finite number, got {_shown(value)} (NaN and infinity are refused)"
    return number


def float_problem(
    value: object,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> float | str:
    """``value`` as a finite float within the bounds, or the problem."""
    number = finite_problem(value)
    if isinstance(number, str):
        return number
    if ge is not None and not number >= ge:
        return f"must be >= {ge}, got {number!r}"
    if gt is not None and not number > gt:
        return f"must be > {gt}, got {number!r}"
    if le is not None and not number <= le:
        return f"must be <= {le}, got {number!r}"
    if lt is not None and not number < lt:
        return f"must be < {lt}, got {number!r}"
    return number


def check_int(
    value: object,
    field: str,
    *,
    low: int = INT64_MIN,
    high: int = INT64_MAX,
    fix: str | None = None,
) -> int:
    """``value`` as an int in ``[low, high]``, else a :class:`TinkexValidationError`."""
    number = int_problem(value, low, high)
    if isinstance(number, str):
        raise TinkexValidationError(field, number, fix)
    return number


def check_float(
    value: object,
    field: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    fix: str | None = None,
) -> float:
    """``value`` as a finite float within the bounds, else a :class:`TinkexValidationError`."""
    number = float_problem(value, ge=ge, gt=gt, le=le, lt=lt)
    if isinstance(number, str):
        raise TinkexValidationError(field, number, fix)
    return number


def plain_int_list(values: list[Any] | tuple[Any, ...]) -> bool:
    """True when ``values`` is a flat list of ints (no bools, no floats, no numpy scalars)
    of magnitude below ``2**53``, so it passes every integer rule of the protocol as it is.

    One C-speed pass: orjson writes the list (``OPT_STRICT_INTEGER`` refuses ints beyond 53
    bits, unknown types raise) and the text must hold digits, ``-`` and commas only inside
    the brackets (``true``/``false``, ``1.5``, ``null``, strings, nested lists all leave
    other bytes). False means "check element by element", never "invalid"."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is a dependency
        return False
    try:
        text = orjson.dumps(values, option=orjson.OPT_STRICT_INTEGER)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return text.translate(None, b"0123456789,-") == b"[]"


def all_finite(values: list[Any]) -> bool:
    """True when no element of ``values`` is NaN or infinite (a list already known to hold
    finite numbers, see :class:`~tinkex_types._tensor.ArrayList`, is not scanned again)."""
    if getattr(values, "finite", False):
        return True
    try:
        if math.isfinite(sum(values, 0.0)):  # C speed; any NaN/inf makes the sum non-finite
            return True
    except OverflowError:
        pass
    return all(map(math.isfinite, values))


def first_non_finite(values: list[Any]) -> int | None:
    """The index of the first element of a float32 tensor's data that is NaN, infinite or
    too large for float32 (it would become infinity there), or None when there is none."""
    if getattr(values, "finite", False):  # checked when it was built (ArrayList)
        return None
    try:
        total = sum(values, 0.0)  # C speed; NaN/inf make it non-finite
        fits = not values or (min(values) >= -FLOAT32_MAX and max(values) <= FLOAT32_MAX)
    except (TypeError, OverflowError):
        total, fits = math.nan, False
    if math.isfinite(total) and fits:
        return None
    for i, v in enumerate(values):
        if not -FLOAT32_MAX <= v <= FLOAT32_MAX:  # False for NaN too
            return i
    return None


@dataclass(frozen=True)
class NumberRule:
    """Pydantic metadata of a strict number field (build it with :func:`Int`/:func:`Float`).

    ``WireModel`` reads its presence as "an explicit ``null`` is an error here".
    """

    integral: bool
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    fix: str | None = None

    def validate(self, value: Any) -> Any:
        if self.integral:
            low = INT64_MIN if self.ge is None else int(self.ge)
            high = INT64_MAX if self.le is None else int(self.le)
            result: int | float | str = int_problem(value, low, high)
        else:
            result = float_problem(value, ge=self.ge, gt=self.gt, le=self.le, lt=self.lt)
        if isinstance(result, str):
            if value is None:
                result += " (omit the key to use the default)"
            if self.fix:
                result += f"; {self.fix}"
            raise PydanticCustomError("tinkex_number", "{problem}", {"problem": result})
        return result

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.validate)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # Written by hand: the same in validation and serialization mode.
        if self.integral:
            return {
                "type": "integer",
                "minimum": INT64_MIN if self.ge is None else int(self.ge),
                "maximum": INT64_MAX if self.le is None else int(self.le),
            }
        out: dict[str, Any] = {"type": "number"}
        for key, bound in (
            ("minimum", self.ge),
            ("exclusiveMinimum", self.gt),
            ("maximum", self.le),
            ("exclusiveMaximum", self.lt),
        ):
            if bound is not None:
                out[key] = bound
        return out


def int_rule(*, ge: int | None = None, le: int | None = None, fix: str | None = None) -> NumberRule:
    """Metadata of an int field in ``[ge, le]`` (default: signed 64 bits):
    ``Annotated[int, int_rule(ge=1)]``."""
    return NumberRule(integral=True, ge=ge, le=le, fix=fix)


def float_rule(
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    fix: str | None = None,
) -> NumberRule:
    """Metadata of a finite float field within the bounds:
    ``Annotated[float, float_rule(ge=0.0)]``."""
    return NumberRule(integral=False, ge=ge, gt=gt, le=le, lt=lt, fix=fix)


#: A signed 64-bit int field (bools, strings, ``null`` and ``1.5`` refused).
Int64 = Annotated[int, NumberRule(integral=True)]
#: A finite float field (NaN, infinity, bools, strings and ``null`` refused).
FiniteFloat = Annotated[float, NumberRule(integral=False)]
