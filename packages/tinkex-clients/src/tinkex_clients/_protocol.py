"""Protocol negotiation: which wire generation one server speaks (protocol.md §2, §4).

At session start (:func:`negotiate`) the client sends ``POST /api/v1/client/config``
``{"sdk_version": ...}`` and keeps the flags. ``Config.protocol`` decides:

* ``"json"``: the JSON generation of tinker 0.16.1; ``client/config`` is not sent.
* ``"protobuf"``: ``forward``/``forward_backward`` bodies are always protobuf (``forward`` as
  ``forward_backward`` with ``forward_only``), results are asked for as protobuf; a refused
  protobuf body is an error (no fallback). ``client/config`` is still sent for its flags
  (a 404 there is fine).
* ``"auto"`` (the default):

  - ``client/config`` answered 404 (or 405/501, or another refusal that is not about
    credentials): the JSON generation (skyrl-tx 0.3.0, ``tinkex serve --json-only``,
    older servers);
  - flags with ``proto_write_fwdbwd: true`` (``tinkex serve``, ``local://``): protobuf;
  - the hosted Tinker service (``*.thinkingmachines.dev`` / ``*.thinkingmachines.ai``),
    which the official SDK >= 0.25 always sends protobuf whatever its flags say: protobuf;
  - any other flags (the ``skyrl`` package answers only ``{"pjwt_auth_enabled": false}``):
    JSON;
  - a server this process already saw refuse protobuf bodies: JSON (see below).

  Bodies are zstd-compressed when the flags say ``proto_compress_fwdbwd``.

**Fallback.** In ``auto`` mode, a protobuf body refused at submission with 415, or with
400/422 by a server that has not accepted a protobuf body in this process yet, is sent
again once as JSON, with the *same* ``seq_id`` (the refused request never ran: a 4xx at
submission means nothing was queued) and a new idempotency key (a server may have stored
the refusal under the old one). Only the refused chunk is re-sent, never chunks the server
already accepted, so no step is applied twice. If the JSON request is accepted, the server
is remembered as JSON-only (per base URL, for this process) and later sessions skip
protobuf; if it is refused too, the refusal was about the content: nothing is remembered
and the JSON error is raised.

**Results.** With protobuf, the polls of Forward/ForwardBackward/Sample futures send
``Accept: application/x-protobuf, application/json;q=0.5`` and a protobuf answer is
decoded into the tinkex-types model; JSON answers are still accepted.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import structlog

from tinkex_http import Config, HTTPClient
from tinkex_types import PROTOBUF_MEDIA_TYPE, APIStatusError

__all__ = [
    "CLIENT_CONFIG_PATH",
    "PROTOBUF_RESULTS",
    "WireProtocol",
    "forget_learned",
    "is_hosted",
    "learned_json",
    "negotiate",
]

_log = structlog.get_logger("tinkex.clients")

CLIENT_CONFIG_PATH: Final = "/api/v1/client/config"
#: Request types whose results a protobuf server answers as protobuf (protocol.md §4.2).
PROTOBUF_RESULTS: Final = frozenset({"Forward", "ForwardBackward", "Sample"})
#: Answers to ``client/config`` that mean "this server has no handshake".
_NO_HANDSHAKE: Final = frozenset({404, 405, 501})
#: Answers that are about the credentials, not the protocol: raised.
_AUTH: Final = frozenset({401, 403})
#: Statuses to a protobuf body that may mean "I do not read protobuf".
_REFUSED_MEDIA: Final = frozenset({400, 415, 422})
#: Hosts of the hosted Tinker service (the official SDK >= 0.25 always sends protobuf).
_HOSTED_SUFFIXES: Final = (".thinkingmachines.dev", ".thinkingmachines.ai")

Generation = Literal["json", "protobuf"]


def is_hosted(base_url: str) -> bool:
    """Whether ``base_url`` is the hosted Tinker service."""
    host = (urlsplit(base_url).hostname or "").lower()
    return any(host.endswith(suffix) or host == suffix[1:] for suffix in _HOSTED_SUFFIXES)


# -- what this process learnt per server ----------------------------------------------------
_lock = threading.Lock()
_json_only: dict[str, str] = {}
_took_protobuf: set[str] = set()


def _key(base_url: str) -> str:
    return base_url.rstrip("/")


def learned_json(base_url: str) -> str | None:
    """Why this process treats ``base_url`` as JSON-only (``None``: it does not)."""
    with _lock:
        return _json_only.get(_key(base_url))


def _remember_json(base_url: str, reason: str) -> None:
    with _lock:
        _json_only[_key(base_url)] = reason


def _took(base_url: str) -> bool:
    with _lock:
        return _key(base_url) in _took_protobuf


def _remember_took(base_url: str) -> None:
    with _lock:
        _took_protobuf.add(_key(base_url))


def forget_learned(base_url: str | None = None) -> None:
    """Forget what was learnt about one server (``None``: about every server)."""
    with _lock:
        if base_url is None:
            _json_only.clear()
            _took_protobuf.clear()
        else:
            _json_only.pop(_key(base_url), None)
            _took_protobuf.discard(_key(base_url))


@dataclass(frozen=True, slots=True)
class WireProtocol:
    """The generation one session speaks to its server, and why.

    ``flags`` is the ``client/config`` answer (``None``: the server has none). ``forced``:
    ``Config.protocol`` was ``"protobuf"`` (no fallback).
    """

    generation: Generation = "json"
    reason: str = "not negotiated"
    flags: Mapping[str, Any] | None = None
    compress: bool = False
    forced: bool = False
    base_url: str = field(default="", repr=False)

    @property
    def protobuf(self) -> bool:
        return self.generation == "protobuf"

    def result_accept(self, request_type: str | None) -> tuple[str, ...]:
        """The media types a poll for ``request_type`` asks for besides JSON."""
        if self.protobuf and request_type in PROTOBUF_RESULTS:
            return (PROTOBUF_MEDIA_TYPE,)
        return ()

    def flag(self, name: str, default: Any = None) -> Any:
        return default if self.flags is None else self.flags.get(name, default)

    def chunk_limits(self, items: int, size: int) -> tuple[int, int]:
        """``(items, bytes)`` per forward_backward chunk: the given limits, lowered to the
        server's ``fwdbwd_max_chunk_len`` / ``fwdbwd_max_chunk_bytes_count`` flags."""
        out = []
        for name, mine in (("fwdbwd_max_chunk_len", items), ("fwdbwd_max_chunk_bytes_count", size)):
            theirs = self.flag(name)
            ok = isinstance(theirs, int | float) and not isinstance(theirs, bool) and theirs >= 1
            out.append(min(mine, int(theirs)) if ok else mine)
        return out[0], out[1]

    # -- fallback ---------------------------------------------------------------------------
    def may_fall_back(self, exc: BaseException) -> bool:
        """Whether a refusal ``exc`` of a protobuf body is worth re-sending as JSON."""
        if self.forced or not isinstance(exc, APIStatusError):
            return False
        status = exc.status_code
        if status == 415:
            return True
        return status in _REFUSED_MEDIA and not _took(self.base_url)

    def accepted(self) -> None:
        """A protobuf body was accepted by this server: later 400s are about content."""
        _remember_took(self.base_url)

    def fell_back(self, exc: APIStatusError) -> WireProtocol:
        """The JSON re-send of a refused protobuf body was accepted: JSON from now on."""
        reason = f"the server refused a protobuf body ({exc.status_code}) and took it as JSON"
        _remember_json(self.base_url, reason)
        _log.warning(
            "protocol_fallback",
            base_url=self.base_url,
            status=exc.status_code,
            hint="this server is treated as JSON-only for the rest of the process; "
            "set protocol='json' (TINKEX_PROTOCOL=json) to skip the attempt",
        )
        return replace(self, generation="json", reason=reason, compress=False)


async def _client_config(http: HTTPClient, config: Config) -> tuple[dict[str, Any] | None, str]:
    """The flags of ``client/config`` (``None`` when the server has no handshake)."""
    try:
        body = await http.post(CLIENT_CONFIG_PATH, {"sdk_version": config.sdk_version})
    except APIStatusError as exc:
        if exc.status_code in _AUTH:
            raise
        if exc.status_code in _NO_HANDSHAKE:
            return None, f"client/config answered {exc.status_code} (no handshake)"
        return None, f"client/config was refused ({exc.status_code})"
    if not isinstance(body, dict):
        return None, "client/config answered something other than a JSON object"
    return body, "client/config answered"


async def negotiate(http: HTTPClient, config: Config) -> WireProtocol:
    """The generation to speak to ``config.base_url`` (see the module docstring)."""
    mode = config.protocol
    base = WireProtocol(base_url=config.base_url)
    if mode == "json":
        return replace(base, reason="protocol='json'")
    flags, why = await _client_config(http, config)
    compress = bool(flags and flags.get("proto_compress_fwdbwd") is True)
    base = replace(base, flags=flags, compress=compress)
    if mode == "protobuf":
        return replace(base, generation="protobuf", forced=True, reason="protocol='protobuf'")
    if flags is None:
        return replace(base, reason=f"{why}: the JSON generation", compress=False)
    learned = learned_json(config.base_url)
    if learned is not None:
        return replace(base, reason=learned, compress=False)
    if flags.get("proto_write_fwdbwd") is True:
        return replace(base, generation="protobuf", reason="flags: proto_write_fwdbwd")
    if is_hosted(config.base_url):
        return replace(base, generation="protobuf", reason="the hosted Tinker service")
    return replace(
        base, reason="flags without proto_write_fwdbwd: the JSON generation", compress=False
    )
