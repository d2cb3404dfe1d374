"""The constructor arguments of the official ``ServiceClient`` (0.16 through 0.38), as a
tinkex :class:`~tinkex_http.Config`."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import httpx

from tinkex_clients._request_options import request_options_fields
from tinkex_http import Config
from tinkex_types import TinkexValidationError

__all__ = ["IGNORED_ARGUMENTS", "service_config"]

#: Arguments of the official client that configure its own HTTP stack: tinkex warns and
#: ignores them (it makes its own connections; ``transport=`` replaces them in tests).
IGNORED_ARGUMENTS = frozenset({"http_client", "default_query", "_strict_response_validation"})


def _timeout_fields(timeout: httpx.Timeout) -> dict[str, float]:
    """``httpx.Timeout`` -> ``timeout`` (the largest phase) and ``connect_timeout``."""
    phases = [timeout.read, timeout.write, timeout.connect, timeout.pool]
    given = [float(t) for t in phases if t is not None]
    out: dict[str, float] = {}
    if given:
        out["timeout"] = max(given)
    if timeout.connect is not None:
        out["connect_timeout"] = float(timeout.connect)
    return out


def service_config(
    config: Config | None,
    kwargs: dict[str, Any],
    *,
    base_url: str | None,
    api_key: str | None,
    default_headers_overrides: Mapping[str, str] | None,
) -> Config:
    """Merge explicit arguments and ``Config`` fields given as keywords into one Config."""
    fields = dict(kwargs)
    for name in sorted(IGNORED_ARGUMENTS & fields.keys()):
        fields.pop(name)
        warnings.warn(
            f"ServiceClient ignores {name}=: tinkex makes its own connections "
            "(configure them with Config fields such as timeout, max_connections)",
            FutureWarning,
            stacklevel=3,
        )
    if base_url is not None:
        fields["base_url"] = base_url
    if api_key is not None:
        fields["api_key"] = api_key
    timeout = fields.get("timeout")
    if isinstance(timeout, httpx.Timeout):
        del fields["timeout"]
        fields.update(_timeout_fields(timeout))
    if default_headers_overrides is not None:
        if not isinstance(default_headers_overrides, Mapping):
            raise TinkexValidationError(
                "default_headers_overrides",
                f"must be a dict of str to str, got {type(default_headers_overrides).__name__}",
            )
        base = dict(config.default_headers) if config is not None else {}
        base.update(dict(fields.get("default_headers") or {}))
        base.update(default_headers_overrides)
        fields["default_headers"] = base
    options = fields.pop("request_options", None)
    if options is not None:
        headers = fields.get("default_headers")
        if headers is None and config is not None:
            headers = config.default_headers
        fields.update(request_options_fields(options, headers))
    if config is None:
        return Config(**fields)
    return config.replace(**fields) if fields else config
