"""Secret redaction for everything tinkex records: log events, span attributes, telemetry.

Three kinds of secrets are caught:

* values stored under a secret-looking key (``api_key``, ``x-api-key``, ``authorization``,
  ``cf-access-client-secret``, ``token``, ``secret``, ``password``, ``*_secret``,
  ``access_token``...), anywhere in nested dicts, lists and tuples;
* secret-looking text inside strings: Tinker API keys (``tml-...``), ``Bearer``/``Basic``
  credentials, ``key=value`` / ``key: value`` pairs with a secret key, passwords in URLs;
* exact values registered with :func:`register_secret` (the plugin registers the API key
  and the Cloudflare secret of every client configuration it sees).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "REDACTED",
    "SENSITIVE_HEADERS",
    "is_secret_key",
    "redact_secrets",
    "redact_text",
    "redact_value",
    "register_secret",
    "sanitize_url",
]

REDACTED = "[REDACTED]"

#: Headers that are never recorded anywhere (lower case).
SENSITIVE_HEADERS: frozenset[str] = frozenset(
    {
        "x-api-key",
        "authorization",
        "proxy-authorization",
        "cf-access-client-secret",
        "cookie",
        "set-cookie",
    }
)

_EXACT_KEYS = frozenset(
    {
        "api_key",
        "apikey",
        "x_api_key",
        "authorization",
        "proxy_authorization",
        "cf_access_client_secret",
        "token",
        "secret",
        "password",
        "passwd",
        "cookie",
        "set_cookie",
        "private_key",
        "credentials",
    }
)
_KEY_SUFFIXES = (
    "_api_key",
    "_apikey",
    "_secret",
    "_password",
    "_passwd",
    "_private_key",
    "access_token",
    "refresh_token",
    "auth_token",
    "api_token",
    "bearer_token",
    "id_token",
    "session_token",
    "hf_token",
)

# Order matters: credentials after an auth scheme go first, so that the key=value rule
# below cannot stop at the scheme word and leave the credential itself in place.
_TEXT_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b([Bb]earer|BEARER)(\s+)[A-Za-z0-9\-._~+/]{6,}=*"), rf"\1\2{REDACTED}"),
    (
        re.compile(r"\b(Basic)(\s+)(?=[A-Za-z0-9+/=]*[0-9+/=])[A-Za-z0-9+/]{8,}={0,2}"),
        rf"\1\2{REDACTED}",
    ),
    (re.compile(r"tml-[A-Za-z0-9_\-.]{4,}"), REDACTED),
    (re.compile(r"\bhf_[A-Za-z0-9]{16,}"), REDACTED),
    (
        re.compile(
            r"(?i)\b([\w-]*(?:api[_-]?key|authorization|client[_-]?secret|access[_-]?token|"
            r"refresh[_-]?token|auth[_-]?token|password|passwd|secret|token))"
            r"([\"']?\s*[:=]\s*)([\"']?)(?!\[?REDACTED\]?)[^\s\"',;&}\]]+"
        ),
        rf"\1\2\3{REDACTED}",
    ),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s:@]+:[^/\s@]+@"), rf"\1{REDACTED}@"),
)

_known_lock = threading.Lock()
_known: tuple[str, ...] = ()
_MIN_KNOWN_LEN = 8
_MAX_DEPTH = 32


def register_secret(value: object) -> None:
    """Remember an exact secret value so that it is redacted wherever it appears.

    Accepts a string or a secret wrapper with ``get_secret_value()`` (tinkex ``Secret``,
    pydantic ``SecretStr``). Values shorter than 8 characters are ignored (too likely to
    collide with ordinary text).
    """
    global _known
    getter = getattr(value, "get_secret_value", None)
    if callable(getter):
        value = getter()
    if not isinstance(value, str) or len(value) < _MIN_KNOWN_LEN:
        return
    with _known_lock:
        if value not in _known:
            # Longest first, so that a secret containing another one is replaced whole.
            _known = tuple(sorted((*_known, value), key=len, reverse=True))


def is_secret_key(key: object) -> bool:
    """Whether a mapping key or header name names a secret (case and ``-``/``_`` ignored)."""
    if not isinstance(key, str):
        return False
    norm = key.strip().lower().replace("-", "_").replace(" ", "_")
    return norm in _EXACT_KEYS or norm.endswith(_KEY_SUFFIXES)


#: Text that no rule of ``_TEXT_RULES`` can touch lacks all of these (case ignored): one
#: search lets the common case (routes, ids, methods) skip the six substitutions.
_MAYBE_SECRET = re.compile(r"(?i)bearer|basic|tml-|hf_|key|authorization|secret|token|passw|://")


def apply_text_rules(text: str) -> str:
    """Every pattern rule of ``_TEXT_RULES`` applied to ``text``, no shortcut."""
    for pattern, replacement in _TEXT_RULES:
        text = pattern.sub(replacement, text)
    return text


def redact_text(text: str) -> str:
    """Replace secret-looking parts of ``text`` with ``[REDACTED]``."""
    for secret in _known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if _MAYBE_SECRET.search(text) is None:
        return text
    return apply_text_rules(text)


def redact_value(value: Any, _depth: int = 0) -> Any:
    """Return a copy of ``value`` with every secret redacted.

    Dicts (by key and by value), lists, tuples, sets and strings are walked; bytes are
    decoded (with replacement) and treated as text; other objects are kept unless their
    ``repr`` shows a secret, in which case the redacted ``repr`` replaces them.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if _depth >= _MAX_DEPTH:
        return "[TRUNCATED]"
    if isinstance(value, Mapping):
        return {
            k: (
                REDACTED
                if is_secret_key(k) and value[k] not in (None, "")
                else redact_value(value[k], _depth + 1)
            )
            for k in value
        }
    if isinstance(value, list | tuple | set | frozenset):
        items = [redact_value(item, _depth + 1) for item in value]
        if isinstance(value, list):
            return items
        if isinstance(value, tuple):
            return tuple(items)
        return items  # sets may not hold the redacted (unhashable) copies
    if isinstance(value, bytes | bytearray):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    try:
        shown = repr(value)
    except Exception:  # a broken __repr__ must not break logging
        return f"<unrepresentable {type(value).__name__}>"
    redacted = redact_text(shown)
    return value if redacted == shown else redacted


def sanitize_url(url: str) -> str:
    """A URL fit for recording: no user info, secret-looking query values redacted.

    Query parameters whose name looks like a secret, or that are signatures of a signed
    URL (``sig``, ``signature``, ``X-Amz-Signature``...), get the value ``REDACTED``
    (the OpenTelemetry semantic-convention spelling).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query:
        pairs = []
        for name, val in parse_qsl(query, keep_blank_values=True):
            lowered = name.lower()
            if is_secret_key(name) or "signature" in lowered or lowered in {"sig", "key"}:
                val = "REDACTED"
            else:
                val = redact_text(val)
            pairs.append((name, val))
        query = urlencode(pairs, safe="[]")
    return redact_text(urlunsplit((parts.scheme, netloc, parts.path, query, "")))


def redact_secrets(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: redact secrets anywhere in the event (keys, nested values, text).

    Place it after ``format_exc_info`` (so that tracebacks are redacted too) and before the
    renderer.
    """
    for key in list(event_dict):
        if key in _PASSTHROUGH_KEYS:
            continue
        value = event_dict[key]
        if is_secret_key(key) and value not in (None, ""):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = redact_value(value)
    return event_dict


# Objects the renderers need intact: the exception (redacted by the exception formatter of
# ``configure_logging``) and the stdlib bridge's private keys.
_PASSTHROUGH_KEYS = frozenset({"exc_info", "_record", "_from_structlog"})
