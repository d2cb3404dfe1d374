"""The client side of the wire-codec seam: the one place where request bodies are encoded
and answer bodies decoded by media type.

* :func:`encode_body` -- ``files`` make a multipart body; a JSON body (the default media
  type) takes the fast orjson path of :func:`tinkex_http.encode_json` and accepts models,
  mappings, lists and numpy arrays; any other media type needs a pydantic model and the
  codec registered for it in tinkex-types (:func:`tinkex_types.codec_for`), which must
  :meth:`~tinkex_types.WireCodec.carries` the model. ``compress="zstd"`` compresses the
  encoded body (:func:`tinkex_types.encode_content`) and sets ``Content-Encoding: zstd``.
* :func:`decode_body` -- a 2xx answer is decoded by its ``Content-Type``
  (:func:`tinkex_types.media_type_of`; a ``Content-Encoding`` was already undone by httpx):
  a media type with a registered codec other than JSON decodes into ``result_model`` (the
  model the caller expects, e.g. ``ForwardBackwardOutput``) and returns that model; JSON
  (and anything unrecognised, for servers that label JSON loosely) returns plain data,
  an empty body ``{}``.

So protobuf is an added codec: register it in tinkex-types and pass
``media_type=PROTOBUF_MEDIA_TYPE`` / ``result_model=...``; nothing here changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import BaseModel

from tinkex_http._encoding import decode_json, encode_json
from tinkex_http._multipart import encode_multipart
from tinkex_types import (
    JSON_MEDIA_TYPE,
    PROTOBUF_MEDIA_TYPE,
    APIResponseValidationError,
    TinkexValidationError,
    WireDecodeError,
    codec_for,
    encode_content,
    media_type_of,
    registered_codecs,
)

__all__ = ["Compression", "EncodedBody", "accept_header", "decode_body", "encode_body"]

Compression = Literal["identity", "zstd"]
_BODYLESS = frozenset({"GET", "HEAD", "DELETE"})


@dataclass(frozen=True, slots=True)
class EncodedBody:
    """A request body ready to send: bytes (``None``: no body) and its two headers."""

    content: bytes | None
    content_type: str | None
    content_encoding: str | None = None


def _compress(body: EncodedBody, compress: str | None) -> EncodedBody:
    if compress in (None, "identity") or body.content is None:
        return body
    if compress != "zstd":
        raise TinkexValidationError(
            "compress", f"unsupported compression {compress!r}", "use None, 'identity' or 'zstd'"
        )
    return EncodedBody(encode_content(body.content, "zstd"), body.content_type, "zstd")


def _encode_model(body: Any, media_type: str) -> bytes:
    codec = codec_for(media_type)
    if codec is None:
        raise TinkexValidationError(
            "media_type",
            f"no codec is registered for {media_type!r} (known: {', '.join(registered_codecs())})",
            "register one with tinkex_types.register_codec or send application/json",
        )
    if not isinstance(body, BaseModel):
        raise TinkexValidationError(
            "body",
            f"a {media_type} body must be a pydantic model, got {type(body).__name__}",
            "pass the request model (e.g. ForwardBackwardRequest)",
        )
    if not codec.carries(type(body)):
        raise TinkexValidationError(
            "media_type",
            f"the {media_type} codec does not carry {type(body).__name__}",
            "send this request as application/json",
        )
    return codec.encode(body)


def encode_body(
    method: str,
    body: Any,
    *,
    files: Mapping[str, Any] | None = None,
    media_type: str = JSON_MEDIA_TYPE,
    compress: str | None = None,
    exclude_none: bool = False,
) -> EncodedBody:
    """The bytes and headers of a request body (see the module docstring)."""
    if files is not None:
        multipart = encode_multipart(body or {}, files)
        return EncodedBody(multipart.content, multipart.content_type)
    media = media_type_of(media_type)
    content_type = None if method == "GET" else media
    if body is None:
        return EncodedBody(None if method in _BODYLESS else b"", content_type)
    if media == JSON_MEDIA_TYPE:
        encoded = EncodedBody(encode_json(body, exclude_none=exclude_none), content_type)
    else:
        encoded = EncodedBody(_encode_model(body, media), content_type)
    return _compress(encoded, compress)


def accept_header(media_types: list[str] | tuple[str, ...]) -> str:
    """An ``Accept`` value preferring ``media_types`` in order, JSON always acceptable."""
    ordered = [m for m in media_types if m != JSON_MEDIA_TYPE]
    parts = [f"{m};q={1.0 - 0.1 * i:.1f}" if i else m for i, m in enumerate(ordered)]
    parts.append(f"{JSON_MEDIA_TYPE};q=0.5" if ordered else JSON_MEDIA_TYPE)
    return ", ".join(parts)


def decode_body(
    method: str, path: str, response: httpx.Response, result_model: type[BaseModel] | None
) -> Any:
    """The decoded body of a 2xx answer (see the module docstring)."""
    media = media_type_of(response.headers.get("content-type"))
    codec = None if media == JSON_MEDIA_TYPE else codec_for(media)
    if codec is None and media == PROTOBUF_MEDIA_TYPE:
        raise APIResponseValidationError(
            f"{method} {path} answered {media} but no codec is registered for it "
            "(register the protobuf codec of tinkex-types, or ask for application/json)"
        )
    if codec is not None:
        if result_model is None:
            raise APIResponseValidationError(
                f"{method} {path} answered {media} and the caller named no result model "
                "to decode it into (pass result_model=...)"
            )
        try:
            return codec.decode(result_model, response.content)
        except WireDecodeError as exc:
            raise APIResponseValidationError(
                f"{method} {path} answered a {media} body that is not a valid "
                f"{result_model.__name__}: {exc}"
            ) from None
    try:
        return decode_json(response.content)
    except ValueError:
        raise APIResponseValidationError(
            f"{method} {path} answered {response.status_code} with a body that is not JSON "
            f"({len(response.content)} bytes)",
            body=response.text[:2000],
        ) from None
