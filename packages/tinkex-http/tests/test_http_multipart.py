"""Multipart form encoding with bracket-notation fields."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tinkex_http import HTTPClient, encode_multipart, flatten_form_fields
from tinkex_types import TinkexValidationError

MakeClient = Callable[..., HTTPClient]


def test_bracket_notation() -> None:
    fields = flatten_form_fields(
        {"a": {"b": 1, "c": {"d": "x"}}, "tags": ["p", "q"], "n": None, "flag": True, "off": False}
    )
    assert fields == [
        ("a[b]", "1"),
        ("a[c][d]", "x"),
        ("tags[]", "p"),
        ("tags[]", "q"),
        ("n", ""),
        ("flag", "true"),
        ("off", "false"),
    ]


def test_encoded_body_parts(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x00\x01binary")
    body = encode_multipart(
        {"meta": {"run": "r1"}},
        {
            "raw": b"raw-bytes",
            "disk": path,
            "obj": io.BytesIO(b"from-file-object"),
            "tuple": ("notes.txt", "hello text", "text/plain", {"X-Part": "1"}),
        },
        boundary="b" * 32,
    )
    assert body.content_type == f"multipart/form-data; boundary={'b' * 32}"
    text = body.content
    assert text.startswith(b"--" + b"b" * 32 + b"\r\n")
    assert text.endswith(b"--" + b"b" * 32 + b"--\r\n")
    assert b'name="meta[run]"\r\n\r\nr1\r\n' in text
    assert (
        b'name="raw"; filename="raw"\r\nContent-Type: application/octet-stream\r\n\r\nraw-bytes\r\n'
        in text
    )
    assert b'filename="weights.bin"' in text
    assert b"\x00\x01binary" in text
    assert b"from-file-object" in text
    assert (
        b'filename="notes.txt"\r\nContent-Type: text/plain\r\nX-Part: 1\r\n\r\nhello text\r\n'
        in text
    )


def test_default_boundary_is_32_hex() -> None:
    body = encode_multipart({"a": 1}, None)
    assert re.fullmatch(r"[0-9a-f]{32}", body.boundary)


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TinkexValidationError, match="no such file"):
        encode_multipart({}, {"f": tmp_path / "missing.bin"})
    with pytest.raises(TinkexValidationError, match="tuple"):
        encode_multipart({}, {"f": ("a",)})
    with pytest.raises(TinkexValidationError, match="boundary"):
        encode_multipart({}, {}, boundary="bad\r\n")


async def test_client_sends_multipart(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"uploaded": True})

    async with make_client(handler) as http:
        result = await http.request(
            "POST", "/api/v1/upload", body={"kind": "x"}, files={"f": b"data"}
        )
    assert result == {"uploaded": True}
    assert seen[0].headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'name="kind"\r\n\r\nx\r\n' in seen[0].content
