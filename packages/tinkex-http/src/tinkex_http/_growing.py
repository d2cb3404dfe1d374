"""A checkpoint archive read while it is still being downloaded.

:func:`tinkex_http.download_checkpoint_archive` writes the archive to a temporary file on
the event loop and extracts it in a worker thread at the same time: :class:`Growing` is
the state the two share (bytes written so far, the size announced by ``Content-Length``,
the end of the download or its failure, the extraction giving up), :class:`GrowingReader`
the seekable file the extraction reads, whose reads wait until the bytes they ask for are
on disk. The extraction sees exactly the bytes of the finished file, so its checks are
unchanged; only the waiting for the whole download is gone.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

__all__ = ["DownloadEnded", "Growing", "GrowingReader"]


class DownloadEnded(Exception):
    """Raised in the extraction when the download failed (its error is the one reported)."""


class Growing:
    """What the download (event loop) and the extraction (a worker thread) share."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._written = 0
        self._want = 0
        self._total: int | None = None
        self._started = False
        self._finished = False
        self._failed = False
        #: Set by the extraction when it gave up: the download stops at its next chunk.
        self.abandoned = False

    # -- the download -------------------------------------------------------------------
    def start(self, total: int | None) -> None:
        """The answer's headers arrived: ``total`` is its ``Content-Length`` (or ``None``)."""
        with self._cond:
            self._total, self._started = total, True
            self._cond.notify_all()

    def wrote(self, count: int) -> None:
        """``count`` more bytes are in the file (a waiting reader is woken when its bytes
        are all there)."""
        with self._cond:
            self._written += count
            if self._written >= self._want:
                self._cond.notify_all()

    def finish(self, failed: bool) -> None:
        """The download ended (``failed``: it did not complete)."""
        with self._cond:
            self._started = self._finished = True
            self._failed = failed
            self._cond.notify_all()

    # -- the extraction -----------------------------------------------------------------
    def wait_started(self) -> int | None:
        """The announced size, once the headers arrived (``None``: not announced)."""
        with self._cond:
            while not self._started:
                self._cond.wait()
            if self._failed:
                raise DownloadEnded
            return self._total

    def wait_finished(self) -> None:
        with self._cond:
            while not self._finished:
                self._cond.wait()
            if self._failed:
                raise DownloadEnded

    def wait_for(self, end: int) -> None:
        """Until the first ``end`` bytes are written or the download ended."""
        with self._cond:
            while self._written < end and not self._finished:
                self._want = end
                self._cond.wait()
            if self._failed:
                raise DownloadEnded


class GrowingReader(io.RawIOBase):
    """The archive file of ``size`` announced bytes, readable while it is written: a read
    waits for its bytes (or the end of the download, then reads what is there)."""

    def __init__(self, path: Path, growing: Growing, size: int) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._growing = growing
        self._size = size
        self._pos = 0

    def wait_for(self, end: int) -> None:
        self._growing.wait_for(min(end, self._size))

    def wait_finished(self) -> None:
        """Until the download ended; :class:`DownloadEnded` when it failed."""
        self._growing.wait_finished()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self._pos = offset
        elif whence == os.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = self._size + offset
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        self.wait_for(self._pos + len(view))
        got = os.preadv(self._fd, [view], self._pos)
        self._pos += got
        return got

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()
