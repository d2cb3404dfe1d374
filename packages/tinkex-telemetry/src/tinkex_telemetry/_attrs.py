"""Turning arbitrary values into safe OpenTelemetry attributes."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.util.types import AttributeValue

from tinkex_telemetry._redact import is_secret_key, redact_text, sanitize_url

__all__ = [
    "body_ids",
    "protobuf_body_ids",
    "route_of",
    "safe_base_url",
    "span_attributes",
    "template_path",
    "to_attribute",
]

_ID_SEGMENT = re.compile(r"\d|^[0-9a-fA-F\-]{24,}$|:")
_VERSION_SEGMENT = re.compile(r"^v\d+$")
_MAX_STR = 1024

#: Top-level request-body fields copied to attempt spans as ``tinkex.<field>``.
BODY_ID_FIELDS: tuple[str, ...] = (
    "request_id",
    "model_id",
    "seq_id",
    "session_id",
    "sampling_session_id",
    "base_model",
)
_BODY_PARSE_LIMIT = 256 * 1024
_BODY_SCAN_WINDOW = 8 * 1024
_BODY_FIELD_RE = re.compile(
    rb'"('
    + b"|".join(f.encode() for f in BODY_ID_FIELDS)
    + rb')"\s*:\s*(?:"([^"\\]{0,256})"|(-?\d{1,19}))'
)


def template_path(path: str) -> str:
    """A low-cardinality form of a URL path: id-looking segments become ``{id}``.

    ``/api/v1/training_runs/run-42/checkpoints/weights/0001`` →
    ``/api/v1/training_runs/{id}/checkpoints/weights/{id}``.
    """
    path = path.split("?", 1)[0]
    out = []
    for seg in path.split("/"):
        if seg and not _VERSION_SEGMENT.match(seg) and _ID_SEGMENT.search(seg):
            out.append("{id}")
        else:
            out.append(seg)
    return "/".join(out) or "/"


def route_of(path: str) -> str:
    """The API route of a URL path, templated: the part from ``/api/`` on when present
    (base URLs may carry a prefix such as ``/services/tinker-prod`` or a ``local://``
    data directory), else the whole path."""
    path = path.split("?", 1)[0]
    at = path.find("/api/")
    return template_path(path[at:] if at >= 0 else path)


def to_attribute(value: Any) -> AttributeValue | None:
    """An OpenTelemetry attribute value for ``value`` (strings redacted), or ``None``."""
    if value is None:
        return None
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value[:_MAX_STR])
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        items = [v for v in value if v is not None]
        if all(isinstance(v, bool) for v in items):
            return [bool(v) for v in items]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            return [int(v) for v in items]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
            return [float(v) for v in items]
        return [redact_text(str(v)[:_MAX_STR]) for v in items]
    enum_value = getattr(value, "value", None)
    if isinstance(enum_value, str | int | float | bool):
        return to_attribute(enum_value)
    return redact_text(str(value)[:_MAX_STR])


def span_attributes(attributes: Mapping[str, Any] | None) -> dict[str, AttributeValue]:
    """Safe span attributes from caller-supplied ones.

    Keys without a namespace (no ``.``) get the ``tinkex.`` prefix; secret-looking keys are
    dropped; strings are redacted and truncated; other values are converted or stringified.
    """
    out: dict[str, AttributeValue] = {}
    for key, value in (attributes or {}).items():
        if not isinstance(key, str) or not key or is_secret_key(key.rsplit(".", 1)[-1]):
            continue
        if key.endswith("base_url") and isinstance(value, str):
            value = safe_base_url(value)
        converted = to_attribute(value)
        if converted is None:
            continue
        out[key if "." in key else f"tinkex.{key}"] = converted
    return out


def safe_base_url(url: str) -> str:
    """A base URL fit for an attribute: for an in-process scheme (``local:///data/dir``)
    only the scheme (the path is a local directory), else the URL without credentials."""
    scheme, sep, _rest = url.partition("://")
    if sep and scheme.lower() not in ("http", "https"):
        return f"{scheme}://"
    return sanitize_url(url)


def body_ids(content: bytes) -> dict[str, AttributeValue]:
    """Id fields (``request_id``, ``model_id``, ``seq_id``...) of a JSON request body.

    Small bodies are parsed; large ones (training batches) are only scanned at both ends,
    where the top-level scalar fields sit. Nothing else of the body is kept.
    """
    found: dict[str, AttributeValue] = {}
    if not content:
        return found
    if len(content) <= _BODY_PARSE_LIMIT:
        try:
            parsed = json.loads(content)
        except ValueError:
            return found
        if not isinstance(parsed, dict):
            return found
        for name in BODY_ID_FIELDS:
            value = parsed.get(name)
            if isinstance(value, str) and value:
                found[f"tinkex.{name}"] = redact_text(value[:256])
            elif isinstance(value, int) and not isinstance(value, bool):
                found[f"tinkex.{name}"] = value
        return found
    for window in (content[:_BODY_SCAN_WINDOW], content[-_BODY_SCAN_WINDOW:]):
        for match in _BODY_FIELD_RE.finditer(window):
            name = match.group(1).decode()
            key = f"tinkex.{name}"
            if key in found:
                continue
            if match.group(2) is not None:
                found[key] = redact_text(match.group(2).decode("utf-8", "replace"))
            else:
                found[key] = int(match.group(3))
    return found


#: The head of a protobuf request body that is read for ids (they are its first fields).
_PROTOBUF_HEAD = 512


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError("truncated varint")


def protobuf_body_ids(content: bytes, content_encoding: str | None) -> dict[str, AttributeValue]:
    """``tinkex.model_id`` and ``tinkex.seq_id`` of a protobuf ``forward``/``forward_backward``
    body (``tinker_public.ForwardBackwardRequest``: ``model_id = 1``, ``seq_id = 2``, written
    first), zstd-compressed or not. Only the head of the body is read (and inflated)."""
    head = content[:_PROTOBUF_HEAD]
    if (content_encoding or "").strip().lower() == "zstd":
        import io

        import zstandard

        try:
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(content)) as reader:
                head = reader.read(_PROTOBUF_HEAD)
        except zstandard.ZstdError:
            return {}
    found: dict[str, AttributeValue] = {}
    pos = 0
    try:
        while pos < len(head) and len(found) < 2:
            tag, pos = _varint(head, pos)
            field, wire_type = tag >> 3, tag & 7
            if field == 1 and wire_type == 2:
                size, pos = _varint(head, pos)
                if pos + size > len(head):
                    break
                found["tinkex.model_id"] = redact_text(head[pos : pos + size].decode()[:256])
                pos += size
            elif field == 2 and wire_type == 0:
                value, pos = _varint(head, pos)
                found["tinkex.seq_id"] = value - (1 << 64) if value >= 1 << 63 else value
            else:
                break  # past the leading scalar fields
    except (ValueError, UnicodeDecodeError):
        pass
    return found
