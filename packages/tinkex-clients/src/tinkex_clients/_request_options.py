"""tinker's ``RequestOptions`` (the per-request options of its HTTP layer) and what they
mean for tinkex: ``ServiceClient(request_options=RequestOptions(...))`` applies them to the
session's :class:`~tinkex_http.Config`.

* ``headers`` are added to ``Config.default_headers`` (sent with every request);
* ``max_retries`` becomes ``Config.max_retries``;
* ``timeout`` (seconds, an ``httpx.Timeout`` or ``None`` for no limit) becomes
  ``Config.timeout`` (and ``connect_timeout`` from an ``httpx.Timeout``);
* ``params``, ``extra_json``, ``idempotency_key`` and ``follow_redirects`` shape single
  requests of tinker's generated resource layer; tinkex has no such layer and ignores them
  with a ``FutureWarning`` (tinkex sends its own idempotency keys).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, TypedDict

import httpx

from tinkex_types import TinkexValidationError

__all__ = ["IGNORED_REQUEST_OPTIONS", "RequestOptions", "request_options_fields"]

#: The ``RequestOptions`` keys tinkex ignores (with a ``FutureWarning``).
IGNORED_REQUEST_OPTIONS = ("params", "extra_json", "idempotency_key", "follow_redirects")

#: No timeout (``timeout=None``): a day, as ``Config`` wants a number.
_NO_TIMEOUT = 86_400.0


class RequestOptions(TypedDict, total=False):
    """tinker's per-request options (every key optional)."""

    headers: Mapping[str, str]
    max_retries: int
    timeout: float | httpx.Timeout | None
    params: Mapping[str, Any]
    extra_json: Mapping[str, Any]
    idempotency_key: str
    follow_redirects: bool


def _timeout(value: Any) -> dict[str, float]:
    if value is None:
        return {"timeout": _NO_TIMEOUT}
    if isinstance(value, httpx.Timeout):
        phases = [value.read, value.write, value.connect, value.pool]
        given = [float(t) for t in phases if t is not None]
        out = {"timeout": max(given) if given else _NO_TIMEOUT}
        if value.connect is not None:
            out["connect_timeout"] = float(value.connect)
        return out
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise TinkexValidationError(
            "request_options['timeout']",
            f"must be seconds > 0, an httpx.Timeout or None, got {value!r}",
        )
    return {"timeout": float(value)}


def request_options_fields(
    options: Any, default_headers: Mapping[str, str] | None
) -> dict[str, Any]:
    """The ``Config`` fields ``options`` set (``default_headers``: the ones already set)."""
    if not isinstance(options, Mapping):
        raise TinkexValidationError(
            "request_options",
            f"must be a RequestOptions dict, got {type(options).__name__}",
            "pass tinkex.RequestOptions(timeout=30, max_retries=3, headers={...})",
        )
    unknown = sorted(set(options) - set(RequestOptions.__annotations__))
    if unknown:
        raise TinkexValidationError(
            "request_options",
            f"unknown keys {unknown}",
            f"use {sorted(RequestOptions.__annotations__)}",
        )
    ignored = [k for k in IGNORED_REQUEST_OPTIONS if k in options]
    if ignored:
        warnings.warn(
            f"request_options {ignored} are ignored: they shape single requests of tinker's "
            "own HTTP layer, which tinkex does not have",
            FutureWarning,
            stacklevel=4,
        )
    fields: dict[str, Any] = {}
    if "headers" in options:
        headers = options["headers"]
        if not isinstance(headers, Mapping):
            raise TinkexValidationError(
                "request_options['headers']", "must be a dict of str to str"
            )
        fields["default_headers"] = {**dict(default_headers or {}), **dict(headers)}
    if "max_retries" in options:
        fields["max_retries"] = options["max_retries"]
    if "timeout" in options:
        fields.update(_timeout(options["timeout"]))
    return fields
