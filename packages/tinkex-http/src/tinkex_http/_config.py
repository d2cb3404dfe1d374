"""Client configuration: :class:`Config`, declared as a table of settings.

Every field of :class:`Config` is one row (:class:`~tinkex_http._settings.Setting`): its
environment variable, its parser, its default and one line of documentation. The
constructor, :meth:`Config.from_env`, :meth:`Config.replace`, ``repr`` /
:meth:`Config.redacted` and the documentation check (``Config.settings()`` against
docs/configuration.md) are all derived from that table, so adding a setting is one row.

Each field resolves in this order: the explicit argument (``None`` counts as not given,
except for ``poll_backoff``), then the environment variable (blank counts as unset), then
the default. A default may depend on other fields: ``parity_mode`` selects the defaults
of ``timeout`` and ``max_retries``; local and loopback base URLs (``local://``,
``http://127.0.0.1``, ``http://localhost``) get the placeholder key ``tml-local`` when no
key is given (every other URL requires one); ``pool_size`` and ``pool_count`` size the
``sampling`` and ``futures`` pools.

Invalid values raise :class:`tinkex_types.TinkexValidationError` naming the argument or
the environment variable and the fix. A Config is frozen (assigning a field raises; its
lists and dicts refuse mutation). Secrets (API key, Cloudflare secret, proxy URL) are
:class:`~tinkex_http.Secret` instances and never appear in ``repr``/``str``/logs.
The reference of every field is docs/configuration.md.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Final, Literal, NoReturn
from urllib.parse import urlsplit

from tinkex_http._breaker import CircuitBreakerSettings, parse_circuit_breaker
from tinkex_http._secret import Secret
from tinkex_http._settings import (
    LOG_LEVELS,
    FrozenDict,
    FrozenList,
    Resolved,
    Setting,
    boolean,
    fail,
    integer,
    log_level_name,
    mask_url,
    nonempty,
    normalize_base_url,
    parse_bool,
    parse_log_level,
    redact_headers,
    seconds,
    seconds_pair,
    secret,
    str_list,
    str_map,
    strict_str_map,
    text,
)
from tinkex_http._version import DEFAULT_BASE_URL, SDK_VERSION, __version__

__all__ = [
    "API_KEY_PREFIX",
    "HTTP_TRANSPORTS",
    "LOCAL_API_KEY",
    "LOG_LEVELS",
    "POOL_NAMES",
    "PROTOCOLS",
    "Config",
    "PoolName",
    "SettingInfo",
    "mask_url",
    "normalize_base_url",
    "parse_bool",
    "parse_log_level",
    "redact_headers",
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
_POLL_DEFAULT = (1.0, 30.0)
#: The values of ``Config.protocol`` (the wire generation of forward/forward_backward and
#: their results; see tinkex_clients' protocol negotiation).
PROTOCOLS: Final[tuple[str, ...]] = ("auto", "json", "protobuf")
#: The values of ``Config.http_transport``: the transport of cleartext ``http://`` URLs.
HTTP_TRANSPORTS: Final[tuple[str, ...]] = ("tinkex", "httpx")


# -- parsers that know about other fields ------------------------------------------------------
def _parity(raw: Any, where: str, _r: Resolved) -> str:
    value = str(raw).strip().lower()
    if value == "python":
        return "python"
    if value in ("beam", "elixir"):
        return "beam"
    raise fail(where, f"unknown parity mode {raw!r}", "use 'python' or 'beam'")


def _protocol(raw: Any, where: str, _r: Resolved) -> str:
    value = str(raw).strip().lower()
    if value in PROTOCOLS:
        return value
    raise fail(where, f"unknown protocol {raw!r}", f"use one of {', '.join(PROTOCOLS)}")


def _http_transport(raw: Any, where: str, _r: Resolved) -> str:
    value = str(raw).strip().lower()
    if value in HTTP_TRANSPORTS:
        return value
    raise fail(where, f"unknown HTTP transport {raw!r}", f"use one of {', '.join(HTTP_TRANSPORTS)}")


def _by_parity(python: Any, beam: Any) -> Callable[[Resolved], Any]:
    return lambda r: python if r["parity_mode"] == "python" else beam


def _base_url(raw: Any, where: str, _r: Resolved) -> str:
    url = str(raw).strip()
    parts = urlsplit(url)
    if not parts.scheme or not url.lower().startswith(f"{parts.scheme}://"):
        raise fail(
            where,
            f"{mask_url(url)!r} has no URL scheme",
            "use e.g. 'https://host/path', 'http://127.0.0.1:8000' or 'local://'",
        )
    if parts.scheme.lower() in ("http", "https") and not parts.hostname:
        raise fail(where, f"{mask_url(url)!r} has no host", "use e.g. 'https://host/path'")
    return url.rstrip("/") if parts.path not in ("", "/") else url


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme.lower() == "local" or (parts.hostname or "").lower() in _LOOPBACK_HOSTS


def _api_key(raw: Any, where: str, r: Resolved) -> Secret:
    key = secret(raw, where, r)
    if not key.get_secret_value().startswith(API_KEY_PREFIX):
        raise fail(
            where,
            f"API key must start with {API_KEY_PREFIX!r} "
            f"(got a value of {len(key)} characters with another prefix)",
            "copy the key from the Tinker console",
        )
    return key


def _default_api_key(r: Resolved) -> Secret:
    if not _is_local(r["base_url"]):
        raise fail(
            "api_key",
            "no API key was given",
            "pass Config(api_key='tml-...') or set TINKER_API_KEY",
        )
    return Secret(LOCAL_API_KEY)


def _pool_defaults(r: Resolved) -> dict[str, int]:
    size, count = r["pool_size"], r["pool_count"]
    return {
        "session": 5,
        "training": 10,
        "sampling": size * count,
        "futures": max(size // 2, 1) * max(count // 2, 1),
        "telemetry": 5,
    }


def _pool_limits(raw: Any, where: str, r: Resolved) -> FrozenDict[int]:
    if not isinstance(raw, Mapping):
        raise fail(
            where, "must be a mapping of pool name to a connection count", "e.g. {'sampling': 64}"
        )
    limits = _pool_defaults(r)
    for name, n in raw.items():
        if name not in POOL_NAMES:
            raise fail(f"{where}[{name!r}]", "unknown pool", f"use one of {', '.join(POOL_NAMES)}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise fail(
                f"{where}[{name!r}]", f"must be an int >= 1, got {n!r}", "give a connection count"
            )
        limits[name] = n
    return FrozenDict(limits)


def _poll_backoff(raw: Any, where: str, _r: Resolved) -> tuple[float, float] | None:
    if raw is None or raw is False or raw == "none":
        return None
    if raw is True or raw == "exponential":
        return _POLL_DEFAULT
    if isinstance(raw, tuple) and len(raw) == 2:
        initial, maximum = raw
        ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in raw)
        if ok and maximum >= initial:
            return (float(initial), float(maximum))
    raise fail(
        where,
        f"unsupported value {raw!r}",
        "use None, 'exponential' or (initial_seconds, max_seconds) with max >= initial",
    )


def _poll_backoff_env(raw: str, where: str, _r: Resolved) -> tuple[float, float] | None:
    value = raw.strip().lower()
    if value == "exponential" or value in ("1", "true", "yes", "on", "y", "t"):
        return _POLL_DEFAULT
    if value == "none" or value in ("0", "false", "no", "off", "n", "f"):
        return None
    raise fail(where, f"unknown value {raw!r}", "use 'exponential' or 'none'")


def _proxy(raw: Any, where: str, r: Resolved) -> Secret:
    value = secret(raw, where, r)
    parts = urlsplit(value.get_secret_value())
    if parts.scheme not in ("http", "https", "socks5", "socks5h") or not parts.hostname:
        raise fail(
            where,
            f"{mask_url(value.get_secret_value())!r} is not a proxy URL",
            "use http(s)://[user:pass@]host[:port]",
        )
    return value


def _show_proxy(value: Secret | None) -> str | None:
    return None if value is None else mask_url(value.get_secret_value())


def _show_headers(value: Mapping[str, str]) -> dict[str, str]:
    return redact_headers(value)


def _row(
    env: str | None,
    parse: Any,
    default: Any,
    doc: str,
    **extra: Any,
) -> dict[str, Setting]:
    """The metadata of a dataclass field: its :class:`Setting` (the table row)."""
    return {"setting": Setting(env, parse, default, doc, **extra)}


@dataclass(frozen=True, slots=True)
class SettingInfo:
    """One documented setting: field name, environment variable (or ``None``) and doc line."""

    name: str
    env: str | None
    doc: str


@dataclass(frozen=True, init=False, repr=False)
class Config:
    """Immutable client configuration: one row per field below (see the module docstring).

    ``Config(**fields)`` and ``Config.from_env(**fields)`` resolve each omitted field from
    ``env`` (default ``os.environ``) and then from its default. ``config.replace(**changes)``
    returns a validated copy (the environment is not read again). ``repr(config)`` never
    shows a secret.
    """

    api_key: Secret = field(
        metadata=_row(
            "TINKER_API_KEY",
            _api_key,
            _default_api_key,
            "API key (tml-...); a placeholder for local and loopback URLs",
        )
    )
    base_url: str = field(
        metadata=_row(
            "TINKER_BASE_URL",
            _base_url,
            DEFAULT_BASE_URL,
            "server URL; local:// is the in-process server",
        )
    )
    timeout: float = field(
        metadata=_row(
            "TINKEX_TIMEOUT", seconds, _by_parity(60.0, 120.0), "seconds per HTTP request"
        )
    )
    connect_timeout: float = field(metadata=_row(None, seconds, 5.0, "seconds to connect"))
    max_retries: int = field(
        metadata=_row(
            "TINKEX_MAX_RETRIES",
            integer(0),
            _by_parity(10, 2),
            "transport retries of one HTTP request",
        )
    )
    retry_backoff: tuple[float, float] = field(
        metadata=_row(
            "TINKEX_RETRY_BACKOFF",
            seconds_pair,
            (0.5, 10.0),
            "(initial, max) seconds of the transport backoff",
        )
    )
    parity_mode: Literal["python", "beam"] = field(
        metadata=_row(
            "TINKEX_PARITY",
            _parity,
            "python",
            "python or beam: selects the defaults of timeout and max_retries",
        )
    )
    poll_backoff: tuple[float, float] | None = field(
        metadata=_row(
            "TINKEX_POLL_BACKOFF",
            _poll_backoff,
            _POLL_DEFAULT,
            "(initial, max) seconds between future polls after 5xx; None re-polls at once",
            parse_env=_poll_backoff_env,
            none_is_value=True,
        )
    )
    pool_size: int = field(
        metadata=_row("TINKEX_POOL_SIZE", integer(1), 50, "sizes the sampling and futures pools")
    )
    pool_count: int = field(
        metadata=_row("TINKEX_POOL_COUNT", integer(1), 20, "sizes the sampling and futures pools")
    )
    pool_limits: FrozenDict[int] = field(
        metadata=_row(
            None, _pool_limits, lambda r: FrozenDict(_pool_defaults(r)), "connections per pool"
        )
    )
    tags: FrozenList[str] = field(
        metadata=_row("TINKER_TAGS", str_list, FrozenList(), "session tags")
    )
    project_id: str | None = field(
        metadata=_row("TINKER_PROJECT_ID", nonempty, None, "project of the session")
    )
    user_metadata: FrozenDict[str] | None = field(
        metadata=_row(None, strict_str_map, None, "str -> str sent with the session")
    )
    feature_gates: FrozenList[str] = field(
        metadata=_row(
            "TINKER_FEATURE_GATES", str_list, FrozenList(["async_sampling"]), "reserved, no effect"
        )
    )
    telemetry_enabled: bool = field(
        metadata=_row("TINKER_TELEMETRY", boolean, True, "backend telemetry reporter on/off")
    )
    log_level: str | None = field(
        metadata=_row(
            "TINKER_LOG",
            log_level_name,
            None,
            "level of the tinkex loggers (stderr); unset: nothing printed",
        )
    )
    cf_access_client_id: str | None = field(
        metadata=_row("CLOUDFLARE_ACCESS_CLIENT_ID", text, None, "Cloudflare Access client id")
    )
    cf_access_client_secret: Secret | None = field(
        metadata=_row(
            "CLOUDFLARE_ACCESS_CLIENT_SECRET", secret, None, "Cloudflare Access client secret"
        )
    )
    dump_headers: bool = field(
        metadata=_row(
            "TINKEX_DUMP_HEADERS", boolean, False, "log every attempt's headers (redacted)"
        )
    )
    proxy: Secret | None = field(
        metadata=_row("TINKEX_PROXY", _proxy, None, "proxy URL", show=_show_proxy)
    )
    proxy_headers: FrozenDict[str] = field(
        metadata=_row(
            "TINKEX_PROXY_HEADERS",
            str_map(allow_pairs=True),
            FrozenDict(),
            "headers sent to the proxy",
            show=_show_headers,
        )
    )
    default_headers: FrozenDict[str] = field(
        metadata=_row(
            "TINKEX_DEFAULT_HEADERS",
            str_map(allow_pairs=False),
            FrozenDict(),
            "headers added to every request",
            show=_show_headers,
        )
    )
    default_query: FrozenDict[str] = field(
        metadata=_row(
            "TINKEX_DEFAULT_QUERY",
            str_map(allow_pairs=False),
            FrozenDict(),
            "query merged into every URL",
        )
    )
    otel_propagate: bool = field(
        metadata=_row(
            "TINKEX_OTEL_PROPAGATE",
            boolean,
            True,
            "call the tinkex_inject_headers hook (trace context)",
        )
    )
    sampling_concurrency: int = field(
        metadata=_row(
            "TINKEX_SAMPLING_CONCURRENCY",
            integer(1),
            400,
            "sampling requests in flight per server and API key",
        )
    )
    sampling_throttled_concurrency: int = field(
        metadata=_row(
            "TINKEX_SAMPLING_THROTTLED_CONCURRENCY",
            integer(1),
            10,
            "sampling requests in flight while recently rate limited (429)",
        )
    )
    sampling_byte_budget: int = field(
        metadata=_row(
            "TINKEX_SAMPLING_BYTE_BUDGET",
            integer(1),
            5 * 1024 * 1024,
            "estimated request bytes in flight per SamplingClient",
        )
    )
    circuit_breaker: CircuitBreakerSettings = field(
        metadata=_row(
            "TINKEX_CIRCUIT_BREAKER",
            parse_circuit_breaker,
            CircuitBreakerSettings(),
            "breaker per endpoint family: off (default), on, or failures=5,reset=30,probes=1",
        )
    )
    sdk_version: str = field(
        metadata=_row(None, nonempty, SDK_VERSION, "official-SDK version reported on the wire")
    )
    user_agent: str = field(
        metadata=_row(None, nonempty, f"tinkex/{__version__}", "User-Agent header")
    )
    future_timeout: float | None = field(
        metadata=_row(
            "TINKEX_FUTURE_TIMEOUT", seconds, None, "seconds a future may be polled; None: no limit"
        )
    )
    http_transport: Literal["tinkex", "httpx"] = field(
        metadata=_row(
            "TINKEX_HTTP_TRANSPORT",
            _http_transport,
            "tinkex",
            "http:// transport: tinkex (its own HTTP/1.1) or httpx (httpx/httpcore)",
        )
    )
    protocol: Literal["auto", "json", "protobuf"] = field(
        metadata=_row(
            "TINKEX_PROTOCOL",
            _protocol,
            "auto",
            "wire generation: auto (client/config decides), json, or protobuf",
        )
    )
    heartbeat_interval: float = field(
        metadata=_row(None, seconds, 10.0, "session heart-beat period, seconds")
    )
    heartbeat_warning_after: float = field(
        metadata=_row(None, seconds, 120.0, "warn when the last good heart-beat is this old")
    )
    #: Whether ``api_key`` is the local placeholder (derived, not a setting).
    api_key_is_placeholder: bool = field(default=False, metadata={})

    def __init__(self, *, env: Mapping[str, str] | None = None, **fields: Any) -> None:
        unknown = sorted(set(fields) - set(_SETTINGS))
        if unknown:
            raise TypeError(
                f"Config got unknown field(s) {', '.join(unknown)}; "
                f"the fields are: {', '.join(_SETTINGS)}"
            )
        resolved = Resolved(_SETTINGS, fields, os.environ if env is None else env)
        for name in _SETTINGS:
            object.__setattr__(self, name, resolved[name])
        object.__setattr__(self, "api_key_is_placeholder", "api_key" in resolved.from_default)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **fields: Any) -> Config:
        """Explicit ``fields``, then ``env`` (default ``os.environ``), then the defaults."""
        return cls(env=env, **fields)

    @classmethod
    def settings(cls) -> tuple[SettingInfo, ...]:
        """The table: every setting's name, environment variable and doc line."""
        return tuple(SettingInfo(n, s.env, s.doc) for n, s in _SETTINGS.items())

    # -- behaviour ------------------------------------------------------------------------
    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied (validated like the constructor, no environment)."""
        current: dict[str, Any] = {name: getattr(self, name) for name in _SETTINGS}
        if self.api_key_is_placeholder:
            current["api_key"] = None
        current.update(changes)
        return Config(env={}, **current)

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
        """Every setting as a plain dict, secrets replaced by ``[REDACTED]`` (safe to log)."""
        return {name: s.display(getattr(self, name)) for name, s in _SETTINGS.items()}

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items())
        return f"Config({shown})"

    __str__ = __repr__
    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> NoReturn:
        raise TypeError("Config holds secrets and cannot be pickled")


#: The table, in field order: name → :class:`Setting`.
_SETTINGS: Final[Mapping[str, Setting]] = MappingProxyType(
    {f.name: f.metadata["setting"] for f in fields(Config) if "setting" in f.metadata}
)
