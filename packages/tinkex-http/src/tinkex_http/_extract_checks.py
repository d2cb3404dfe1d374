"""The checks of safe archive extraction (issue 17, findings 4 and 5): the error type and
its reasons, member names, the byte budget of the decompressed stream, and a ``TarInfo``
that refuses what ``tarfile`` would otherwise accept silently (truncated or corrupt
headers taken for the end of the archive, sparse members, huge extended headers).

Every refusal is an :class:`UnsafeArchiveError` whose :attr:`~UnsafeArchiveError.reason`
is one of :data:`REASONS` and whose message says why in words.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import tarfile
import zlib
from typing import IO, Any, cast

from tinkex_types import TinkexError

__all__ = [
    "DEFAULT_MAX_ARCHIVE_BYTES",
    "DEFAULT_MAX_EXPANSION",
    "DEFAULT_MAX_MEMBERS",
    "EXPANSION_FLOOR",
    "MAX_HEADER_BYTES",
    "MAX_NAME_BYTES",
    "MAX_PATH_BYTES",
    "REASONS",
    "ArchiveTooLargeError",
    "BudgetReader",
    "SafeTarInfo",
    "UnsafeArchiveError",
    "extraction_limit",
    "member_parts",
    "open_decompressed",
]

#: Absolute cap of a checkpoint archive (download size and extracted size): 32 GiB.
DEFAULT_MAX_ARCHIVE_BYTES = 32 * 1024**3
#: Extracted bytes allowed per byte of archive (gzip of zeros reaches ~1000; a checkpoint
#: of float tensors stays near 1).
DEFAULT_MAX_EXPANSION = 64.0
#: Every archive may extract to this much whatever its size (small configs compress well).
EXPANSION_FLOOR = 1024 * 1024
DEFAULT_MAX_MEMBERS = 100_000
#: Longest path component (bytes, as most file systems allow) and whole member name.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024
#: Largest GNU long-name or pax extended header read into memory.
MAX_HEADER_BYTES = 64 * 1024

#: Why an archive was refused (``UnsafeArchiveError.reason``).
REASONS = frozenset(
    {
        "absolute-path",
        "corrupt",
        "device",
        "duplicate",
        "expansion",
        "fifo",
        "header-too-large",
        "integrity",
        "invalid-name",
        "link-escape",
        "name-too-long",
        "not-a-tar",
        "setuid",
        "sparse",
        "too-large",
        "too-many-members",
        "traversal",
        "truncated",
        "unsupported-type",
    }
)


class UnsafeArchiveError(TinkexError):
    """An archive was refused: :attr:`reason` (one of :data:`REASONS`) says which check
    failed, the message says why. Nothing of it is left on disk."""

    def __init__(self, message: str, *, reason: str = "corrupt") -> None:
        super().__init__(f"unsafe archive refused ({reason}): {message}")
        self.reason = reason
        self.problem = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.problem, self.reason))


def _rebuild(cls: type[UnsafeArchiveError], message: str, reason: str) -> UnsafeArchiveError:
    return cls(message, reason=reason)


class ArchiveTooLargeError(UnsafeArchiveError):
    """An archive (its download, its content, its expansion) is over a limit."""

    def __init__(self, message: str, *, reason: str = "too-large") -> None:
        super().__init__(message, reason=reason)


def extraction_limit(
    archive_bytes: int, max_total_bytes: int | None, max_expansion: float | None
) -> int | None:
    """Bytes an archive of ``archive_bytes`` may extract to: ``max_expansion`` times its
    size (at least :data:`EXPANSION_FLOOR`), never over ``max_total_bytes``."""
    limits: list[int] = []
    if max_expansion is not None:
        limits.append(max(EXPANSION_FLOOR, int(archive_bytes * max_expansion)))
    if max_total_bytes is not None:
        limits.append(max_total_bytes)
    return min(limits) if limits else None


def _check_length(name: str, what: str) -> None:
    raw = os.fsencode(name)
    if len(raw) > MAX_PATH_BYTES:
        raise UnsafeArchiveError(
            f"{what} name is {len(raw)} bytes long (limit {MAX_PATH_BYTES})",
            reason="name-too-long",
        )
    for part in raw.split(b"/"):
        if len(part) > MAX_NAME_BYTES:
            raise UnsafeArchiveError(
                f"{what} {name[:60]!r}... has a {len(part)}-byte path component "
                f"(limit {MAX_NAME_BYTES})",
                reason="name-too-long",
            )


def member_parts(name: str, what: str) -> tuple[str, ...]:
    """The path components of a member (or link target) name, after refusing empty,
    over-long, absolute and ``..`` names."""
    if not name or "\x00" in name:
        raise UnsafeArchiveError(f"{what} has an empty or invalid name", reason="invalid-name")
    norm = name.replace("\\", "/")
    _check_length(norm, what)
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise UnsafeArchiveError(f"{what} {name!r} has an absolute path", reason="absolute-path")
    parts = tuple(p for p in norm.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchiveError(f"{what} {name!r} contains a '..' component", reason="traversal")
    return parts


_DECOMPRESS_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)


class BudgetReader:
    """A read-only file over the (decompressed) archive stream that refuses to deliver
    more than ``budget`` bytes and turns decompression failures into refusals."""

    def __init__(self, inner: IO[bytes], budget: int | None) -> None:
        self._inner = inner
        self._budget = budget
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._inner.read(size)
        except EOFError:
            raise UnsafeArchiveError(
                "the compressed archive is truncated (its stream ends early)", reason="truncated"
            ) from None
        except _DECOMPRESS_ERRORS as exc:
            raise UnsafeArchiveError(
                f"the compressed archive is corrupt ({type(exc).__name__}: {exc})",
                reason="corrupt",
            ) from None
        self.consumed += len(data)
        if self._budget is not None and self.consumed > self._budget:
            raise ArchiveTooLargeError(
                f"the archive expands past {self._budget} bytes (limit relative to the "
                "downloaded size: a compression bomb?)",
                reason="expansion",
            )
        return data

    def close(self) -> None:
        self._inner.close()


def open_decompressed(raw: IO[bytes]) -> IO[bytes]:
    """``raw`` itself, or a decompressing reader over it (gzip, bzip2, xz by magic)."""
    head = getattr(raw, "head", None)  # a download read forward only: look, don't seek
    if head is not None:
        magic = head(6)
    else:
        magic = raw.read(6)
        raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if magic.startswith(b"BZh"):
        return cast(IO[bytes], bz2.BZ2File(raw, mode="rb"))
    if magic.startswith(b"\xfd7zXZ\x00"):
        return cast(IO[bytes], lzma.LZMAFile(raw, mode="rb"))
    return raw


_EXTENDED = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)


class SafeTarInfo(tarfile.TarInfo):
    """A ``TarInfo`` whose parsing refuses, instead of ``tarfile``'s silent end of the
    archive, a truncated or corrupt header after the first, and refuses GNU sparse
    members and extended headers over :data:`MAX_HEADER_BYTES` before reading them."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> SafeTarInfo:
        if len(buf) != tarfile.BLOCKSIZE:
            raise UnsafeArchiveError(
                "the archive is truncated (it ends without its end-of-archive blocks)",
                reason="truncated",
            )
        try:
            info = super().frombuf(buf, encoding, errors)
        except tarfile.HeaderError as exc:
            if type(exc).__name__ != "InvalidHeaderError":
                raise  # the end-of-archive block: tarfile's own business
            raise UnsafeArchiveError(
                f"the archive has an invalid tar header ({exc}): not a tar, or corrupt",
                reason="corrupt",
            ) from None
        return info

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise UnsafeArchiveError(
                f"archive member {self.name!r} is a sparse file", reason="sparse"
            )
        if self.type in _EXTENDED and self.size > MAX_HEADER_BYTES:
            raise UnsafeArchiveError(
                f"an extended header of {self.size} bytes (limit {MAX_HEADER_BYTES})",
                reason="header-too-large",
            )
        return super()._proc_member(tarfile_)  # type: ignore[misc]
