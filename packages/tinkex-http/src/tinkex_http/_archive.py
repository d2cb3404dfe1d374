"""Checkpoint archive download and safe extraction (tinkex-features.md §10, protocol.md §2.11).

* :func:`resolve_archive_url` -- ``GET .../checkpoints/{kind}/{name}/archive`` without
  following redirects: a 3xx ``Location`` (or a 200 ``{"url", "expires"}``) is the signed
  download URL; 503 ("still being built") is retried after ``retry_delay`` (30 s), at most
  ``max_attempts`` (6) calls in total.
* :func:`download_archive` -- streams a URL to a file chunk by chunk as the socket delivers
  them (O(1) memory: one chunk plus a 1 MiB write buffer), calling
  ``progress(done_bytes, total_bytes | None)`` after each chunk; ``max_bytes`` caps it.
* :func:`extract_archive_safely` (:mod:`tinkex_http._extract`) -- extracts into a temporary
  directory renamed into place only when every member passed the safety checks and the
  content matched its SHA-256 manifest; every refusal is an :class:`UnsafeArchiveError`
  with a ``reason``; the destination is then left untouched.
* :func:`download_checkpoint_archive` -- the whole flow for a ``tinker://`` path; the
  extraction runs in a worker thread while the archive downloads (reading each byte once
  it is on disk, :mod:`tinkex_http._growing`), so the two overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinkex_http._client import HTTPClient
from tinkex_http._extract import extract_archive_safely, extract_file_safely
from tinkex_http._extract_checks import (
    DEFAULT_MAX_ARCHIVE_BYTES,
    DEFAULT_MAX_EXPANSION,
    ArchiveTooLargeError,
    UnsafeArchiveError,
)
from tinkex_http._growing import Growing, GrowingReader
from tinkex_types import (
    APIResponseValidationError,
    APIStatusError,
    TinkexValidationError,
)

__all__ = [
    "DEFAULT_MAX_ARCHIVE_BYTES",
    "DEFAULT_MAX_EXPANSION",
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

#: Bytes buffered before each write of a download to its file (fewer, larger writes).
WRITE_BUFFER = 1024 * 1024
_KINDS = ("weights", "sampler_weights")

Progress = Callable[[int, int | None], Any]


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
    chunk_size: int | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 - per-request httpx timeout, not a deadline
) -> int:
    """Stream ``url`` into ``dest_file`` (created/truncated); returns the byte count.

    Chunks are taken as the connection delivers them (``chunk_size`` re-slices them, at
    the cost of a copy each) and written through a :data:`WRITE_BUFFER` buffer, so memory
    stays at about one chunk plus that buffer. A body over ``max_bytes`` raises
    :class:`ArchiveTooLargeError` and the partial file is removed.
    """
    return await _fetch(http, url, Path(dest_file), progress, max_bytes, chunk_size, timeout)


class _Abandoned(Exception):
    """The extraction reading the download gave up (its own error is the one raised)."""


async def _fetch(
    http: HTTPClient,
    url: str,
    target: Path,
    progress: Progress | None,
    max_bytes: int | None,
    chunk_size: int | None,
    timeout: float | None,  # noqa: ASYNC109 - per-request httpx timeout, not a deadline
    growing: Growing | None = None,
) -> int:
    """:func:`download_archive`; with ``growing``, every chunk is written at once (no
    buffer) and announced to the extraction reading the file meanwhile."""
    done = 0
    try:
        async with http.download(url, timeout=timeout) as response:
            total = response.content_length
            if max_bytes is not None and total is not None and total > max_bytes:
                raise ArchiveTooLargeError(
                    f"archive is {total} bytes, over the {max_bytes}-byte limit"
                )
            if growing is not None:
                growing.start(total)
            # Plain blocking writes: short, and keep memory at O(chunk + buffer).
            buffering = WRITE_BUFFER if growing is None else 0
            with open(target, "wb", buffering=buffering) as fh:  # noqa: ASYNC230
                async for chunk in response.iter_bytes(chunk_size):
                    done += len(chunk)
                    if max_bytes is not None and done > max_bytes:
                        raise ArchiveTooLargeError(
                            f"archive download exceeded the {max_bytes}-byte limit"
                        )
                    if growing is not None:
                        if growing.abandoned:
                            raise _Abandoned
                        _write_all(fh, chunk)
                        growing.wrote(len(chunk))
                    else:
                        fh.write(chunk)
                    if progress is not None:
                        progress(done, total)
    except BaseException:
        if growing is not None:
            growing.finish(failed=True)
        with contextlib.suppress(OSError):
            target.unlink()  # noqa: ASYNC240
        raise
    if growing is not None:
        growing.finish(failed=False)
    return done


def _write_all(fh: Any, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:  # an unbuffered write may take part of the chunk
        view = view[fh.write(view) :]


def _extract_while_downloading(growing: Growing, archive: Path, dest: Path, **limits: Any) -> Path:
    """The extraction thread: reads the archive as it arrives (sequentially, after the
    download, when no ``Content-Length`` announced its size)."""
    try:
        size = growing.wait_started()
        if size is None:
            growing.wait_finished()
            return extract_archive_safely(archive, dest, **limits)
        with GrowingReader(archive, growing, size) as reader:
            return extract_file_safely(reader, size, dest, **limits)  # type: ignore[arg-type]
    except BaseException:
        growing.abandoned = True
        raise


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
    max_expansion: float | None = DEFAULT_MAX_EXPANSION,
) -> Path:
    """Download and safely extract a checkpoint into ``output_dir/<run>_<kind>_<name>``.

    Refuses an existing destination unless ``force``; the temporary archive (next to the
    destination) is always removed. The content may expand to ``max_expansion`` times the
    downloaded bytes, never over ``max_bytes``; an unsafe, damaged or tampered archive
    raises :class:`UnsafeArchiveError` (nothing extracted is left). Returns the
    destination directory.
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
    growing = Growing()
    extraction = asyncio.ensure_future(
        asyncio.to_thread(
            _extract_while_downloading,
            growing,
            tmp_file,
            dest,
            overwrite=force,
            max_total_bytes=max_bytes,
            max_expansion=max_expansion,
        )
    )
    try:
        try:
            await _fetch(http, target.url, tmp_file, progress, max_bytes, None, None, growing)
        except _Abandoned:
            pass  # the extraction refused the archive: its error is raised below
        except BaseException:
            await asyncio.wait([extraction])  # it stops (DownloadEnded) and cleans up
            if not extraction.cancelled():
                extraction.exception()  # retrieved: the download's own error is raised
            raise
        return await extraction
    finally:
        with contextlib.suppress(OSError):
            tmp_file.unlink()  # noqa: ASYNC240
