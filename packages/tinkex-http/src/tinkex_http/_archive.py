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
  extraction runs in a worker thread on the chunks as they arrive (no temporary archive
  file, :mod:`tinkex_http._growing`), so the two overlap; without a ``Content-Length`` the
  archive is first written to a temporary file next to the destination, then extracted.
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
from tinkex_http._growing import ChunkPipe, PipeReader, write_all
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
    the cost of a copy each) and written as they are, in writes of at most 256 KiB
    (cheaper for the kernel than larger ones), so memory stays at about one chunk. A body
    over ``max_bytes`` raises :class:`ArchiveTooLargeError` and the partial file is
    removed.
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
) -> int:
    """:func:`download_archive`."""
    done = 0
    try:
        async with http.download(url, timeout=timeout) as response:
            total = response.content_length
            _check_announced(total, max_bytes)
            # Plain blocking writes: short (page cache), and memory stays at O(chunk).
            with open(target, "wb", buffering=0) as fh:  # noqa: ASYNC230
                async for chunk in response.iter_bytes(chunk_size):
                    done += len(chunk)
                    _check_received(done, max_bytes)
                    write_all(fh.fileno(), memoryview(chunk))
                    if progress is not None:
                        progress(done, total)
    except BaseException:
        with contextlib.suppress(OSError):
            target.unlink()  # noqa: ASYNC240
        raise
    return done


def _check_announced(total: int | None, max_bytes: int | None) -> None:
    if max_bytes is not None and total is not None and total > max_bytes:
        raise ArchiveTooLargeError(f"archive is {total} bytes, over the {max_bytes}-byte limit")


def _check_received(done: int, max_bytes: int | None) -> None:
    if max_bytes is not None and done > max_bytes:
        raise ArchiveTooLargeError(f"archive download exceeded the {max_bytes}-byte limit")


async def _feed(
    http: HTTPClient, url: str, pipe: ChunkPipe, progress: Progress | None, max_bytes: int | None
) -> None:
    """Download ``url`` into ``pipe`` (the extraction thread reads it meanwhile)."""
    try:
        async with http.download(url) as response:
            total = response.content_length
            _check_announced(total, max_bytes)
            pipe.start(total)
            done = 0
            async for chunk in response.iter_bytes():
                done += len(chunk)
                _check_received(done, max_bytes)
                if pipe.abandoned:
                    raise _Abandoned
                await pipe.put(chunk)
                if progress is not None:
                    progress(done, total)
    except BaseException:
        pipe.finish(failed=True)
        raise
    pipe.finish(failed=False)


def _spool(pipe: ChunkPipe, archive: Path) -> None:
    """Write the whole download to ``archive`` (no announced size to extract it by)."""
    with open(archive, "wb", buffering=0) as fh:
        while chunks := pipe.take():
            for chunk in chunks:
                write_all(fh.fileno(), memoryview(chunk))
                pipe.release(len(chunk))


def _extract_while_downloading(pipe: ChunkPipe, dest: Path, **limits: Any) -> Path:
    """The extraction thread: extracts the chunks as they arrive (after the download,
    from a temporary file next to ``dest``, when no ``Content-Length`` announced its size)."""
    try:
        size = pipe.wait_started()
        if size is not None:
            with PipeReader(pipe) as reader:
                return extract_file_safely(reader, size, dest, **limits)  # type: ignore[arg-type]
        fd, name = tempfile.mkstemp(prefix=".tinkex_checkpoint_", suffix=".tar", dir=dest.parent)
        os.close(fd)
        try:
            _spool(pipe, Path(name))
            return extract_archive_safely(name, dest, **limits)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
    except BaseException:
        pipe.abandon()
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

    Refuses an existing destination unless ``force``; a temporary archive (next to the
    destination, only when the size was not announced) is always removed. The content may expand to ``max_expansion`` times the
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
    pipe = ChunkPipe()
    extraction = asyncio.ensure_future(
        asyncio.to_thread(
            _extract_while_downloading,
            pipe,
            dest,
            overwrite=force,
            max_total_bytes=max_bytes,
            max_expansion=max_expansion,
        )
    )
    try:
        await _feed(http, target.url, pipe, progress, max_bytes)
    except _Abandoned:
        pass  # the extraction refused the archive: its error is raised below
    except BaseException:
        await asyncio.wait([extraction])  # it stops (DownloadEnded) and cleans up
        if not extraction.cancelled():
            extraction.exception()  # retrieved: the download's own error is raised
        raise
    return await extraction
