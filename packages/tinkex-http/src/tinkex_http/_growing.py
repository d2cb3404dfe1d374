"""A checkpoint archive extracted from the download's chunks as they arrive.

:func:`tinkex_http.download_checkpoint_archive` receives the archive on the event loop and
extracts it in a worker thread at the same time, without a temporary archive file: the
loop hands each chunk to a :class:`ChunkPipe` (in batches of at least :data:`HANDOFF`
bytes, so the thread hop is paid once per batch, not once per socket read), and the
extraction reads them through a :class:`PipeReader`, a forward-only file whose reads wait
for their bytes. Member data is written straight from the received chunks
(:meth:`PipeReader.views`: no copy into another buffer). The pipe holds at most
:data:`PIPE_LIMIT` bytes the extraction has not consumed yet: past it, the download waits
(memory stays flat whatever the speed of the disk).

The extraction sees exactly the bytes of the download, in order, so its checks are those
of a file on disk; only the waiting for the whole download and the second write and read
of a temporary archive are gone.

:class:`HashThread` takes a large member's SHA-256 in a thread of its own while the
extraction writes it (:func:`write_all`, in pieces of at most :data:`MAX_WRITE` bytes):
hashlib and ``os.write`` release the GIL, so on two cores receiving, writing and hashing
overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import threading
from collections import deque
from collections.abc import Iterator

__all__ = [
    "HANDOFF",
    "HASH_BACKLOG",
    "MAX_VIEW",
    "MAX_WRITE",
    "PIPE_LIMIT",
    "ChunkPipe",
    "DownloadEnded",
    "HashThread",
    "PipeReader",
    "write_all",
]

#: Bytes gathered on the event loop before they are handed to the extraction thread.
HANDOFF = 512 * 1024
#: Bytes handed over and not yet consumed by the extraction before the download waits.
PIPE_LIMIT = 4 * 1024 * 1024
#: Bytes waiting in a :class:`HashThread` before the writer waits for it.
HASH_BACKLOG = 2 * 1024 * 1024
#: Largest view of a chunk :meth:`PipeReader.views` gives.
MAX_VIEW = 1024 * 1024
#: Largest piece of a chunk written at once: a page-cache write of 512 KiB or more cost
#: ~4x the kernel CPU per byte of 64-256 KiB writes on ext4 (Linux 6.18, large folios:
#: 1.05-1.16 s against 0.23-0.29 s per GiB, measured).
MAX_WRITE = 256 * 1024


def write_all(fd: int, block: memoryview) -> None:
    """Write ``block`` to ``fd`` in pieces of at most :data:`MAX_WRITE` bytes."""
    while block:  # a write may take part of the piece
        block = block[os.write(fd, block[:MAX_WRITE]) :]


class DownloadEnded(Exception):
    """Raised in the extraction when the download failed (its error is the one reported)."""


class ChunkPipe:
    """The download's chunks, from the event loop (:meth:`put`) to the extraction thread
    (:meth:`take`), with the download's start, end or failure and the extraction giving
    up (:meth:`abandon`)."""

    def __init__(self, limit: int | None = None, handoff: int | None = None) -> None:
        self._cond = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._held = 0  # bytes handed over and not yet released by the extraction
        #: The most bytes handed over and not yet released at any time.
        self.peak = 0
        self._limit = PIPE_LIMIT if limit is None else limit
        self._handoff = HANDOFF if handoff is None else handoff
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._total: int | None = None
        self._started = False
        self._finished = False
        self._failed = False
        self._room: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Set by the extraction when it gave up: the download stops at its next chunk.
        self.abandoned = False

    # -- the download (event loop) ------------------------------------------------------
    def start(self, total: int | None) -> None:
        """The answer's headers arrived: ``total`` is its ``Content-Length`` (or ``None``)."""
        self._loop = asyncio.get_running_loop()
        with self._cond:
            self._total, self._started = total, True
            self._cond.notify_all()

    async def put(self, chunk: bytes) -> None:
        """Hand ``chunk`` over (batched); waits while the extraction is :data:`PIPE_LIMIT`
        bytes behind."""
        self._batch.append(chunk)
        self._batch_bytes += len(chunk)
        if self._batch_bytes < self._handoff:
            return
        room = self._flush()
        if room is not None:
            await room

    def _flush(self) -> asyncio.Future[None] | None:
        batch, size = self._batch, self._batch_bytes
        self._batch, self._batch_bytes = [], 0
        with self._cond:
            self._chunks.extend(batch)
            self._held += size
            self.peak = max(self.peak, self._held)
            self._cond.notify_all()
            if self._held < self._limit or self.abandoned or self._loop is None:
                return None
            self._room = self._loop.create_future()
            return self._room

    def finish(self, failed: bool) -> None:
        """The download ended (``failed``: it did not complete)."""
        if not failed:
            self._flush()  # the last batch (never waits: the extraction drains it)
        with self._cond:
            self._started = self._finished = True
            self._failed = failed
            self._cond.notify_all()

    # -- the extraction (worker thread) -------------------------------------------------
    def wait_started(self) -> int | None:
        """The announced size, once the headers arrived (``None``: not announced)."""
        with self._cond:
            while not self._started:
                self._cond.wait()
            if self._failed:
                raise DownloadEnded
            return self._total

    def take(self) -> list[bytes]:
        """Every chunk handed over and not taken yet, waiting for one; ``[]`` at the end
        of a complete download; :class:`DownloadEnded` when it failed."""
        with self._cond:
            while not self._chunks and not self._finished:
                self._cond.wait()
            if self._failed:
                raise DownloadEnded
            chunks = list(self._chunks)
            self._chunks.clear()
            return chunks

    def release(self, count: int) -> None:
        """The extraction is done with ``count`` more bytes (the download may go on)."""
        with self._cond:
            self._held -= count
            if self._room is None or self._held > self._limit // 2:
                return
            room, self._room = self._room, None
        self._wake(room)

    def abandon(self) -> None:
        """The extraction gave up: the download stops (and no longer waits for room)."""
        with self._cond:
            self.abandoned = True
            room, self._room = self._room, None
        if room is not None:
            self._wake(room)

    def _wake(self, room: asyncio.Future[None]) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self._loop.call_soon_threadsafe(_set_done, room)


def _set_done(room: asyncio.Future[None]) -> None:
    if not room.done():
        room.set_result(None)


class PipeReader(io.RawIOBase):
    """The download as a forward-only binary file (reads wait for their bytes).

    ``tarfile`` reads headers through :meth:`readinto` and seeks forward over padding;
    member data is taken with :meth:`views`; :meth:`head` shows the first bytes without
    consuming them (the compression magic). Seeking backwards is refused.
    """

    def __init__(self, pipe: ChunkPipe) -> None:
        super().__init__()
        self._pipe = pipe
        self._queue: deque[bytes] = deque()
        self._cur = b""
        self._off = 0  # read offset into _cur
        self._pos = 0  # stream position of _cur[_off]
        self._ended = False

    def _fill(self) -> bool:
        """Make ``_cur[_off:]`` non-empty; False at the end of the download."""
        while self._off >= len(self._cur):
            if self._cur:
                self._pipe.release(len(self._cur))
                self._cur, self._off = b"", 0
            if not self._queue:
                if self._ended:
                    return False
                got = self._pipe.take()
                if not got:
                    self._ended = True
                    return False
                self._queue.extend(got)
            self._cur = self._queue.popleft()
        return True

    def head(self, count: int) -> bytes:
        """The next ``count`` bytes (fewer at the end of the download), not consumed."""
        if not self._fill():
            return b""
        while len(self._cur) - self._off < count:  # rare: tiny first chunks
            if not self._queue:
                got = [] if self._ended else self._pipe.take()
                if not got:
                    self._ended = True
                    break
                self._queue.extend(got)
            self._pipe.release(self._off)  # the consumed part is dropped
            self._cur, self._off = self._cur[self._off :] + self._queue.popleft(), 0
        return self._cur[self._off : self._off + count]

    def views(self, count: int) -> Iterator[memoryview]:
        """The next ``count`` bytes as views of the received chunks (at most
        :data:`MAX_VIEW` bytes each; fewer bytes in all when the download ends early).
        A view keeps its chunk alive; the pipe counts it as consumed once the next view
        is asked for."""
        left = count
        while left > 0 and self._fill():
            take = min(left, len(self._cur) - self._off, MAX_VIEW)
            view = memoryview(self._cur)[self._off : self._off + take]
            self._off += take
            self._pos += take
            left -= take
            yield view

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        got = 0
        while got < len(view) and self._fill():
            take = min(len(view) - got, len(self._cur) - self._off)
            view[got : got + take] = self._cur[self._off : self._off + take]
            self._off += take
            got += take
        self._pos += got
        return got

    def skip(self, count: int) -> int:
        """Consume ``count`` bytes; returns how many there were."""
        return sum(len(v) for v in self.views(count))

    def drain(self) -> None:
        """Consume the rest of the download (after the end of the archive); raises
        :class:`DownloadEnded` when the download failed."""
        while self._fill():
            self.skip(len(self._cur) - self._off)

    def wait_finished(self) -> None:
        """Until the download ended; :class:`DownloadEnded` when it failed."""
        self.drain()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True  # forward only; tarfile checks it

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self._pos + offset
        if whence not in (os.SEEK_SET, os.SEEK_CUR) or target < self._pos:
            raise io.UnsupportedOperation("a download is read forward only")
        self.skip(target - self._pos)
        return self._pos

    def close(self) -> None:
        if not self.closed and self._cur:
            self._pipe.release(len(self._cur))
            self._cur = b""
        super().close()


class HashThread:
    """The SHA-256 of a file computed in a thread of its own, from views :meth:`feed` hands
    it (of immutable chunks), while the caller writes them: on two cores the hash and the
    write (hashlib and ``os.write`` both release the GIL) overlap. At most ``limit`` bytes
    wait to be hashed; :meth:`feed` waits past it."""

    def __init__(self, limit: int | None = None) -> None:
        self._digest = hashlib.sha256()
        self._cond = threading.Condition()
        self._views: deque[memoryview] = deque()
        self._backlog = 0
        self._limit = HASH_BACKLOG if limit is None else limit
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tinkex-sha256", daemon=True)
        self._thread.start()

    def feed(self, view: memoryview) -> None:
        with self._cond:
            while self._backlog >= self._limit and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            self._views.append(view)
            self._backlog += len(view)
            if self._backlog >= self._limit // 4:  # wake the thread for a batch, not a view
                self._cond.notify_all()

    def _run(self) -> None:
        try:
            while views := self._next():
                for view in views:
                    self._digest.update(view)
                with self._cond:
                    self._backlog -= sum(len(v) for v in views)
                    self._cond.notify_all()
        except BaseException as exc:  # never leave the writer waiting
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def _next(self) -> list[memoryview]:
        """The views fed since the last call, waiting for some; ``[]`` once closed."""
        with self._cond:
            while not self._views and not self._closed:
                self._cond.wait()
            views = list(self._views)
            self._views.clear()
            return views

    def close(self) -> None:
        """Hash what was fed, then end the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def hexdigest(self) -> str:
        """The digest of everything fed (ends the thread)."""
        self.close()
        if self._error is not None:
            raise self._error
        return self._digest.hexdigest()
