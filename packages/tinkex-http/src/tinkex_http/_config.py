"""Client configuration: :class:`Config`.

Every field resolves in this order: the explicit constructor argument, then the environment,
then the built-in default (tinkex-features.md §9, protocol.md §2.13):

=========================  ===================================  =================================
field                      environment variable                 default
=========================  ===================================  =================================
``api_key``                ``TINKER_API_KEY``                   required (``tml-`` prefix); a
                                                                placeholder for local servers
``base_url``               ``TINKER_BASE_URL``                  :data:`DEFAULT_BASE_URL` (cloud)
``timeout``                ``TINKEX_TIMEOUT`` (seconds)         60 s (``python`` parity), 120 s
``connect_timeout``        --                                   5 s
``max_retries``            ``TINKEX_MAX_RETRIES``               10 (``python``), 2 (``beam``)
``retry_backoff``          ``TINKEX_RETRY_BACKOFF`` (``a,b``)   ``(0.5, 10.0)`` s (transport)
``parity_mode``            ``TINKEX_PARITY``                    ``python``
``poll_backoff``           ``TINKEX_POLL_BACKOFF``              ``(1.0, 30.0)`` s on 5xx polls
``pool_size/pool_count``   ``TINKEX_POOL_SIZE/_POOL_COUNT``     50 / 20 (sampling = 1000 conns)
``tags``                   ``TINKER_TAGS`` (comma list)         ``[]``
``project_id``             ``TINKER_PROJECT_ID``                ``None``
``user_metadata``          --                                   ``None``
``feature_gates``          ``TINKER_FEATURE_GATES``             ``["async_sampling"]``
``telemetry_enabled``      ``TINKER_TELEMETRY``                 ``True``
``log_level``              ``TINKER_LOG``                       ``None``
``cf_access_client_id``    ``CLOUDFLARE_ACCESS_CLIENT_ID``      ``None``
``cf_access_client_secret````CLOUDFLARE_ACCESS_CLIENT_SECRET``  ``None``
``dump_headers``           ``TINKEX_DUMP_HEADERS``              ``False``
``proxy``                  ``TINKEX_PROXY``                     ``None``
``proxy_headers``          ``TINKEX_PROXY_HEADERS`` (JSON)      ``{}``
``default_headers``        ``TINKEX_DEFAULT_HEADERS`` (JSON)    ``{}``
``default_query``          ``TINKEX_DEFAULT_QUERY`` (JSON)      ``{}``
``otel_propagate``         ``TINKEX_OTEL_PROPAGATE``            ``True``
``sdk_version``            --                                   ``"0.16.1"``
``user_agent``             --                                   ``"tinkex/<version>"``
=========================  ===================================  =================================

What the less obvious fields do today:

* ``retry_backoff`` -- ``(initial, max)`` seconds of the transport retry backoff
  (``min(initial * 2**n, max)``, 25 % jitter): :class:`~tinkex_http.HTTPClient` builds its
  default :class:`~tinkex_http.RetryPolicy` from it and ``max_retries``.
* ``parity_mode`` -- only selects the defaults of ``timeout`` and ``max_retries``.
* ``otel_propagate`` -- ``False`` stops :class:`~tinkex_http.HTTPClient` from calling the
  ``tinkex_inject_headers`` hook, so no plugin adds trace context (``traceparent``) to its
  requests. The telemetry plugin reads the same variable with the same default.
* ``log_level`` -- validated with :func:`parse_log_level` (the parser of the CLI and of
  ``tinkex_telemetry.configure_logging``) and stored as a lower-case name; tinkex never
  configures logging from it (pass it to ``configure_logging`` yourself).
* ``feature_gates`` -- reserved: parsed for parity with the official and Elixir SDKs,
  which read ``TINKER_FEATURE_GATES`` without acting on it either. No effect, never sent.

The base URL default is the Tinker cloud. The in-process local server is :data:`LOCAL_BASE_URL`
(``local://``, served by the ``tinkex-server`` package) and must be asked for explicitly.
Without an API key, local and loopback base URLs (``local://``, ``http://127.0.0.1``,
``http://localhost``) get the placeholder key ``tml-local``; every other URL requires one.

Invalid values raise :class:`tinkex_types.TinkexValidationError` naming the argument or the
environment variable. Secrets (API key, Cloudflare secret, proxy URL) are
:class:`~tinkex_http.Secret` instances and never appear in ``repr``/``str``/logs.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal, overload
from urllib.parse import urlsplit, urlunsplit

import orjson

from tinkex_http._secret import REDACTED, Secret
from tinkex_http._version import DEFAULT_BASE_URL, SDK_VERSION, __version__
from tinkex_types import TinkexValidationError

__all__ = [
    "API_KEY_PREFIX",
    "LOCAL_API_KEY",
    "LOG_LEVELS",
    "POOL_NAMES",
    "Config",
    "PoolName",
    "normalize_base_url",
    "parse_bool",
    "parse_log_level",
]

PoolName = Literal["session", "training", "sampling", "futures", "telemetry"]
#: The per-operation connection pools (tinkex-features.md §2.6).
POOL_NAMES: Final[tuple[PoolName, ...]] = (
    "session",
    "training",
    "sampling",
    "futures",
    "telemetry",
)
API_KEY_PREFIX: Final = "tml-"
#: Placeholder key used for local/loopback servers when no key is configured.
LOCAL_API_KEY: Final = "tml-local"

_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
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


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


_UNSET: Final = _Unset()


def _fail(field: str, problem: str, fix: str | None = None) -> TinkexValidationError:
    return TinkexValidationError(field, problem, fix)


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
    raise _fail(field, f"must be a boolean, got {value!r}", "use 1/0, true/false, yes/no")


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
    raise _fail(
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


@dataclass(frozen=True, slots=True)
class _Source:
    """Where a value came from: an argument name or an environment variable."""

    name: str
    raw: Any


class Config:
    """Immutable client configuration (see the module docstring for every field).

    ``Config(**kwargs)`` resolves each omitted argument from ``env`` (default
    ``os.environ``) and then from the defaults. ``config.replace(**changes)`` returns a
    modified copy. ``repr(config)`` never shows a secret.
    """

    api_key: Secret
    base_url: str
    timeout: float
    connect_timeout: float
    max_retries: int
    retry_backoff: tuple[float, float]
    parity_mode: Literal["python", "beam"]
    poll_backoff: tuple[float, float] | None
    pool_size: int
    pool_count: int
    pool_limits: dict[str, int]
    tags: list[str]
    project_id: str | None
    user_metadata: dict[str, str] | None
    feature_gates: list[str]
    telemetry_enabled: bool
    log_level: str | None
    cf_access_client_id: str | None
    cf_access_client_secret: Secret | None
    dump_headers: bool
    proxy: Secret | None
    proxy_headers: dict[str, str]
    default_headers: dict[str, str]
    default_query: dict[str, str]
    otel_propagate: bool
    sdk_version: str
    user_agent: str
    future_timeout: float | None
    heartbeat_interval: float
    heartbeat_warning_after: float
    api_key_is_placeholder: bool

    _FIELDS: Final = (
        "api_key",
        "base_url",
        "timeout",
        "connect_timeout",
        "max_retries",
        "retry_backoff",
        "parity_mode",
        "poll_backoff",
        "pool_size",
        "pool_count",
        "pool_limits",
        "tags",
        "project_id",
        "user_metadata",
        "feature_gates",
        "telemetry_enabled",
        "log_level",
        "cf_access_client_id",
        "cf_access_client_secret",
        "dump_headers",
        "proxy",
        "proxy_headers",
        "default_headers",
        "default_query",
        "otel_propagate",
        "sdk_version",
        "user_agent",
        "future_timeout",
        "heartbeat_interval",
        "heartbeat_warning_after",
    )

    def __init__(
        self,
        *,
        api_key: str | Secret | _Unset | None = _UNSET,
        base_url: str | _Unset | None = _UNSET,
        timeout: float | _Unset | None = _UNSET,
        connect_timeout: float | _Unset = _UNSET,
        max_retries: int | _Unset | None = _UNSET,
        retry_backoff: tuple[float, float] | str | _Unset | None = _UNSET,
        parity_mode: str | _Unset | None = _UNSET,
        poll_backoff: tuple[float, float] | str | bool | _Unset | None = _UNSET,
        pool_size: int | _Unset | None = _UNSET,
        pool_count: int | _Unset | None = _UNSET,
        pool_limits: Mapping[str, int] | _Unset | None = _UNSET,
        tags: Iterable[str] | str | _Unset | None = _UNSET,
        project_id: str | _Unset | None = _UNSET,
        user_metadata: Mapping[str, str] | _Unset | None = _UNSET,
        feature_gates: Iterable[str] | str | _Unset | None = _UNSET,
        telemetry_enabled: bool | _Unset | None = _UNSET,
        log_level: str | _Unset | None = _UNSET,
        cf_access_client_id: str | _Unset | None = _UNSET,
        cf_access_client_secret: str | Secret | _Unset | None = _UNSET,
        dump_headers: bool | _Unset | None = _UNSET,
        proxy: str | Secret | _Unset | None = _UNSET,
        proxy_headers: Mapping[str, str] | _Unset | None = _UNSET,
        default_headers: Mapping[str, str] | _Unset | None = _UNSET,
        default_query: Mapping[str, Any] | _Unset | None = _UNSET,
        otel_propagate: bool | _Unset | None = _UNSET,
        sdk_version: str | _Unset | None = _UNSET,
        user_agent: str | _Unset | None = _UNSET,
        future_timeout: float | _Unset | None = _UNSET,
        heartbeat_interval: float | _Unset = _UNSET,
        heartbeat_warning_after: float | _Unset = _UNSET,
        env: Mapping[str, str] | None = None,
    ) -> None:
        environ: Mapping[str, str] = os.environ if env is None else env

        def pick(arg: Any, name: str, var: str | None) -> _Source | None:
            """The explicit argument if given (and not None), else the env var if set."""
            if not isinstance(arg, _Unset) and arg is not None:
                return _Source(name, arg)
            if var is not None:
                raw = environ.get(var)
                if raw is not None and raw.strip() != "":
                    return _Source(var, raw.strip())
            return None

        values: dict[str, Any] = {}

        # -- parity mode first: it selects two defaults ---------------------------------
        src = pick(parity_mode, "parity_mode", "TINKEX_PARITY")
        mode: Literal["python", "beam"] = "python"
        if src is not None:
            text = str(src.raw).strip().lower()
            if text == "python":
                mode = "python"
            elif text in ("beam", "elixir"):
                mode = "beam"
            else:
                raise _fail(src.name, f"unknown parity mode {src.raw!r}", "use 'python' or 'beam'")
        values["parity_mode"] = mode

        # -- base URL ---------------------------------------------------------------------
        src = pick(base_url, "base_url", "TINKER_BASE_URL")
        url = DEFAULT_BASE_URL if src is None else str(src.raw).strip()
        parts = urlsplit(url)
        if not parts.scheme or not url.lower().startswith(f"{parts.scheme}://"):
            raise _fail(
                src.name if src else "base_url",
                f"{mask_url(url)!r} has no URL scheme",
                "use e.g. 'https://host/path', 'http://127.0.0.1:8000' or 'local://'",
            )
        if parts.scheme.lower() in ("http", "https") and not parts.hostname:
            raise _fail(
                src.name if src else "base_url",
                f"{mask_url(url)!r} has no host",
                "use e.g. 'https://host/path'",
            )
        values["base_url"] = url.rstrip("/") if parts.path not in ("", "/") else url
        is_local = parts.scheme.lower() == "local" or (
            (parts.hostname or "").lower() in _LOOPBACK_HOSTS
        )

        # -- API key ----------------------------------------------------------------------
        src = pick(api_key, "api_key", "TINKER_API_KEY")
        placeholder = False
        if src is None:
            if not is_local:
                raise _fail(
                    "api_key",
                    "no API key was given",
                    "pass Config(api_key='tml-...') or set TINKER_API_KEY",
                )
            key = Secret(LOCAL_API_KEY)
            placeholder = True
        else:
            raw_key = src.raw
            if isinstance(raw_key, Secret):
                key = raw_key
            elif isinstance(raw_key, str):
                key = Secret(raw_key.strip())
            else:
                raise _fail(src.name, f"must be a string, got {type(raw_key).__name__}")
            if not key.get_secret_value().startswith(API_KEY_PREFIX):
                raise _fail(
                    src.name,
                    f"API key must start with {API_KEY_PREFIX!r} "
                    f"(got a value of {len(key)} characters with another prefix)",
                    "copy the key from the Tinker console",
                )
        values["api_key"] = key
        values["api_key_is_placeholder"] = placeholder

        # -- numbers ------------------------------------------------------------------------
        values["timeout"] = self._positive_float(
            pick(timeout, "timeout", "TINKEX_TIMEOUT"), 60.0 if mode == "python" else 120.0
        )
        values["connect_timeout"] = self._positive_float(
            pick(connect_timeout, "connect_timeout", None), 5.0
        )
        values["max_retries"] = self._int(
            pick(max_retries, "max_retries", "TINKEX_MAX_RETRIES"),
            10 if mode == "python" else 2,
            minimum=0,
        )
        values["pool_size"] = self._int(
            pick(pool_size, "pool_size", "TINKEX_POOL_SIZE"), 50, minimum=1
        )
        values["pool_count"] = self._int(
            pick(pool_count, "pool_count", "TINKEX_POOL_COUNT"), 20, minimum=1
        )
        size, count = values["pool_size"], values["pool_count"]
        limits: dict[str, int] = {
            "session": 5,
            "training": 10,
            "sampling": size * count,
            "futures": max(size // 2, 1) * max(count // 2, 1),
            "telemetry": 5,
        }
        src = pick(pool_limits, "pool_limits", None)
        if src is not None:
            if not isinstance(src.raw, Mapping):
                raise _fail("pool_limits", "must be a mapping of pool name to a connection count")
            for name, n in src.raw.items():
                if name not in POOL_NAMES:
                    raise _fail(
                        f"pool_limits[{name!r}]",
                        "unknown pool",
                        f"use one of {', '.join(POOL_NAMES)}",
                    )
                if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                    raise _fail(f"pool_limits[{name!r}]", f"must be an int >= 1, got {n!r}")
                limits[name] = n
        values["pool_limits"] = limits

        src = pick(future_timeout, "future_timeout", "TINKEX_FUTURE_TIMEOUT")
        values["future_timeout"] = None if src is None else self._positive_float(src, 0.0)
        values["heartbeat_interval"] = self._positive_float(
            pick(heartbeat_interval, "heartbeat_interval", None), 10.0
        )
        values["heartbeat_warning_after"] = self._positive_float(
            pick(heartbeat_warning_after, "heartbeat_warning_after", None), 120.0
        )

        values["retry_backoff"] = self._backoff_pair(
            pick(retry_backoff, "retry_backoff", "TINKEX_RETRY_BACKOFF"), (0.5, 10.0)
        )

        # -- poll backoff -----------------------------------------------------------------
        values["poll_backoff"] = self._poll_backoff(
            poll_backoff, environ.get("TINKEX_POLL_BACKOFF")
        )

        # -- lists and strings --------------------------------------------------------------
        values["tags"] = self._str_list(pick(tags, "tags", "TINKER_TAGS"), [])
        values["feature_gates"] = self._str_list(
            pick(feature_gates, "feature_gates", "TINKER_FEATURE_GATES"), ["async_sampling"]
        )
        src = pick(project_id, "project_id", "TINKER_PROJECT_ID")
        if src is not None and (not isinstance(src.raw, str) or not src.raw.strip()):
            raise _fail(src.name, "must be a non-empty string")
        values["project_id"] = None if src is None else src.raw.strip()

        src = pick(user_metadata, "user_metadata", None)
        if src is None:
            values["user_metadata"] = None
        else:
            if not isinstance(src.raw, Mapping):
                raise _fail("user_metadata", "must be a mapping of str to str")
            meta: dict[str, str] = {}
            for k, v in src.raw.items():
                if not isinstance(k, str) or not isinstance(v, str):
                    raise _fail(
                        f"user_metadata[{k!r}]",
                        f"keys and values must be strings, got {type(v).__name__}",
                        "convert the value with str()",
                    )
                meta[k] = v
            values["user_metadata"] = meta

        values["telemetry_enabled"] = self._bool(
            pick(telemetry_enabled, "telemetry_enabled", "TINKER_TELEMETRY"), True
        )
        values["dump_headers"] = self._bool(
            pick(dump_headers, "dump_headers", "TINKEX_DUMP_HEADERS"), False
        )
        values["otel_propagate"] = self._bool(
            pick(otel_propagate, "otel_propagate", "TINKEX_OTEL_PROPAGATE"), True
        )

        src = pick(log_level, "log_level", "TINKER_LOG")
        if src is None:
            values["log_level"] = None
        else:
            if not isinstance(src.raw, str):
                raise _fail(src.name, f"must be a level name, got {src.raw!r}")
            number = parse_log_level(src.raw, src.name)
            values["log_level"] = None if number is None else logging.getLevelName(number).lower()

        src = pick(cf_access_client_id, "cf_access_client_id", "CLOUDFLARE_ACCESS_CLIENT_ID")
        values["cf_access_client_id"] = None if src is None else str(src.raw)
        src = pick(
            cf_access_client_secret, "cf_access_client_secret", "CLOUDFLARE_ACCESS_CLIENT_SECRET"
        )
        values["cf_access_client_secret"] = None if src is None else Secret(src.raw)

        src = pick(proxy, "proxy", "TINKEX_PROXY")
        if src is None:
            values["proxy"] = None
        else:
            proxy_secret = Secret(src.raw)
            p = urlsplit(proxy_secret.get_secret_value())
            if p.scheme not in ("http", "https", "socks5", "socks5h") or not p.hostname:
                raise _fail(
                    src.name,
                    f"{mask_url(proxy_secret.get_secret_value())!r} is not a proxy URL",
                    "use http(s)://[user:pass@]host[:port]",
                )
            values["proxy"] = proxy_secret

        values["proxy_headers"] = self._str_map(
            pick(proxy_headers, "proxy_headers", "TINKEX_PROXY_HEADERS"), allow_pairs=True
        )
        values["default_headers"] = self._str_map(
            pick(default_headers, "default_headers", "TINKEX_DEFAULT_HEADERS"), allow_pairs=False
        )
        values["default_query"] = self._str_map(
            pick(default_query, "default_query", "TINKEX_DEFAULT_QUERY"), allow_pairs=False
        )

        src = pick(sdk_version, "sdk_version", None)
        values["sdk_version"] = SDK_VERSION if src is None else self._nonempty(src)
        src = pick(user_agent, "user_agent", None)
        values["user_agent"] = f"tinkex/{__version__}" if src is None else self._nonempty(src)

        for name, value in values.items():
            object.__setattr__(self, name, value)

    # -- parsing helpers ----------------------------------------------------------------
    @staticmethod
    def _nonempty(src: _Source) -> str:
        if not isinstance(src.raw, str) or not src.raw.strip():
            raise _fail(src.name, "must be a non-empty string")
        return src.raw.strip()

    @staticmethod
    def _positive_float(src: _Source | None, default: float) -> float:
        if src is None:
            return default
        raw = src.raw
        if isinstance(raw, bool):
            raise _fail(src.name, f"must be a number of seconds, got {raw!r}")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise _fail(src.name, f"must be a number of seconds, got {raw!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise _fail(src.name, f"must be a positive number of seconds, got {raw!r}")
        return value

    @staticmethod
    def _int(src: _Source | None, default: int, *, minimum: int) -> int:
        if src is None:
            return default
        raw = src.raw
        if isinstance(raw, (bool, float)):
            raise _fail(src.name, f"must be an integer, got {raw!r}")
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise _fail(src.name, f"must be an integer, got {raw!r}") from None
        if value < minimum:
            raise _fail(src.name, f"must be >= {minimum}, got {value}")
        return value

    @staticmethod
    def _bool(src: _Source | None, default: bool) -> bool:
        return default if src is None else parse_bool(src.raw, src.name)

    @staticmethod
    def _backoff_pair(src: _Source | None, default: tuple[float, float]) -> tuple[float, float]:
        """``(initial, max)`` seconds from a 2-tuple/list or an ``"initial,max"`` string;
        ``0 <= initial <= max``, both finite."""
        if src is None:
            return default
        raw = src.raw
        fix = "use (initial_seconds, max_seconds) or '0.5,10', with 0 <= initial <= max"
        parts: list[Any]
        if isinstance(raw, str):
            parts = [p.strip() for p in raw.split(",")]
        elif isinstance(raw, (tuple, list)):
            parts = list(raw)
        else:
            raise _fail(src.name, f"must be two numbers of seconds, got {raw!r}", fix)
        if len(parts) != 2:
            raise _fail(src.name, f"must be two numbers of seconds, got {raw!r}", fix)
        numbers: list[float] = []
        for part in parts:
            if isinstance(part, bool):
                raise _fail(src.name, f"must be two numbers of seconds, got {raw!r}", fix)
            try:
                number = float(part)
            except (TypeError, ValueError):
                raise _fail(src.name, f"must be two numbers of seconds, got {raw!r}", fix) from None
            if not math.isfinite(number) or number < 0:
                raise _fail(src.name, f"seconds must be finite and >= 0, got {raw!r}", fix)
            numbers.append(number)
        initial, maximum = numbers
        if initial > maximum:
            raise _fail(src.name, f"initial {initial:g} s is above max {maximum:g} s", fix)
        return (initial, maximum)

    @staticmethod
    def _str_list(src: _Source | None, default: list[str]) -> list[str]:
        if src is None:
            return list(default)
        raw = src.raw
        items: Iterable[Any] = raw.split(",") if isinstance(raw, str) else raw
        out: list[str] = []
        try:
            for item in items:
                if not isinstance(item, str):
                    raise _fail(src.name, f"items must be strings, got {item!r}")
                text = item.strip()
                if text and text not in out:
                    out.append(text)
        except TypeError:
            raise _fail(src.name, "must be a list of strings or a comma-separated string") from None
        return out

    @staticmethod
    def _str_map(src: _Source | None, *, allow_pairs: bool) -> dict[str, str]:
        if src is None:
            return {}
        raw = src.raw
        if isinstance(raw, str):
            try:
                raw = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise _fail(
                    src.name, "is not valid JSON", 'use a JSON object like {"k": "v"}'
                ) from None
        pairs: Iterable[Any]
        if isinstance(raw, Mapping):
            pairs = raw.items()
        elif allow_pairs and isinstance(raw, list):
            pairs = raw
        else:
            shape = "an object or an array of [name, value] pairs" if allow_pairs else "an object"
            raise _fail(src.name, f"must be {shape}")
        out: dict[str, str] = {}
        for pair in pairs:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise _fail(src.name, f"bad entry {pair!r}", "use [name, value] pairs")
            k, v = pair
            if not isinstance(k, str) or not k:
                raise _fail(src.name, f"names must be non-empty strings, got {k!r}")
            if v is None:
                continue
            out[k] = (
                v
                if isinstance(v, str)
                else orjson.dumps(v).decode()
                if isinstance(v, (dict, list))
                else str(v)
            )
        return out

    @staticmethod
    def _poll_backoff(arg: Any, env_raw: str | None) -> tuple[float, float] | None:
        default = (1.0, 30.0)
        if isinstance(arg, _Unset):
            if env_raw is None or not env_raw.strip():
                return default
            text = env_raw.strip().lower()
            if text in ("exponential", *_TRUTHY) and text != "":
                return default
            if text in ("none", *_FALSY):
                return None
            raise _fail(
                "TINKEX_POLL_BACKOFF",
                f"unknown value {env_raw!r}",
                "use 'exponential' or 'none'",
            )
        if arg is None or arg is False or arg == "none":
            return None
        if arg is True or arg == "exponential":
            return default
        if isinstance(arg, tuple) and len(arg) == 2:
            initial, maximum = arg
            ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in arg)
            if ok and maximum >= initial:
                return (float(initial), float(maximum))
        raise _fail(
            "poll_backoff",
            f"unsupported value {arg!r}",
            "use None, 'exponential' or (initial_seconds, max_seconds) with max >= initial",
        )

    # -- behaviour ------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Config is immutable; use config.replace(...)")

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied (validated like the constructor)."""
        current: dict[str, Any] = {name: getattr(self, name) for name in self._FIELDS}
        if self.api_key_is_placeholder:
            current["api_key"] = None
        current.update(changes)
        return Config(**current, env={})

    @property
    def pool_key(self) -> str:
        """The normalized base URL (``scheme://host[:port]``)."""
        return normalize_base_url(self.base_url)

    @property
    def tenant_key(self) -> tuple[str, str]:
        """``(pool_key, key fingerprint)``: identifies a tenant without holding the key."""
        digest = hashlib.sha256(self.api_key.get_secret_value().encode()).hexdigest()[:16]
        return (self.pool_key, digest)

    @property
    def scheme(self) -> str:
        return urlsplit(self.base_url).scheme.lower()

    def pool_max_connections(self, pool: str) -> int:
        """Connection limit of one pool (``session``, ``training``, ...)."""
        return self.pool_limits.get(pool, self.pool_limits["sampling"])

    def redacted(self) -> dict[str, Any]:
        """Every field as a plain dict, secrets replaced by ``[REDACTED]`` (safe to log)."""
        out: dict[str, Any] = {}
        for name in self._FIELDS:
            value = getattr(self, name)
            if isinstance(value, Secret):
                value = mask_url(value.get_secret_value()) if name == "proxy" else REDACTED
            elif name in ("default_headers", "proxy_headers"):
                value = redact_headers(value)
            out[name] = value
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items())
        return f"Config({fields})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Config):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._FIELDS)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Callable[..., Config], tuple[()]]:
        raise TypeError("Config holds secrets and cannot be pickled")
