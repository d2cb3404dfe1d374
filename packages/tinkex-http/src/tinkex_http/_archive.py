"""Checkpoint archive download and safe extraction (tinkex-features.md §10, protocol.md §2.11).

* :func:`resolve_archive_url` -- ``GET .../checkpoints/{kind}/{name}/archive`` without
  following redirects: a 3xx ``Location`` (or a 200 ``{"url", "expires"}``) is the signed
  download URL; 503 ("still being built") is retried after ``retry_delay`` (30 s), at most
  ``max_attempts`` (6) calls in total.
* :func:`download_archive` -- streams a URL to a file in fixed-size chunks (O(1) memory),
  calling ``progress(done_bytes, total_bytes | None)`` after each chunk; ``max_bytes`` caps it.
* :func:`extract_archive_safely` -- extracts a tar (plain or compressed) into a fresh temporary
  directory next to the destination and renames it into place only when every member passed:
  absolute names, ``..`` components, links resolving outside the destination, device files and
  FIFOs, and archives over ``max_total_bytes`` (sum of member sizes) or ``max_members`` raise
  :class:`UnsafeArchiveError`; the destination is then left untouched.
* :func:`download_checkpoint_archive` -- the whole flow for a ``tinker://`` path.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tinkex_http._client import HTTPClient
from tinkex_types import (
    APIResponseValidationError,
    APIStatusError,
    TinkexError,
    TinkexValidationError,
)

__all__ = [
    "DEFAULT_MAX_ARCHIVE_BYTES",
    "ArchiveTooLargeError",
    "ArchiveURL",
    "UnsafeArchiveError",
    "archive_destination",
    "download_archive",
    "download_checkpoint_archive",
    "extract_archive_safely",
    "parse_checkpoint_tinker_path",
    "resolve_archive_url",
]

#: Default limit for a checkpoint archive (download size and extracted size): 32 GiB.
DEFAULT_MAX_ARCHIVE_BYTES = 32 * 1024**3
DEFAULT_MAX_MEMBERS = 100_000
CHUNK_SIZE = 64 * 1024
_KINDS = ("weights", "sampler_weights")

Progress = Callable[[int, int | None], Any]


class UnsafeArchiveError(TinkexError):
    """An archive was refused (unsafe member, wrong format) or could not be extracted."""


class ArchiveTooLargeError(UnsafeArchiveError):
    """An archive (or its download) is larger than the configured limit."""


@dataclass(frozen=True, slots=True)
class ArchiveURL:
    """A signed download URL and when it expires (``datetime`` when readable, else raw)."""

    url: str
    expires: dt.datetime | str | None = None


def parse_checkpoint_tinker_path(path: str) -> tuple[str, str, str]:
    """``tinker://<run>/<kind>/<name>`` → ``(run, kind, name)``; raises a validation error."""
    prefix = "tinker://"
    if not isinstance(path, str) or not path.startswith(prefix):
        raise TinkexValidationError(
            "tinker_path",
            f"{path!r} does not start with {prefix!r}",
            "use tinker://<run>/<kind>/<name>",
        )
    parts = path[len(prefix) :].split("/")
    if len(parts) != 3 or not all(parts):
        raise TinkexValidationError(
            "tinker_path",
            f"{path!r} must have exactly three non-empty parts after tinker://",
            "use tinker://<run>/<kind>/<name>",
        )
    run, kind, name = parts
    if kind not in _KINDS:
        raise TinkexValidationError(
            "tinker_path", f"unknown checkpoint kind {kind!r}", "use 'weights' or 'sampler_weights'"
        )
    return run, kind, name


def archive_destination(tinker_path: str, output_dir: str | os.PathLike[str] = ".") -> Path:
    """``output_dir / "<run>_<kind>_<name>"`` for a ``tinker://`` path."""
    run, kind, name = parse_checkpoint_tinker_path(tinker_path)
    flat = f"{run}_{kind}_{name}"
    if flat in (".", "..") or "\x00" in flat:
        raise TinkexValidationError(
            "tinker_path", f"{tinker_path!r} is not a usable directory name"
        )
    return Path(output_dir) / flat


def _parse_expires(raw: Any) -> dt.datetime | str | None:
    if raw is None or isinstance(raw, dt.datetime):
        return raw
    text = str(raw).strip()
    with contextlib.suppress(ValueError):
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    with contextlib.suppress(TypeError, ValueError, IndexError):
        return email.utils.parsedate_to_datetime(text)
    return text


async def resolve_archive_url(
    http: HTTPClient,
    tinker_path: str,
    *,
    max_attempts: int = 6,
    retry_delay: float = 30.0,
) -> ArchiveURL:
    """Ask the service for the signed archive URL of a checkpoint (see module docstring)."""
    run, kind, name = parse_checkpoint_tinker_path(tinker_path)
    path = f"/api/v1/training_runs/{run}/checkpoints/{kind}/{name}/archive"
    attempt = 0
    while True:
        attempt += 1
        try:
            body = await http.get(
                path, max_retries=0, headers={"accept": "application/json, application/gzip"}
            )
        except APIStatusError as exc:
            if exc.status_code == 503 and attempt < max_attempts:
                await http.sleep(retry_delay)
                continue
            raise
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url:
            raise APIResponseValidationError(
                f"archive request for {tinker_path} returned no download URL", body=body
            )
        return ArchiveURL(url=url, expires=_parse_expires(body.get("expires")))


async def download_archive(
    http: HTTPClient,
    url: str,
    dest_file: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    max_bytes: int | None = DEFAULT_MAX_ARCHIVE_BYTES,
    chunk_size: int = CHUNK_SIZE,
    timeout: float | None = None,  # noqa: ASYNC109 - per-request httpx timeout, not a deadline
) -> int:
    """Stream ``url`` into ``dest_file`` (created/truncated); returns the byte count.

    Memory stays at about one chunk. A body over ``max_bytes`` raises
    :class:`ArchiveTooLargeError` and the partial file is removed.
    """
    target = Path(dest_file)
    done = 0
    try:
        async with http.download(url, timeout=timeout) as response:
            total = response.content_length
            if max_bytes is not None and total is not None and total > max_bytes:
                raise ArchiveTooLargeError(
                    f"archive is {total} bytes, over the {max_bytes}-byte limit"
                )
            # Plain blocking writes of one chunk each: short, and keep memory at O(chunk).
            with open(target, "wb") as fh:  # noqa: ASYNC230
                async for chunk in response.iter_bytes(chunk_size):
                    done += len(chunk)
                    if max_bytes is not None and done > max_bytes:
                        raise ArchiveTooLargeError(
                            f"archive download exceeded the {max_bytes}-byte limit"
                        )
                    fh.write(chunk)
                    if progress is not None:
                        progress(done, total)
    except BaseException:
        with contextlib.suppress(OSError):
            target.unlink()  # noqa: ASYNC240
        raise
    return done


def _inside(root: str, path: str) -> bool:
    try:
        return os.path.commonpath([root, path]) == root
    except ValueError:
        return False


def _member_parts(name: str, what: str) -> list[str]:
    if not name or "\x00" in name:
        raise UnsafeArchiveError(f"{what} has an empty or invalid name")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise UnsafeArchiveError(f"{what} {name!r} has an absolute path")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{what} {name!r} contains a '..' component")
    return parts


def _copy_member(src: IO[bytes], dst: Path, size: int, mode: int) -> None:
    flags = (
        os.O_WRONLY
        | os.O_CREAT
        | os.O_EXCL
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_BINARY", 0)
    )
    fd = os.open(dst, flags, (mode & 0o755) | 0o600)
    with os.fdopen(fd, "wb") as out:
        remaining = size
        while remaining > 0:
            block = src.read(min(CHUNK_SIZE, remaining))
            if not block:
                raise UnsafeArchiveError(f"archive member {dst.name!r} is truncated")
            out.write(block)
            remaining -= len(block)


def _place_link(
    member: tarfile.TarInfo, target: Path, root: Path, real_root: str, links: list[Path]
) -> None:
    """Create a symlink or hard link member, refusing any that leaves ``root``."""
    if member.issym():
        link = member.linkname
        if not link or os.path.isabs(link) or re.match(r"^[A-Za-z]:", link):
            raise UnsafeArchiveError(f"symlink {member.name!r} points to an absolute path {link!r}")
        lexical = os.path.normpath(os.path.join(os.path.dirname(target), link))
        if not _inside(os.path.normpath(root), lexical):
            raise UnsafeArchiveError(
                f"symlink {member.name!r} -> {link!r} points outside the destination"
            )
        os.symlink(link, target)
        if not _inside(real_root, os.path.realpath(target)):
            raise UnsafeArchiveError(
                f"symlink {member.name!r} -> {link!r} resolves outside the destination"
            )
        links.append(target)
        return
    src_parts = _member_parts(member.linkname, f"hardlink {member.name!r} target")
    source = root.joinpath(*src_parts)
    real_source = os.path.realpath(source)
    if not src_parts or not _inside(real_root, real_source):
        raise UnsafeArchiveError(
            f"hardlink {member.name!r} -> {member.linkname!r} points outside the destination"
        )
    if source.is_symlink() or not os.path.isfile(real_source):
        raise UnsafeArchiveError(
            f"hardlink {member.name!r} -> {member.linkname!r} has no regular file target"
        )
    os.link(real_source, target)


def _place(
    tf: tarfile.TarFile,
    member: tarfile.TarInfo,
    parts: list[str],
    root: Path,
    real_root: str,
    links: list[Path],
) -> None:
    """Write one checked member under ``root`` (never through or over a link)."""
    target = root.joinpath(*parts)
    if not _inside(real_root, os.path.realpath(target.parent)):
        raise UnsafeArchiveError(f"archive member {member.name!r} escapes the destination")
    if target.is_symlink():
        raise UnsafeArchiveError(f"archive member {member.name!r} would overwrite a link")
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        if not _inside(real_root, os.path.realpath(target)):
            raise UnsafeArchiveError(f"directory {member.name!r} escapes the destination")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if not _inside(real_root, os.path.realpath(target.parent)):
        raise UnsafeArchiveError(f"archive member {member.name!r} escapes the destination")
    if target.exists():
        if target.is_dir():
            raise UnsafeArchiveError(f"archive member {member.name!r} replaces a directory")
        target.unlink()
    if member.issym() or member.islnk():
        _place_link(member, target, root, real_root, links)
        return
    src = tf.extractfile(member)
    if src is None:
        raise UnsafeArchiveError(f"archive member {member.name!r} cannot be read")
    with src:
        _copy_member(src, target, member.size, member.mode)


def _check_member(member: tarfile.TarInfo) -> list[str]:
    """The member's path parts; refuses device files, FIFOs and unknown types."""
    parts = _member_parts(member.name, "archive member")
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise UnsafeArchiveError(f"archive member {member.name!r} is a device file or FIFO")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchiveError(f"archive member {member.name!r} has an unsupported type")
    return parts


def _extract_into(
    archive: Path, root: Path, *, max_total_bytes: int | None, max_members: int | None
) -> None:
    real_root = os.path.realpath(root)
    total = 0
    count = 0
    links: list[Path] = []
    try:
        tf = tarfile.open(archive, mode="r:*")  # noqa: SIM115 - closed by the `with` below
    except (tarfile.TarError, OSError) as exc:
        raise UnsafeArchiveError(f"{archive.name} is not a readable tar archive: {exc}") from None
    with tf:
        while True:
            try:
                member = tf.next()
            except tarfile.TarError as exc:
                raise UnsafeArchiveError(f"corrupt tar archive: {exc}") from None
            if member is None:
                break
            count += 1
            if max_members is not None and count > max_members:
                raise ArchiveTooLargeError(f"archive has more than {max_members} members")
            parts = _check_member(member)
            if member.isfile():
                total += member.size
                if max_total_bytes is not None and total > max_total_bytes:
                    raise ArchiveTooLargeError(
                        f"archive content exceeds the {max_total_bytes}-byte limit"
                    )
            if parts:  # no parts: "./" itself
                _place(tf, member, parts, root, real_root, links)
    for link_path in links:  # a later link may have changed what an earlier one resolves to
        if not _inside(real_root, os.path.realpath(link_path)):
            raise UnsafeArchiveError(f"symlink {link_path.name!r} resolves outside the destination")


def extract_archive_safely(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    max_total_bytes: int | None = DEFAULT_MAX_ARCHIVE_BYTES,
    max_members: int | None = DEFAULT_MAX_MEMBERS,
) -> Path:
    """Extract ``archive`` into the directory ``dest`` atomically (see module docstring).

    ``dest`` must not exist unless ``overwrite``; on any failure it is left exactly as it
    was and the temporary directory is removed. Returns ``dest``.
    """
    archive_path = Path(archive)
    dest_path = Path(dest)
    if not archive_path.is_file():
        raise TinkexValidationError("archive", f"no such file: {str(archive_path)!r}")
    if (dest_path.exists() or dest_path.is_symlink()) and not overwrite:
        raise TinkexValidationError(
            "dest", f"{str(dest_path)!r} already exists", "pass overwrite=True (CLI: --force)"
        )
    dest_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest_path.name}.partial-", dir=dest_path.parent))
    try:
        _extract_into(archive_path, tmp, max_total_bytes=max_total_bytes, max_members=max_members)
        if dest_path.exists() or dest_path.is_symlink():
            backup = Path(tempfile.mkdtemp(prefix=f".{dest_path.name}.old-", dir=dest_path.parent))
            backup.rmdir()
            dest_path.rename(backup)
            try:
                tmp.rename(dest_path)
            except BaseException:
                backup.rename(dest_path)
                raise
            if backup.is_dir() and not backup.is_symlink():
                shutil.rmtree(backup, ignore_errors=True)
            else:
                backup.unlink()
        else:
            tmp.rename(dest_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest_path


async def download_checkpoint_archive(
    http: HTTPClient,
    tinker_path: str,
    output_dir: str | os.PathLike[str] = ".",
    *,
    force: bool = False,
    progress: Progress | None = None,
    max_bytes: int | None = DEFAULT_MAX_ARCHIVE_BYTES,
    max_attempts: int = 6,
    retry_delay: float = 30.0,
) -> Path:
    """Download and safely extract a checkpoint into ``output_dir/<run>_<kind>_<name>``.

    Refuses an existing destination unless ``force``; the temporary archive (next to the
    destination) is always removed. Returns the destination directory.
    """
    dest = archive_destination(tinker_path, output_dir)
    if (dest.exists() or dest.is_symlink()) and not force:
        raise TinkexValidationError(
            "output_dir", f"{str(dest)!r} already exists", "pass force=True (CLI: --force)"
        )
    target = await resolve_archive_url(
        http, tinker_path, max_attempts=max_attempts, retry_delay=retry_delay
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tinkex_checkpoint_", suffix=".tar", dir=dest.parent)
    os.close(fd)
    tmp_file = Path(tmp_name)
    try:
        await download_archive(http, target.url, tmp_file, progress=progress, max_bytes=max_bytes)
        return await asyncio.to_thread(
            extract_archive_safely,
            tmp_file,
            dest,
            overwrite=force,
            max_total_bytes=max_bytes,
        )
    finally:
        with contextlib.suppress(OSError):
            tmp_file.unlink()  # noqa: ASYNC240
