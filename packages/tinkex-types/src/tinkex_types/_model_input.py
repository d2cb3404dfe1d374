"""ModelInput and its chunks (text tokens, inline images, image pointers)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, ClassVar, Literal, Union, cast

from pydantic import Discriminator, Field, Tag, field_serializer, field_validator

from tinkex_types._base import ImageFormat, WireModel
from tinkex_types._lazy import ArrayList, LazyListModel, new_model
from tinkex_types._numbers import INT64_MAX, INT64_MIN, check_int, int_rule, plain_int_list

_INT_TYPE: frozenset[type] = frozenset({int})


def _is_numpy(value: object) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "dtype")


def _int_array_tokens(value: Any) -> Any:
    """A 1-D integer numpy array within int64 as a private contiguous little-endian int64
    copy, or None (check one by one)."""
    if getattr(value, "ndim", None) != 1 or value.dtype.kind not in "iu":
        return None
    if value.dtype == "uint64" and value.size and int(value.max()) > INT64_MAX:
        return None
    arr = value.astype("<i8", copy=False)
    if not arr.flags.c_contiguous or arr is value:
        arr = arr.copy()  # the caller may change their array later: keep our own
    return arr


__all__ = [
    "EncodedTextChunk",
    "ImageAssetPointerChunk",
    "ImageChunk",
    "ImageDimensions",
    "ModelInput",
    "ModelInputChunk",
]


class EncodedTextChunk(LazyListModel):
    """Token ids: ``{"tokens": [...], "type": "encoded_text"}`` (``type`` optional on input).

    A chunk built from a numpy array (:meth:`ModelInput.from_ints`) keeps a copy of it and
    builds the ``tokens`` list only when it is read (``tinkex_types._lazy``)."""

    tokens: list[int]
    type: Literal["encoded_text"] = "encoded_text"

    wire_omit: ClassVar[frozenset[str]] = frozenset({"type"})
    lazy_field: ClassVar[str] = "tokens"

    @classmethod
    def _checked(cls, tokens: list[int]) -> EncodedTextChunk:
        """A chunk of ``tokens`` (the caller's own list: it is kept), checked as
        validation checks it, without pydantic's per-model work for the common case."""
        if plain_int_list(tokens):
            return new_model(cls, {"tokens": tokens, "type": "encoded_text"}, {"tokens"})
        return cls(tokens=tokens)

    def _list_from(self, array: Any) -> list[Any]:
        return ArrayList(array.tolist(), array, finite=True)

    @field_validator("tokens", mode="plain", json_schema_input_type=list[int])
    @classmethod
    def _token_ids(cls, value: Any) -> list[int]:
        # Strict: ints only (numpy integers converted; bools, floats and strings refused),
        # signed 64-bit. C-speed checks for the common cases (a list of plain ints, a 1-D
        # integer numpy array); anything else is checked element by element.
        if _is_numpy(value):
            checked = _int_array_tokens(value)
            if checked is not None:
                checked.flags.writeable = False
                return ArrayList(checked.tolist(), checked, finite=True)
            value = list(value)  # numpy scalars: the per-element path names the bad one
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ValueError(f"must be a list of token ids, got {type(value).__name__}")
        tokens: list[int] = value
        if plain_int_list(tokens):
            return tokens
        if not _INT_TYPE.issuperset(map(type, tokens)):
            tokens = [check_int(v, f"tokens[{i}]") for i, v in enumerate(tokens)]
        if tokens and not (min(tokens) >= INT64_MIN and max(tokens) <= INT64_MAX):
            for i, v in enumerate(tokens):
                check_int(v, f"tokens[{i}]")
        return tokens

    @property
    def length(self) -> int:
        return self._lazy_len()


class ImageDimensions(WireModel):
    """Width and height in pixels (``ImageChunk.override_dimensions``, SDK 0.38 protobuf)."""

    width: Annotated[int, int_rule(ge=0)]
    height: Annotated[int, int_rule(ge=0)]


class ImageChunk(WireModel):
    """An inline image. ``data`` holds the raw PNG/JPEG bytes; on the wire it is base64.

    A ``str`` given for ``data`` is read as base64 (that is what JSON carries); ``bytes``
    are taken as the raw image.
    """

    data: bytes
    format: ImageFormat
    expected_tokens: Annotated[int, int_rule(ge=0)] | None = None
    #: Resize the image to these dimensions before tokenising (protobuf only; 0.38).
    override_dimensions: ImageDimensions | None = None
    type: Literal["image"] = "image"

    wire_omit: ClassVar[frozenset[str]] = frozenset({"type"})

    @field_validator("data", mode="before")
    @classmethod
    def validate_data(cls, value: Any) -> Any:
        """A ``str`` is base64 (what JSON carries); bytes-like values are the raw image."""
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"data must be base64-encoded image bytes: {exc}") from exc
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        return value

    @field_serializer("data", when_used="json")
    def serialize_data(self, value: bytes) -> str:
        """The image bytes as base64 text (JSON)."""
        return base64.b64encode(value).decode("ascii")

    @property
    def length(self) -> int:
        if self.expected_tokens is None:
            raise ValueError("the token length of an image chunk is unknown: set expected_tokens")
        return self.expected_tokens


class ImageAssetPointerChunk(WireModel):
    """An image the server fetches itself (path or URL in ``location``)."""

    location: str
    format: ImageFormat
    expected_tokens: Annotated[int, int_rule(ge=0)] | None = None
    type: Literal["image_asset_pointer"] = "image_asset_pointer"

    wire_omit: ClassVar[frozenset[str]] = frozenset({"type"})

    @property
    def length(self) -> int:
        if self.expected_tokens is None:
            raise ValueError(
                "the token length of an image asset pointer is unknown: set expected_tokens"
            )
        return self.expected_tokens


def _chunk_tag(value: Any) -> str | None:
    """``type`` when present, else by keys (server rule 2: 0.16.1 never sends ``type``)."""
    if isinstance(value, dict):
        kind = value.get("type")
        if isinstance(kind, str):
            return kind
        if "tokens" in value:
            return "encoded_text"
        if "location" in value:
            return "image_asset_pointer"
        if "data" in value:
            return "image"
        return None
    kind = getattr(value, "type", None)
    return kind if isinstance(kind, str) else None


ModelInputChunk = Annotated[
    Union[  # noqa: UP007 - pydantic tagged union
        Annotated[EncodedTextChunk, Tag("encoded_text")],
        Annotated[ImageChunk, Tag("image")],
        Annotated[ImageAssetPointerChunk, Tag("image_asset_pointer")],
    ],
    Discriminator(
        _chunk_tag,
        custom_error_type="invalid_chunk",
        custom_error_message=(
            "a model input chunk needs 'tokens' (encoded_text), 'data' (image) or "
            "'location' (image_asset_pointer), or a known 'type'"
        ),
    ),
]


class ModelInput(WireModel):
    """``{"chunks": [...]}``: the token sequence is the concatenation of the chunks.

    Builders return new objects; a ModelInput is never changed in place.
    """

    chunks: list[ModelInputChunk] = Field(default_factory=list)

    @classmethod
    def empty(cls) -> ModelInput:
        return cls(chunks=[])

    @classmethod
    def from_ints(cls, tokens: Iterable[int]) -> ModelInput:
        """One text chunk holding ``tokens`` (a list, any iterable of ints, or a 1-D integer
        numpy array, which is checked and kept as a whole)."""
        chunk: EncodedTextChunk
        if _is_numpy(tokens):
            arr = _int_array_tokens(tokens)
            if arr is not None:
                chunk = EncodedTextChunk._lazy(arr, {"type": "encoded_text"}, ("tokens",))
            else:  # numpy scalars, other dtypes: checked one by one, the bad one named
                chunk = EncodedTextChunk(tokens=cast(Any, tokens))
        else:
            chunk = EncodedTextChunk._checked(list(tokens))
        # The chunk is checked; a ModelInput of one such chunk has nothing left to check.
        return new_model(cls, {"chunks": [chunk]}, {"chunks"})

    def to_ints(self) -> list[int]:
        """All tokens; raises ValueError if an image chunk is present."""
        out: list[int] = []
        for i, chunk in enumerate(self.chunks):
            if not isinstance(chunk, EncodedTextChunk):
                raise ValueError(
                    f"chunks[{i}] is an {chunk.type} chunk: to_ints() only works on "
                    "text-only inputs"
                )
            out.extend(chunk.tokens)
        return out

    @property
    def length(self) -> int:
        """Total number of tokens (image chunks count their ``expected_tokens``)."""
        return sum(chunk.length for chunk in self.chunks)

    def append(self, chunk: EncodedTextChunk | ImageChunk | ImageAssetPointerChunk) -> ModelInput:
        """A new ModelInput with ``chunk`` added at the end."""
        return ModelInput(chunks=[*self.chunks, chunk])

    def append_int(self, token: int) -> ModelInput:
        """A new ModelInput with ``token`` appended (extends a trailing text chunk)."""
        if self.chunks and isinstance(self.chunks[-1], EncodedTextChunk):
            last = self.chunks[-1]
            return ModelInput(
                chunks=[*self.chunks[:-1], EncodedTextChunk(tokens=[*last.tokens, token])]
            )
        return self.append(EncodedTextChunk(tokens=[token]))

    def extend_ints(self, tokens: Sequence[int]) -> ModelInput:
        """A new ModelInput with ``tokens`` appended (extends a trailing text chunk)."""
        if self.chunks and isinstance(self.chunks[-1], EncodedTextChunk):
            last = self.chunks[-1]
            return ModelInput(
                chunks=[*self.chunks[:-1], EncodedTextChunk(tokens=[*last.tokens, *tokens])]
            )
        return self.append(EncodedTextChunk(tokens=list(tokens)))
