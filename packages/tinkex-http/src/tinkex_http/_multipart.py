"""``multipart/form-data`` encoding with bracket-notation fields (tinkex-features.md §2.2).

``{"a": {"b": 1}, "tags": ["x", "y"], "n": None}`` becomes the fields ``a[b]=1``,
``tags[]=x``, ``tags[]=y`` and ``n=`` (booleans as ``true``/``false``). Files are given as
``name -> value`` where value is ``bytes``, a :class:`pathlib.Path` (read from disk), a binary
file object, or a tuple ``(filename, content[, content_type[, headers]])``. The boundary is
32 lowercase hex characters unless supplied.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tinkex_types import TinkexValidationError

__all__ = ["MultipartBody", "encode_multipart", "flatten_form_fields"]


@dataclass(frozen=True, slots=True)
class MultipartBody:
    content: bytes
    content_type: str
    boundary: str


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def flatten_form_fields(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Flatten nested mappings and lists into bracket-notation ``(name, value)`` pairs."""
    out: list[tuple[str, str]] = []

    def walk(name: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{name}[{k}]" if name else str(k), v)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(f"{name}[]", item)
        else:
            out.append((name, _scalar(value)))

    for key, val in data.items():
        walk(f"{prefix}[{key}]" if prefix else str(key), val)
    return out


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _file_part(name: str, value: Any) -> tuple[str, bytes, str, Mapping[str, str]]:
    headers: Mapping[str, str] = {}
    content_type = "application/octet-stream"
    filename: str
    if isinstance(value, tuple):
        if not 2 <= len(value) <= 4:
            raise TinkexValidationError(
                f"files[{name!r}]",
                "a tuple must be (filename, content[, content_type[, headers]])",
            )
        filename = str(value[0])
        content_raw = value[1]
        if isinstance(content_raw, str):  # text content inside a tuple, never a path
            content_raw = content_raw.encode()
        if len(value) >= 3 and value[2]:
            content_type = str(value[2])
        if len(value) == 4 and value[3]:
            headers = value[3]
    else:
        content_raw = value
        filename = name
        if isinstance(value, (str, os.PathLike)) and not isinstance(value, (bytes, bytearray)):
            filename = pathlib.Path(value).name
        else:
            filename = pathlib.Path(getattr(value, "name", name) or name).name
    data: bytes
    if isinstance(content_raw, (bytes, bytearray, memoryview)):
        data = bytes(content_raw)
    elif isinstance(content_raw, (str, os.PathLike)):
        path = pathlib.Path(content_raw)
        if not path.is_file():
            raise TinkexValidationError(
                f"files[{name!r}]", f"no such file: {str(path)!r}", "pass bytes or an existing path"
            )
        data = path.read_bytes()
    elif hasattr(content_raw, "read"):
        read = content_raw.read()
        data = read.encode() if isinstance(read, str) else bytes(read)
    elif isinstance(content_raw, Iterable):
        data = b"".join(bytes(c) for c in content_raw)
    else:
        raise TinkexValidationError(
            f"files[{name!r}]",
            f"unsupported file content {type(content_raw).__name__}",
            "pass bytes, a path, a file object or a (filename, content) tuple",
        )
    return filename, data, content_type, headers


def encode_multipart(
    data: Mapping[str, Any] | None,
    files: Mapping[str, Any] | None,
    *,
    boundary: str | None = None,
) -> MultipartBody:
    """Encode form fields (bracket notation) and files into one ``multipart/form-data`` body."""
    if boundary is None:
        boundary = os.urandom(16).hex()
    if not boundary or len(boundary) > 70 or any(c in boundary for c in '\r\n"'):
        raise TinkexValidationError("boundary", f"invalid multipart boundary {boundary!r}")
    sep = f"--{boundary}\r\n".encode()
    parts: list[bytes] = []
    for name, value in flatten_form_fields(data or {}):
        parts.append(sep)
        parts.append(f'Content-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'.encode())
        parts.append(value.encode())
        parts.append(b"\r\n")
    for name, value in (files or {}).items():
        filename, content, content_type, headers = _file_part(name, value)
        parts.append(sep)
        parts.append(
            (
                f'Content-Disposition: form-data; name="{_quote(name)}"; '
                f'filename="{_quote(filename)}"\r\n'
                f"Content-Type: {content_type}\r\n"
            ).encode()
        )
        for hname, hvalue in headers.items():
            parts.append(f"{hname}: {hvalue}\r\n".encode())
        parts.append(b"\r\n")
        parts.append(content)
        parts.append(b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return MultipartBody(
        content=b"".join(parts),
        content_type=f"multipart/form-data; boundary={boundary}",
        boundary=boundary,
    )
