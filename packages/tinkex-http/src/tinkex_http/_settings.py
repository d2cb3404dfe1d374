"""The building blocks of :class:`tinkex_http.Config`'s table of settings.

A :class:`Setting` is one row: its environment variable, its parser, its default and its
documentation. The parsers here turn an argument or an environment variable's text into
the stored value and raise :class:`tinkex_types.TinkexValidationError` naming ``where`` (the
argument or the variable) and the fix. Stored containers are :class:`FrozenList` /
:class:`FrozenDict`: equal to plain lists and dicts, but they refuse every mutation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, NoReturn, SupportsIndex, TypeVar, overload
from urllib.parse import urlsplit, urlunsplit

import orjson

from tinkex_http._secret import REDACTED, Secret
from tinkex_types import TinkexValidationError

__all__ = [
    "LOG_LEVELS",
    "FrozenDict",
    "FrozenList",
    "Resolved",
    "Setting",
    "is_sensitive_header",
    "mask_url",
    "normalize_base_url",
    "parse_bool",
    "parse_log_level",
    "redact_headers",
]

_T = TypeVar("_T")
_SENSITIVE_HEADERS = {
    "x-api-key",
    "authorization",
    "proxy-authorization",
    "cf-access-client-secret",
    "cookie",
    "set-cookie",
}
_TRUTHY = {"1", "true", "yes", "on", "y", "t"}
_FALSY = {"0", "false", "no", "off", "n", "f", ""}

#: Log level names accepted everywhere tinkex reads one (``TINKER_LOG``, ``TINKEX_LOG``,
#: ``Config.log_level``, the CLI, ``tinkex_telemetry.configure_logging``).
LOG_LEVELS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "debug": logging.DEBUG,
        "info": logging.INFO,
        "warn": logging.WARNING,
        "warning": logging.WARNING,
        "error": logging.ERROR,
        "critical": logging.CRITICAL,
    }
)


def fail(where: str, problem: str, fix: str | None = None) -> TinkexValidationError:
    return TinkexValidationError(where, problem, fix)


# -- immutable containers ------------------------------------------------------------------
def _immutable(self: object, *_args: object, **_kwargs: object) -> NoReturn:
    raise TypeError(
        f"{type(self).__name__} of a Config is immutable; use config.replace(...) to change it"
    )


class FrozenList(list[_T]):
    """A list that refuses mutation (equal to, and serialised like, a plain list)."""

    append = extend = insert = remove = clear = sort = reverse = _immutable
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _immutable

    def pop(self, index: SupportsIndex = -1) -> _T:
        _immutable(self)

    def __reduce__(self) -> tuple[type[FrozenList[_T]], tuple[list[_T]]]:
        return (type(self), (list(self),))


class FrozenDict(dict[str, _T]):
    """A dict that refuses mutation (equal to, and serialised like, a plain dict)."""

    __setitem__ = __delitem__ = __ior__ = clear = update = setdefault = popitem = _immutable

    def pop(self, key: str, default: Any = None) -> _T:
        _immutable(self)

    def __reduce__(self) -> tuple[type[FrozenDict[_T]], tuple[dict[str, _T]]]:
        return (type(self), (dict(self),))


# -- the row type --------------------------------------------------------------------------
class Resolved(Mapping[str, Any]):
    """The values of the settings, resolved on first access (defaults may read others)."""

    def __init__(self, settings: Mapping[str, Setting], given: Mapping[str, Any], env: Any) -> None:
        self._settings = settings
        self._given = given
        self._env: Mapping[str, str] = env
        self._values: dict[str, Any] = {}
        self.from_default: set[str] = set()

    def __getitem__(self, name: str) -> Any:
        if name not in self._values:
            self._values[name] = self._settings[name].resolve(name, self)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._settings)

    def __len__(self) -> int:
        return len(self._settings)

    def given(self, name: str) -> tuple[bool, Any]:
        return (name in self._given, self._given.get(name))

    def env(self, var: str) -> str | None:
        raw = self._env.get(var)
        return None if raw is None or not raw.strip() else raw.strip()


Parser = Callable[[Any, str, Resolved], Any]
Default = Callable[[Resolved], Any]


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the settings table (see :class:`tinkex_http.Config`)."""

    #: Environment variable read when the argument is not given (``None``: argument only).
    env: str | None
    #: ``parse(raw, where, resolved)``: the stored value; ``where`` names the source.
    parse: Parser
    #: The value used when neither the argument nor the variable is given: a plain value
    #: or a function of the other resolved settings.
    default: Any
    #: One line for the reference documentation.
    doc: str
    #: Parser of the variable's text when it needs other rules than the argument.
    parse_env: Parser | None = None
    #: Whether an explicit ``None`` is a value (``poll_backoff``) instead of "not given".
    none_is_value: bool = False
    #: How the value shows in ``repr`` / ``redacted()`` (default: as is; secrets hidden).
    show: Callable[[Any], Any] | None = None

    def resolve(self, name: str, resolved: Resolved) -> Any:
        """Argument, then environment, then default."""
        present, raw = resolved.given(name)
        if present and (raw is not None or self.none_is_value):
            return self.parse(raw, name, resolved)
        if self.env is not None:
            text = resolved.env(self.env)
            if text is not None:
                return (self.parse_env or self.parse)(text, self.env, resolved)
        resolved.from_default.add(name)
        return self.default(resolved) if callable(self.default) else self.default

    def display(self, value: Any) -> Any:
        if self.show is not None:
            return self.show(value)
        if isinstance(value, Secret):
            return REDACTED
        if isinstance(value, FrozenDict):
            return dict(value)
        if isinstance(value, FrozenList):
            return list(value)
        return value


# -- shared parsers (public) ---------------------------------------------------------------
def parse_bool(value: str | bool, field: str) -> bool:
    """A boolean setting: ``True``/``False`` as is, or ``1 true yes on y t`` /
    ``0 false no off n f`` (any case, blank is false); anything else raises
    :class:`~tinkex_types.TinkexValidationError` naming ``field``."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUTHY:
        return True
    if text in _FALSY:
        return False
    raise fail(field, f"must be a boolean, got {value!r}", "use 1/0, true/false, yes/no")


@overload
def parse_log_level(value: None, field: str = ...) -> None: ...
@overload
def parse_log_level(value: str | int | None, field: str = ...) -> int | None: ...
def parse_log_level(value: str | int | None, field: str = "level") -> int | None:
    """A log level as a :mod:`logging` number.

    ``None`` or a blank string (an unset variable) gives ``None``; a name from
    :data:`LOG_LEVELS` (any case, surrounding blanks ignored) or an ``int`` gives the
    number. Anything else raises :class:`~tinkex_types.TinkexValidationError` naming
    ``field`` (pass the variable's name, e.g. ``"TINKER_LOG"``).
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if not text:
            return None
        if text in LOG_LEVELS:
            return LOG_LEVELS[text]
    raise fail(
        field,
        f"unknown log level {value!r}",
        "use one of debug, info, warning (or warn), error, critical",
    )


def normalize_base_url(url: str) -> str:
    """``scheme://lowercased-host[:non-default-port]`` (path dropped): the pool/tenant key."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    default = {"http": 80, "https": 443}.get(scheme)
    netloc = host if port is None or port == default else f"{host}:{port}"
    return f"{scheme}://{netloc}"


def is_sensitive_header(name: str) -> bool:
    """Whether a header's value must be redacted in logs and reprs."""
    lowered = name.lower()
    return lowered in _SENSITIVE_HEADERS or "secret" in lowered or "token" in lowered


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` with secret values replaced by ``[REDACTED]``."""
    return {k: (REDACTED if is_sensitive_header(k) else v) for k, v in headers.items()}


def mask_url(url: str) -> str:
    """``url`` with any ``user:password@`` part replaced by ``[REDACTED]@``."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{REDACTED}@{host}", parts.path, parts.query, ""))


# -- value parsers (rows of the table) -------------------------------------------------------
def nonempty(raw: Any, where: str, _r: Resolved) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise fail(where, "must be a non-empty string", "give a non-blank string")
    return raw.strip()


def seconds(raw: Any, where: str, _r: Resolved) -> float:
    fix = "give a positive number of seconds, e.g. 30"
    if isinstance(raw, bool):
        raise fail(where, f"must be a number of seconds, got {raw!r}", fix)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise fail(where, f"must be a number of seconds, got {raw!r}", fix) from None
    if not math.isfinite(value) or value <= 0:
        raise fail(where, f"must be a positive number of seconds, got {raw!r}", fix)
    return value


def integer(minimum: int) -> Parser:
    def parse(raw: Any, where: str, _r: Resolved) -> int:
        fix = f"give a whole number >= {minimum}"
        if isinstance(raw, (bool, float)):
            raise fail(where, f"must be an integer, got {raw!r}", fix)
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise fail(where, f"must be an integer, got {raw!r}", fix) from None
        if value < minimum:
            raise fail(where, f"must be >= {minimum}, got {value}", fix)
        return value

    return parse


def boolean(raw: Any, where: str, _r: Resolved) -> bool:
    return parse_bool(raw, where)


def seconds_pair(raw: Any, where: str, _r: Resolved) -> tuple[float, float]:
    """``(initial, max)`` seconds from a 2-tuple/list or an ``"initial,max"`` string;
    ``0 <= initial <= max``, both finite."""
    fix = "use (initial_seconds, max_seconds) or '0.5,10', with 0 <= initial <= max"
    bad = fail(where, f"must be two numbers of seconds, got {raw!r}", fix)
    parts: list[Any]
    if isinstance(raw, str):
        parts = [p.strip() for p in raw.split(",")]
    elif isinstance(raw, (tuple, list)):
        parts = list(raw)
    else:
        raise bad
    if len(parts) != 2:
        raise bad
    numbers: list[float] = []
    for part in parts:
        if isinstance(part, bool):
            raise bad
        try:
            number = float(part)
        except (TypeError, ValueError):
            raise bad from None
        if not math.isfinite(number) or number < 0:
            raise fail(where, f"seconds must be finite and >= 0, got {raw!r}", fix)
        numbers.append(number)
    initial, maximum = numbers
    if initial > maximum:
        raise fail(where, f"initial {initial:g} s is above max {maximum:g} s", fix)
    return (initial, maximum)


def str_list(raw: Any, where: str, _r: Resolved) -> FrozenList[str]:
    """A list of strings, or a comma-separated string; blanks and duplicates dropped."""
    items: Iterable[Any] = raw.split(",") if isinstance(raw, str) else raw
    fix = "use a list of strings or a comma-separated string"
    out: list[str] = []
    try:
        for item in items:
            if not isinstance(item, str):
                raise fail(where, f"items must be strings, got {item!r}", fix)
            text = item.strip()
            if text and text not in out:
                out.append(text)
    except TypeError:
        raise fail(where, "must be a list of strings or a comma-separated string", fix) from None
    return FrozenList(out)


def _pairs(raw: Any, where: str, allow_pairs: bool) -> Iterable[Any]:
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise fail(where, "is not valid JSON", 'use a JSON object like {"k": "v"}') from None
    if isinstance(raw, Mapping):
        return raw.items()
    if allow_pairs and isinstance(raw, list):
        return raw
    shape = "an object or an array of [name, value] pairs" if allow_pairs else "an object"
    raise fail(where, f"must be {shape}", 'use a JSON object like {"k": "v"}')


def str_map(*, allow_pairs: bool) -> Parser:
    """A ``str → str`` mapping from a mapping or JSON text (non-strings stringified)."""

    def parse(raw: Any, where: str, _r: Resolved) -> FrozenDict[str]:
        out: dict[str, str] = {}
        for pair in _pairs(raw, where, allow_pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise fail(where, f"bad entry {pair!r}", "use [name, value] pairs")
            k, v = pair
            if not isinstance(k, str) or not k:
                raise fail(where, f"names must be non-empty strings, got {k!r}", "name each entry")
            if v is None:
                continue
            if isinstance(v, str):
                out[k] = v
            elif isinstance(v, (dict, list)):
                out[k] = orjson.dumps(v).decode()
            else:
                out[k] = str(v)
        return FrozenDict(out)

    return parse


def strict_str_map(raw: Any, where: str, _r: Resolved) -> FrozenDict[str]:
    """A mapping whose keys and values already are strings."""
    if not isinstance(raw, Mapping):
        raise fail(where, "must be a mapping of str to str", "pass a dict like {'team': 'ml'}")
    out: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise fail(
                f"{where}[{k!r}]",
                f"keys and values must be strings, got {type(v).__name__}",
                "convert the value with str()",
            )
        out[k] = v
    return FrozenDict(out)


def log_level_name(raw: Any, where: str, _r: Resolved) -> str | None:
    if not isinstance(raw, str):
        raise fail(where, f"must be a level name, got {raw!r}", "use e.g. 'info' or 'debug'")
    number = parse_log_level(raw, where)
    return None if number is None else logging.getLevelName(number).lower()


def secret(raw: Any, where: str, _r: Resolved) -> Secret:
    if isinstance(raw, Secret):
        return raw
    if isinstance(raw, str):
        return Secret(raw.strip())
    raise fail(where, f"must be a string, got {type(raw).__name__}", "pass the secret as a str")


def text(raw: Any, where: str, _r: Resolved) -> str:
    return str(raw)
