"""What a :class:`~tinkex_telemetry.BackendReporter` is configured with, and where from.

:class:`ReporterSettings` holds the batching, queueing, timeout and retry knobs (validated
once, immutable); :func:`options_from_config` turns a client configuration (or the
environment) into reporter arguments, including the transport registered for a URL scheme
httpx cannot reach by itself (``local://``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from tinkex_telemetry._redact import register_secret
from tinkex_types import Backoff, TinkexValidationError, get_hooks

__all__ = [
    "DEFAULT_FORWARD",
    "DEFAULT_SDK_VERSION",
    "NETWORK_SCHEMES",
    "RETRY_JITTER",
    "RETRY_MAX_DELAY",
    "ReporterSettings",
    "options_from_config",
    "secret_value",
    "telemetry_enabled_from_env",
]

DEFAULT_SDK_VERSION = "0.16.1"
#: Record kinds from the observer hooks that are forwarded as GENERIC_EVENTs by default.
DEFAULT_FORWARD: frozenset[str] = frozenset({"request", "queue_state", "future"})
#: URL schemes the default httpx transport serves; others need a registered transport.
NETWORK_SCHEMES = frozenset({"http", "https"})
#: The longest wait between two attempts of one batch (unless ``retry_base_delay`` is longer).
RETRY_MAX_DELAY = 30.0
#: Each wait is shortened by a random share of up to this fraction.
RETRY_JITTER = 0.1
_FALSY = {"0", "false", "no", "off"}


def telemetry_enabled_from_env(env: Mapping[str, str] | None = None) -> bool:
    """``TINKER_TELEMETRY``: falsey (``0/false/no/off``) disables; anything else enables."""
    raw = (env if env is not None else os.environ).get("TINKER_TELEMETRY")
    if raw is None:
        return True
    return raw.strip().lower() not in _FALSY


def _check_positive(field: str, value: float, *, integer: bool = False, zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and integer:
        ok = isinstance(value, int)
    if ok:
        ok = value >= 0 if zero else value > 0
    if not ok:
        kind = "an integer" if integer else "a number"
        bound = ">= 0" if zero else "> 0"
        raise TinkexValidationError(
            field, f"must be {kind} {bound}, got {value!r}", f"pass {field}=<{kind} {bound}>"
        )


@dataclass(frozen=True, slots=True)
class ReporterSettings:
    """The knobs of one reporter; each is checked on construction (errors name it).

    A batch of at most ``max_batch_size`` events is sent once ``flush_threshold`` are
    queued or every ``flush_interval`` seconds; the queue holds ``max_queue_size`` events.
    A failed batch is retried ``max_retries`` times, waiting :attr:`backoff` in between.
    ``flush_timeout`` bounds :meth:`~BackendReporter.flush`/``close``, ``exit_timeout`` the
    close at interpreter exit. Observer records whose kind is in ``forward`` are sent
    (only those of this reporter's base URL when ``match_base_url``).
    """

    flush_interval: float = 10.0
    flush_threshold: int = 100
    max_batch_size: int = 100
    max_queue_size: int = 10_000
    http_timeout: float = 5.0
    max_retries: int = 3
    retry_base_delay: float = 1.0
    flush_timeout: float = 30.0
    exit_timeout: float = 5.0
    forward: frozenset[str] = field(default=DEFAULT_FORWARD)
    match_base_url: bool = True

    def __post_init__(self) -> None:
        _check_positive("flush_interval", self.flush_interval)
        _check_positive("flush_threshold", self.flush_threshold, integer=True)
        _check_positive("max_batch_size", self.max_batch_size, integer=True)
        _check_positive("max_queue_size", self.max_queue_size, integer=True)
        _check_positive("http_timeout", self.http_timeout)
        _check_positive("max_retries", self.max_retries, integer=True, zero=True)
        _check_positive("retry_base_delay", self.retry_base_delay, zero=True)
        _check_positive("flush_timeout", self.flush_timeout)
        _check_positive("exit_timeout", self.exit_timeout)
        object.__setattr__(self, "forward", frozenset(self.forward))

    @property
    def backoff(self) -> Backoff:
        """The wait before retry ``n`` (0-based): ``retry_base_delay · 2ⁿ``, at most
        :data:`RETRY_MAX_DELAY` s, shortened by up to :data:`RETRY_JITTER`."""
        base = float(self.retry_base_delay)
        return Backoff(
            initial=base,
            maximum=max(RETRY_MAX_DELAY, base),
            jitter=RETRY_JITTER,
            jitter_mode="down",
        )


def secret_value(value: object) -> str | None:
    """The plain string of a secret (``get_secret_value()`` wrappers too); ``None`` if empty."""
    getter = getattr(value, "get_secret_value", None)
    if callable(getter):
        value = getter()
    return value if isinstance(value, str) and value else None


def options_from_config(config: Any, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Reporter keyword arguments for a client configuration (see
    :meth:`BackendReporter.from_config`); ``overrides`` win."""
    options: dict[str, Any] = {}
    if config is not None:
        options["base_url"] = getattr(config, "base_url", None)
        options["api_key"] = getattr(config, "api_key", None)
        version = getattr(config, "sdk_version", None)
        if isinstance(version, str) and version:
            options["sdk_version"] = version
        enabled = getattr(config, "telemetry_enabled", None)
        options["enabled"] = bool(enabled) if enabled is not None else telemetry_enabled_from_env()
        headers = _cloudflare_headers(config)
        if headers:
            options["headers"] = headers
    else:
        options["base_url"] = os.environ.get("TINKER_BASE_URL")
        options["api_key"] = os.environ.get("TINKER_API_KEY")
        options["enabled"] = telemetry_enabled_from_env()
    options.update(overrides)
    if options.get("transport") is None and options.get("enabled", True):
        options["transport"] = _registered_transport(
            config, options.get("endpoint") or options.get("base_url")
        )
    return options


def _cloudflare_headers(config: Any) -> dict[str, str]:
    cf_id = getattr(config, "cf_access_client_id", None)
    cf_secret = secret_value(getattr(config, "cf_access_client_secret", None))
    if not (isinstance(cf_id, str) and cf_id and cf_secret):
        return {}
    register_secret(cf_secret)
    return {"CF-Access-Client-Id": cf_id, "CF-Access-Client-Secret": cf_secret}


def _registered_transport(config: Any, url: object) -> httpx.BaseTransport | None:
    """The synchronous transport registered for ``url``'s scheme, when httpx cannot reach
    that scheme by itself (``None`` for http/https or no URL)."""
    if not isinstance(url, str) or not url:
        return None
    scheme = httpx.URL(url).scheme.lower()
    if scheme in NETWORK_SCHEMES:
        return None
    registry = get_hooks().transports()
    if scheme not in registry:
        raise TinkexValidationError(
            "base_url",
            f"no transport is registered for URL scheme {scheme!r} "
            f"(registered: {', '.join(registry.names()) or 'none'})",
            "install the package that registers it (tinkex-server for 'local') or pass transport=",
        )
    transport = registry.get(scheme)(config=config, pool="telemetry")
    if not isinstance(transport, httpx.BaseTransport):
        raise TinkexValidationError(
            "base_url",
            f"the transport registered for {scheme!r} ({type(transport).__name__}) cannot send "
            "synchronous requests, which the reporter's worker thread needs",
            "pass transport=<an httpx.BaseTransport>",
        )
    return transport
