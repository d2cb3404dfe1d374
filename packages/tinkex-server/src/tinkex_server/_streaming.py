"""Streaming sampling: ``POST /api/v1/stream_sample`` answered with server-sent events.

The request is a :class:`~tinkex_types.SampleRequest`, checked exactly as ``asample``
checks it (a refusal is the usual 4xx, before any event). Its sample runs on the engine
worker (the same engine, the same seed rules: for a seed, the tokens are those ``sample``
gives) and each token is sent as it is chosen, one event per
:class:`~tinkex_types.SampleStreamChunk`:

* a token chunk per generated token: ``{"index", "token_id", "token", "logprob"}``
  (``index`` is the sample's number, ``token`` the token's text when the model has a
  tokenizer);
* a final chunk per sample once it ends: ``{"index", "finish_reason", "total_tokens"}``
  (``finish_reason`` is the ``stop_reason`` of ``sample``: ``stop`` or ``length``);
* on a failure after the stream began: ``event: error`` with ``{"error": "..."}``.

Concatenating the token ids and logprobs of each index gives ``sample``'s result.
When the client goes away (the response is closed), generation stops at the next token
and the engine is free for other work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from tinkex_server._sampling import ServerSampleJob
from tinkex_server._tokenizer import resolve_tokenizer
from tinkex_server._worker import EngineWorker
from tinkex_types import SampleStreamChunk, TinkexError

if TYPE_CHECKING:
    from tinkex_server._engine import Engine, SampleResult

__all__ = ["EVENT_STREAM", "sample_events"]

EVENT_STREAM = "text/event-stream"
_log = logging.getLogger("tinkex_server.streaming")
_DONE = object()


def _event(chunk: SampleStreamChunk, event: str | None = None) -> bytes:
    data = json.dumps(chunk.to_json_dict(), allow_nan=True, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def _failure(exc: BaseException) -> str:
    """What the client is told: a tinkex error's own message (it names the field), else the
    type only (no paths, no internals)."""
    if isinstance(exc, TinkexError):
        return str(exc)
    return f"internal server error: {type(exc).__name__}"


class _Relay:
    """``on_token`` of the engine (worker thread) → chunks on the event loop's queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any], name: str):
        self.loop = loop
        self.queue = queue
        self.cancelled = threading.Event()
        self.counts: dict[int, int] = {}
        self.tokenizer = resolve_tokenizer(name)

    def _text(self, token: int) -> str | None:
        if self.tokenizer is None:
            return None
        try:
            return self.tokenizer.decode([token])
        except Exception:  # a tokenizer without this id: the id is what counts
            return None

    def __call__(self, index: int, token: int, logprob: float, stop: str | None) -> bool:
        if self.cancelled.is_set():
            return False
        count = self.counts[index] = self.counts.get(index, 0) + 1
        chunks = [
            SampleStreamChunk(index=index, token_id=token, token=self._text(token), logprob=logprob)
        ]
        if stop is not None:
            chunks.append(SampleStreamChunk(index=index, finish_reason=stop, total_tokens=count))
        for chunk in chunks:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, chunk)
        return not self.cancelled.is_set()


async def sample_events(
    job: ServerSampleJob,
    worker: EngineWorker,
    on_done: Callable[[SampleResult], None] | None = None,
) -> AsyncIterator[bytes]:
    """The SSE body of one streamed sample (see the module docstring); ``on_done`` gets the
    result once the engine finished the sample (the usage accounting)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    relay = _Relay(loop, queue, job.sampler.base_model)

    def run(engine: Engine) -> SampleResult:
        job.prepare(engine)
        return engine.sample_stream(job.sample, relay)

    task = loop.create_task(
        worker.run(
            run,
            operation="server.engine_step",
            attributes={**job.attributes, "request_type": "SampleStream"},
            carrier=job.carrier,
        )
    )

    def finished(t: asyncio.Task[Any]) -> None:
        exc = None if t.cancelled() else t.exception()
        if on_done is not None and not t.cancelled() and exc is None:
            try:
                on_done(t.result())
            except Exception:
                _log.exception("stream_sample: recording its usage failed")
        queue.put_nowait(exc if exc is not None else _DONE)

    task.add_done_callback(finished)
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                if not isinstance(item, TinkexError):
                    _log.error("stream_sample failed", exc_info=item)
                yield _event(SampleStreamChunk(error=_failure(item)), "error")
                return
            yield _event(item)
    finally:
        # Normal end, a client that went away (the response task is cancelled), or an
        # error: the engine stops at its next token either way.
        relay.cancelled.set()
