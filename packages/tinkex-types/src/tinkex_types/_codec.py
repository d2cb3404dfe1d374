"""The wire-codec seam: how a pydantic model becomes bytes on the wire and back.

The pydantic models of tinkex-types are the one representation in memory; a codec
translates them for one media type. Each side has one place that picks a codec (the
server by ``Content-Type``/``Content-Encoding`` of a request and the ``Accept`` of a
poll, the client by the server's ``client/config`` answer) and calls :meth:`WireCodec.decode`
or :meth:`WireCodec.encode`. JSON is always available; further codecs (protobuf) register
with :func:`register_codec` and declare which models they carry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError

from tinkex_types._errors import TinkexError, TinkexValidationError

__all__ = [
    "JSON_MEDIA_TYPE",
    "PROTOBUF_MEDIA_TYPE",
    "JsonCodec",
    "WireBodyTooLarge",
    "WireCodec",
    "WireDecodeError",
    "accepted_media_types",
    "codec_for",
    "decode_content",
    "encode_content",
    "media_type_of",
    "register_codec",
    "registered_codecs",
]

JSON_MEDIA_TYPE = "application/json"
PROTOBUF_MEDIA_TYPE = "application/x-protobuf"

_M = TypeVar("_M", bound=BaseModel)


class WireDecodeError(TinkexError, ValueError):
    """A body could not be decoded: names what was wrong (a 400 on the server)."""

    def __init__(self, field: str, problem: str, fix: str | None = None) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        text = f"{field}: {problem}"
        if fix:
            text += f" ({fix})"
        super().__init__(text)


class WireBodyTooLarge(WireDecodeError):
    """A compressed body inflates beyond the allowed size (a 413 on the server)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__("body", f"decompresses to more than the limit of {limit} bytes")


@runtime_checkable
class WireCodec(Protocol):
    """Translates wire models to and from one media type."""

    @property
    def media_type(self) -> str:
        """The ``Content-Type`` this codec writes (parameters excluded)."""
        ...

    def carries(self, model: type[BaseModel]) -> bool:
        """Whether this codec can encode and decode ``model``."""
        ...

    def encode(self, value: BaseModel) -> bytes:
        """``value`` as a body of :attr:`media_type`."""
        ...

    def decode(self, model: type[_M], body: bytes) -> _M:
        """A ``model`` from ``body``; raises :class:`WireDecodeError` naming the problem."""
        ...


class JsonCodec:
    """JSON through pydantic: every wire model, ``NaN``/``Infinity`` as JSON constants."""

    media_type = JSON_MEDIA_TYPE

    def carries(self, model: type[BaseModel]) -> bool:
        return True

    def encode(self, value: BaseModel) -> bytes:
        return value.model_dump_json(by_alias=True).encode()

    def decode(self, model: type[_M], body: bytes) -> _M:
        try:
            return model.model_validate_json(body)
        except ValidationError as exc:
            errors = exc.errors()
            if not errors:
                raise WireDecodeError("body", str(exc)) from None
            loc = ".".join(str(p) for p in errors[0]["loc"]) or "body"
            raise WireDecodeError(loc, errors[0]["msg"]) from None


_CODECS: dict[str, WireCodec] = {JSON_MEDIA_TYPE: JsonCodec()}
_LAZY: dict[str, Callable[[], WireCodec]] = {}
_LAZY_LOCK = threading.Lock()


def register_codec(codec: WireCodec | Callable[[], WireCodec], media_type: str = "") -> None:
    """Register a codec (or, with ``media_type``, a factory called on first use)."""
    if isinstance(codec, WireCodec):
        _CODECS[codec.media_type] = codec
        return
    if not media_type:
        raise TypeError("a codec factory needs its media_type")
    _LAZY[media_type] = codec


def codec_for(media_type: str) -> WireCodec | None:
    """The codec of ``media_type`` (parameters ignored), or ``None`` when there is none."""
    key = media_type_of(media_type)
    codec = _CODECS.get(key)
    if codec is not None or key not in _LAZY:
        return codec
    with _LAZY_LOCK:  # one thread builds it; the others wait and find it registered
        codec = _CODECS.get(key)
        if codec is None and key in _LAZY:
            codec = _LAZY[key]()
            _CODECS[key] = codec
            del _LAZY[key]
    return codec


def registered_codecs() -> list[str]:
    """The media types that have a codec (registered or lazily available)."""
    return sorted({*_CODECS, *_LAZY})


def media_type_of(content_type: str | None) -> str:
    """``"application/json; charset=utf-8"`` → ``"application/json"``; empty → JSON."""
    if not content_type:
        return JSON_MEDIA_TYPE
    return content_type.split(";", 1)[0].strip().lower() or JSON_MEDIA_TYPE


def accepted_media_types(accept: str | None) -> list[str]:
    """The media types of an ``Accept`` header in preference order (``q`` respected)."""
    if not accept:
        return []
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept.split(",")):
        pieces = [p.strip() for p in part.split(";")]
        if not pieces[0]:
            continue
        quality = 1.0
        for param in pieces[1:]:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, index, pieces[0].lower()))
    return [media for _, _, media in sorted(ranked)]


def _zstd_decompress(body: bytes, max_size: int | None) -> bytes:
    """Strict zstd: one or more complete frames, at most ``max_size`` bytes decompressed."""
    try:
        import zstandard
    except ImportError:  # pragma: no cover - zstandard is a dependency of tinkex-types
        raise WireDecodeError(
            "Content-Encoding", "zstd is not available here", "install zstandard"
        ) from None
    fix = "send the whole zstd-compressed message"
    out: list[bytes] = []
    size = 0
    rest = body
    try:
        while rest:
            declared = zstandard.frame_content_size(rest)
            if max_size is not None and declared > max_size:
                raise WireBodyTooLarge(max_size)
            inflater = zstandard.ZstdDecompressor().decompressobj()
            piece: bytes = inflater.decompress(rest)
            if not inflater.eof:
                raise WireDecodeError("body", "is a truncated zstd frame", fix)
            size += len(piece)
            if max_size is not None and size > max_size:
                raise WireBodyTooLarge(max_size)
            out.append(piece)
            rest = inflater.unused_data
    except zstandard.ZstdError as exc:
        raise WireDecodeError("body", f"is not valid zstd data ({exc})", fix) from None
    return b"".join(out)


def decode_content(
    body: bytes, content_encoding: str | None, *, max_size: int | None = None
) -> bytes:
    """Undo ``Content-Encoding`` (identity or zstd); anything else is a :class:`WireDecodeError`.

    With ``max_size``, a body that decompresses to more raises :class:`WireBodyTooLarge`
    (a 413 on the server); a frame whose header declares more is refused before inflating."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "zstd":
        return _zstd_decompress(body, max_size)
    raise WireDecodeError(
        "Content-Encoding", f"{content_encoding!r} is not supported", "send identity or zstd"
    )


def encode_content(body: bytes, content_encoding: str | None) -> bytes:
    """Apply ``Content-Encoding`` (identity or zstd): the counterpart of :func:`decode_content`.

    zstd frames are written as the official SDK writes them (one frame, content size in the
    header). Any other encoding is a :class:`~tinkex_types.TinkexValidationError`.
    """
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "zstd":
        import zstandard

        compressed: bytes = zstandard.ZstdCompressor().compress(body)
        return compressed
    raise TinkexValidationError(
        "Content-Encoding", f"{content_encoding!r} is not supported", "use identity or zstd"
    )
