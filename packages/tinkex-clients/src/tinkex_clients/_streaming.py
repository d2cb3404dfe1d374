"""Streaming sampling: ``SamplingClient.sample_stream`` / ``sample_stream_async``.

One stream is one ``POST /api/v1/stream_sample`` answered with server-sent events, each a
:class:`tinkex_types.SampleStreamChunk` (JSON ``data``): token chunks, then a final chunk
per sequence with its ``finish_reason`` (the stop reason). The request runs on the
ServiceClient's background loop as a *pump* task, inside the same admission layers as
``sample`` (the sampling dispatch slot and the per-sampler semaphore, held for the whole
stream) and with the sampling retry loop for *opening* the stream (a 429 or a connection
failure before the first event is retried; nothing is retried once a chunk was read). The
pump hands chunks to the consumer through a small bounded queue, so a slow reader slows the
server down instead of buffering without bound.

Closing the iterator (``break`` out of a ``for`` loop, ``close()``/``aclose()``, leaving its
``with`` block, cancelling the task that awaits it, or dropping it) cancels the pump, which
closes the HTTP response; the server sees the disconnect and stops generating.

Errors: an ``error`` event from the server, a stream that ends before its final chunk, or a
transport failure mid-stream raise :class:`SampleStreamError` (an ``APIError``) from the
iterator; a chunk that is not JSON raises ``APIResponseValidationError``. Refusals of the
request itself (400/404/...) raise the usual status errors from the first ``next()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pydantic

from tinkex_clients._usage import StreamTally, ledger_of
from tinkex_clients._validate import ClientClosedError
from tinkex_http import ByteEstimator, RetrySemaphore, retry_async
from tinkex_types import (
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    RateLimitError,
    SampledSequence,
    SampleRequest,
    SampleResponse,
    SampleStreamChunk,
    TinkexValidationError,
)

if TYPE_CHECKING:  # pragma: no cover
    from tinkex_clients._sampling import SamplingClient
    from tinkex_clients._session import Session
    from tinkex_http import StreamingResponse

__all__ = [
    "STREAM_SAMPLE_PATH",
    "AsyncSampleStream",
    "SampleStream",
    "SampleStreamError",
    "collect_sample_stream",
    "open_sample_stream",
]

#: The streaming route (a tinkex extension; the hosted Tinker service may not have it).
STREAM_SAMPLE_PATH = "/api/v1/stream_sample"
#: Chunks the pump reads ahead of the consumer before it stops reading the response.
QUEUE_SIZE = 64
#: Seconds a synchronous ``close()`` waits for the HTTP response to be closed.
CLOSE_WAIT = 10.0


class SampleStreamError(APIError):
    """A sample stream failed after it was opened: the server sent an ``error`` event, the
    connection broke, or the stream ended before its final chunk. ``chunks`` is how many
    chunks had arrived."""

    def __init__(self, message: str, *, chunks: int = 0, body: Any = None) -> None:
        super().__init__(message, body=body)
        self.chunks = chunks


@dataclass(frozen=True, slots=True)
class _End:
    """The last queue item: ``error`` is raised to the consumer, else the stream is over."""

    error: BaseException | None = None


_Emit = Callable[[SampleStreamChunk], Awaitable[None]]


# -- the producer (runs on the background loop) --------------------------------------------
async def _open(
    client: SamplingClient, stack: contextlib.AsyncExitStack, body: dict[str, Any], size: int
) -> StreamingResponse:
    """One attempt to open the stream (non-2xx raises before anything is read)."""
    dispatch = client.dispatch
    await dispatch.rate_limiter.wait_for_backoff()
    body = {**body, "seq_id": client._next_seq()}
    try:
        response = await stack.enter_async_context(
            client._session.http.stream(
                "POST", STREAM_SAMPLE_PATH, body=body, request_type="SampleStream"
            )
        )
    except RateLimitError:
        dispatch.set_backoff(size)
        raise
    dispatch.rate_limiter.clear_backoff()
    return response


def _parse(data: str, count: int) -> SampleStreamChunk:
    try:
        return SampleStreamChunk.model_validate(orjson.loads(data))
    except (orjson.JSONDecodeError, pydantic.ValidationError) as exc:
        raise APIResponseValidationError(
            f"sample stream event {count} is not a SampleStreamChunk: {str(exc)[:200]}",
            body=data[:500],
        ) from None


async def _relay(response: StreamingResponse, emit: _Emit, num_samples: int) -> None:
    """Decode the events of ``response`` and ``emit`` each chunk; raise on an ``error``
    event, a broken connection or a missing final chunk."""
    count = 0
    finished: set[int] = set()
    try:
        async for event in response.iter_events():
            if not event.data:
                continue
            chunk = _parse(event.data, count)
            if chunk.error is not None or event.event == "error":
                message = chunk.error or event.data
                raise SampleStreamError(
                    f"the server failed the sample stream after {count} chunks: {message}",
                    chunks=count,
                    body=event.data,
                )
            count += 1
            if chunk.finish_reason is not None:
                finished.add(chunk.index or 0)
            await emit(chunk)
    except httpx.TimeoutException as exc:
        raise APITimeoutError(
            f"the sample stream timed out after {count} chunks ({type(exc).__name__})"
        ) from None
    except httpx.TransportError as exc:
        raise SampleStreamError(
            f"the sample stream broke after {count} chunks: {type(exc).__name__}: {exc}",
            chunks=count,
        ) from None
    if len(finished) < num_samples:
        raise SampleStreamError(
            f"the sample stream ended after {count} chunks with {len(finished)} of its "
            f"{num_samples} final chunks",
            chunks=count,
        )


async def _produce(
    client: SamplingClient, request: SampleRequest, operation: str, emit: _Emit
) -> None:
    session = client._session
    size = ByteEstimator.model_input_bytes(request.prompt)
    body = request.to_json_dict()
    with session.span(
        operation,
        sampler_id=client.sampling_session_id,
        num_samples=request.num_samples,
        prompt_tokens=size // ByteEstimator.BYTES_PER_TOKEN,
    ):
        async with client.dispatch.slot(size):
            from tinkex_clients._sampling import MAX_CONCURRENT_SAMPLES_PER_SESSION

            key = ("sampler", client.sampling_session_id)
            async with (
                RetrySemaphore.hold(key, MAX_CONCURRENT_SAMPLES_PER_SESSION),
                contextlib.AsyncExitStack() as stack,
            ):
                response = await retry_async(
                    lambda: _open(client, stack, body, size),
                    client.retry_config,
                    sleep=session.http.sleep,
                )
                tally = StreamTally()
                await _relay(response, tally.wrap(emit), request.num_samples)
        ledger_of(session).sampled(
            client.sampling_session_id,
            client._base_model,
            client.model_path,
            request,
            tally.lengths(),
        )


# -- the pump and the two consumers ---------------------------------------------------------
class _Pump:
    """Runs ``_produce`` on the session loop; chunks travel through a bounded queue."""

    def __init__(self, session: Session, client: SamplingClient, request: SampleRequest) -> None:
        self._loop = session.loop_thread.loop
        self._in_loop = session.loop_thread.in_loop_thread
        self._queue: asyncio.Queue[SampleStreamChunk | _End] = asyncio.Queue(QUEUE_SIZE)
        #: Set (with no result) once the producer task is done (the response is closed),
        #: also when it was cancelled before it ran.
        self.finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.closed = False
        self._task: asyncio.Task[None] | None = None
        coro = self._run(client, request)
        try:
            self._loop.call_soon_threadsafe(self._start, coro)
        except RuntimeError:  # the loop is gone
            coro.close()
            raise ClientClosedError("SamplingClient") from None

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        self._task = self._loop.create_task(coro)
        self._task.add_done_callback(lambda _: self.finished.set_result(None))
        if self.closed:
            self._task.cancel()

    async def _run(self, client: SamplingClient, request: SampleRequest) -> None:
        try:
            await _produce(client, request, "stream_sample", self._queue.put)
            await self._queue.put(_End())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._queue.put(_End(exc))

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def get(self) -> concurrent.futures.Future[SampleStreamChunk | _End]:
        return asyncio.run_coroutine_threadsafe(self._queue.get(), self._loop)

    async def get_here(self) -> SampleStreamChunk | _End:
        """``get`` from a coroutine already on the session loop."""
        return await self._queue.get()

    def cancel(self) -> None:
        """Stop the producer (thread-safe, returns at once); the response closes soon."""
        self.closed = True
        with contextlib.suppress(RuntimeError):  # the loop is gone: nothing runs anymore
            self._loop.call_soon_threadsafe(self._cancel_task)

    def _cancel_task(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def in_loop_thread(self) -> bool:
        return self._in_loop()


def _unwrap(pump: _Pump, item: SampleStreamChunk | _End) -> SampleStreamChunk | None:
    if isinstance(item, _End):
        pump.closed = True
        if item.error is not None:
            raise item.error
        return None
    return item


class SampleStream(Iterator[SampleStreamChunk]):
    """Synchronous iterator of the chunks of one sample stream (see the module docstring).

    Use it in a ``for`` loop or a ``with`` block; ``close()`` stops the stream (the server
    stops generating). Not usable on the tinkex loop thread (use ``sample_stream_async``).
    """

    def __init__(self, pump: _Pump) -> None:
        self._pump = pump

    def __iter__(self) -> SampleStream:
        return self

    def __next__(self) -> SampleStreamChunk:
        pump = self._pump
        if pump.closed:
            raise StopIteration
        if pump.in_loop_thread():
            raise RuntimeError(
                "a synchronous sample stream was iterated on the tinkex event loop thread; "
                "use sample_stream_async there"
            )
        fut = pump.get()
        try:
            item = fut.result()
        except concurrent.futures.CancelledError:  # the ServiceClient closed its loop
            pump.cancel()
            raise ClientClosedError("SamplingClient") from None
        except BaseException:  # KeyboardInterrupt while waiting: stop the stream
            fut.cancel()
            self.close()
            raise
        chunk = _unwrap(pump, item)
        if chunk is None:
            raise StopIteration
        return chunk

    def close(self) -> None:
        """Stop the stream and wait (up to 10 s) until its HTTP response is closed."""
        self._pump.cancel()
        if not self._pump.in_loop_thread():
            with contextlib.suppress(concurrent.futures.TimeoutError):
                self._pump.finished.result(CLOSE_WAIT)

    def __enter__(self) -> SampleStream:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        pump = getattr(self, "_pump", None)
        if pump is not None and not pump.closed:
            pump.cancel()

    def collect(self) -> SampleResponse:
        """Read the rest of the stream and assemble it (:func:`collect_sample_stream`)."""
        return collect_sample_stream(self)


class AsyncSampleStream(AsyncIterator[SampleStreamChunk]):
    """Asynchronous iterator of the chunks of one sample stream, usable from any event loop.

    ``async for`` over it, or ``async with`` it; ``aclose()`` (or cancelling the awaiting
    task) stops the stream and the server's generation.
    """

    def __init__(self, pump: _Pump) -> None:
        self._pump = pump

    def __aiter__(self) -> AsyncSampleStream:
        return self

    async def __anext__(self) -> SampleStreamChunk:
        pump = self._pump
        if pump.closed:
            raise StopAsyncIteration
        try:
            if asyncio.get_running_loop() is pump.loop:
                item = await pump.get_here()
            else:
                item = await asyncio.wrap_future(pump.get())
        except BaseException:  # cancelled while waiting: stop the stream
            pump.cancel()
            raise
        chunk = _unwrap(pump, item)
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """Stop the stream and wait until its HTTP response is closed."""
        self._pump.cancel()
        if asyncio.get_running_loop() is self._pump.loop:
            return  # the pump task finishes on this loop after we yield
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.wrap_future(self._pump.finished), CLOSE_WAIT)

    async def __aenter__(self) -> AsyncSampleStream:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        pump = getattr(self, "_pump", None)
        if pump is not None and not pump.closed:
            pump.cancel()

    async def collect(self) -> SampleResponse:
        """Read the rest of the stream and assemble it (:func:`collect_sample_stream`)."""
        return collect_sample_stream([chunk async for chunk in self])


def open_sample_stream(client: SamplingClient, request: SampleRequest) -> _Pump:
    """Start streaming ``request`` (already validated) on the client's background loop."""
    return _Pump(client._session, client, request)


# -- assembling a stream -----------------------------------------------------------------------
def collect_sample_stream(chunks: Iterable[SampleStreamChunk]) -> SampleResponse:
    """The :class:`SampleResponse` the chunks of one stream amount to: per sequence
    (``index``, 0 when absent) its token ids and logprobs in order and the ``finish_reason``
    of its final chunk as ``stop_reason``. Equal to what ``sample`` answers for the same
    request and seed (prompt logprobs are not streamed)."""
    tokens: dict[int, list[int]] = {}
    logprobs: dict[int, list[float]] = {}
    stops: dict[int, str] = {}
    for chunk in chunks:
        index = chunk.index or 0
        tokens.setdefault(index, [])
        logprobs.setdefault(index, [])
        if chunk.token_id is not None:
            tokens[index].append(chunk.token_id)
            if chunk.logprob is not None:
                logprobs[index].append(chunk.logprob)
        if chunk.finish_reason is not None:
            stops[index] = chunk.finish_reason
    sequences = []
    for index in sorted(tokens):
        if index not in stops:
            raise TinkexValidationError(
                "chunks", f"sequence {index} has no final chunk", "read the stream to its end"
            )
        lps = logprobs[index]
        sequences.append(
            SampledSequence(
                stop_reason=stops[index],  # type: ignore[arg-type]
                tokens=tokens[index],
                logprobs=lps if len(lps) == len(tokens[index]) else None,
            )
        )
    return SampleResponse(sequences=sequences)
