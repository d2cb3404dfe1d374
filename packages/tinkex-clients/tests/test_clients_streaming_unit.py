"""sample_stream mechanics against ``httpx.MockTransport`` (the fake service plus a scripted
``/api/v1/stream_sample``): chunk decoding, the assembled response, error events, broken
and unfinished streams, 429 on open, closing, validation. The real server: see
test_clients_streaming.py."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from tinkex_clients import (
    AsyncSampleStream,
    SampleStream,
    SampleStreamError,
    SamplingClient,
    ServiceClient,
    collect_sample_stream,
)
from tinkex_http import RetryConfig
from tinkex_types import (
    APIResponseValidationError,
    BadRequestError,
    Hooks,
    ModelInput,
    SampleStreamChunk,
    SamplingParams,
    TinkexValidationError,
)

from .conftest import FAST_POLLS, FakeTinker

PROMPT = ModelInput.from_ints([1, 2, 3])
PARAMS = SamplingParams(max_tokens=3, seed=1)


def sse(*events: dict[str, Any] | str) -> list[bytes]:
    out = []
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        out.append(f"data: {data}\n\n".encode())
    return out


TOKENS = sse(
    {"token_id": 7, "logprob": -0.5, "index": 0},
    {"token_id": 8, "logprob": -0.25, "index": 0},
    {"token_id": 9, "logprob": -1.0, "index": 0, "finish_reason": "length", "total_tokens": 3},
)


class StreamRoute:
    """What ``/api/v1/stream_sample`` answers: ``parts`` (bytes, or an exception to raise
    mid-body), after ``status_first`` statuses. Records bodies and whether the body
    iterator was closed early."""

    def __init__(self) -> None:
        self.parts: list[bytes | BaseException] = list(TOKENS)
        self.statuses: list[int] = []
        self.bodies: list[Any] = []
        self.closed_early = threading.Event()
        self.gate: asyncio.Event | None = None  # parts after the first wait for it

    async def body(self) -> AsyncIterator[bytes]:
        done = False
        try:
            for i, part in enumerate(self.parts):
                if i == 1 and self.gate is not None:
                    await self.gate.wait()
                if isinstance(part, BaseException):
                    raise part
                yield part
            done = True
        finally:
            if not done:
                self.closed_early.set()

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        if self.statuses:
            status = self.statuses.pop(0)
            return httpx.Response(status, json={"detail": f"status {status}"})
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=self.body()
        )


@pytest.fixture
def route() -> StreamRoute:
    return StreamRoute()


@pytest.fixture
def sc(fake: FakeTinker, route: StreamRoute, private_hooks: Hooks) -> Iterator[SamplingClient]:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/stream_sample":
            return route.answer(request)
        return await fake.handler(request)

    client = ServiceClient(
        api_key="tml-test-key",
        base_url="http://fake.test",
        transport=httpx.MockTransport(handler),
        hooks=private_hooks,
        poll_policy=FAST_POLLS,
    )
    try:
        fast = RetryConfig(base_delay=0.01, max_delay=0.02)
        yield client.create_sampling_client(base_model="m", retry_config=fast)
    finally:
        client.close()


def test_chunks_arrive_in_order_and_assemble(sc: SamplingClient, route: StreamRoute) -> None:
    with sc.sample_stream(PROMPT, PARAMS, num_samples=1) as stream:
        chunks = list(stream)
    assert [c.token_id for c in chunks] == [7, 8, 9]
    assert [c.event_type for c in chunks] == ["token", "token", "done"]
    response = collect_sample_stream(chunks)
    assert response.sequences[0].tokens == [7, 8, 9]
    assert response.sequences[0].logprobs == [-0.5, -0.25, -1.0]
    assert response.sequences[0].stop_reason == "length"
    body = route.bodies[0]
    assert body["sampling_session_id"] == sc.sampling_session_id
    assert body["num_samples"] == 1
    assert body["sampling_params"]["seed"] == 1
    assert body["prompt"] == {"chunks": [{"tokens": [1, 2, 3]}]}
    assert isinstance(body["seq_id"], int)


def test_async_stream_and_collect(sc: SamplingClient) -> None:
    async def main() -> list[int]:
        stream = sc.sample_stream_async(PROMPT, PARAMS)
        assert isinstance(stream, AsyncSampleStream)
        response = await stream.collect()
        return response.sequences[0].tokens

    assert asyncio.run(main()) == [7, 8, 9]


def test_error_event_mid_stream_raises_after_the_chunks_before_it(
    sc: SamplingClient, route: StreamRoute
) -> None:
    route.parts = [TOKENS[0], *sse({"error": "engine exploded"})]
    stream = sc.sample_stream(PROMPT, PARAMS)
    assert next(stream).token_id == 7
    with pytest.raises(SampleStreamError, match="after 1 chunks: engine exploded") as info:
        next(stream)
    assert info.value.chunks == 1
    with pytest.raises(StopIteration):
        next(stream)


def test_broken_connection_mid_stream_is_a_stream_error(
    sc: SamplingClient, route: StreamRoute
) -> None:
    route.parts = [TOKENS[0], httpx.RemoteProtocolError("peer closed connection")]
    with pytest.raises(SampleStreamError, match="broke after 1 chunks: RemoteProtocolError"):
        list(sc.sample_stream(PROMPT, PARAMS))


def test_stream_without_final_chunk_is_an_error(sc: SamplingClient, route: StreamRoute) -> None:
    route.parts = TOKENS[:2]
    with pytest.raises(
        SampleStreamError, match="ended after 2 chunks with 0 of its 1 final chunks"
    ):
        list(sc.sample_stream(PROMPT, PARAMS))


def test_undecodable_chunk_names_the_event(sc: SamplingClient, route: StreamRoute) -> None:
    route.parts = sse("not json")
    with pytest.raises(APIResponseValidationError, match="event 0 is not a SampleStreamChunk"):
        list(sc.sample_stream(PROMPT, PARAMS))


def test_429_on_open_is_retried_and_refusals_raise(sc: SamplingClient, route: StreamRoute) -> None:
    sc.dispatch.small_backoff = 0.01
    route.statuses = [429]
    assert [c.token_id for c in sc.sample_stream(PROMPT, PARAMS)] == [7, 8, 9]
    assert [b["seq_id"] for b in route.bodies] == [0, 1]
    route.statuses = [400]
    with pytest.raises(BadRequestError):
        list(sc.sample_stream(PROMPT, PARAMS))


def _gated(route: StreamRoute, sc: SamplingClient) -> None:
    """Parts after the first wait for a gate that never opens (a slow generation)."""
    route.gate = asyncio.Event()  # bound to the client loop on first wait


@pytest.mark.parametrize(
    "stop",
    [
        lambda s: s.close(),
        lambda s: s.__exit__(None, None, None),
    ],
)
def test_close_closes_the_response(
    sc: SamplingClient, route: StreamRoute, stop: Callable[[SampleStream], None]
) -> None:
    _gated(route, sc)
    stream = sc.sample_stream(PROMPT, PARAMS)
    assert next(stream).token_id == 7
    stop(stream)
    assert route.closed_early.wait(5)
    with pytest.raises(StopIteration):
        next(stream)


def test_break_closes_the_response(sc: SamplingClient, route: StreamRoute) -> None:
    _gated(route, sc)
    for chunk in sc.sample_stream(PROMPT, PARAMS):
        assert chunk.token_id == 7
        break
    assert route.closed_early.wait(5)


def test_cancelling_the_awaiting_task_closes_the_response(
    sc: SamplingClient, route: StreamRoute
) -> None:
    _gated(route, sc)

    async def main() -> None:
        stream = sc.sample_stream_async(PROMPT, PARAMS)
        first = await anext(stream)
        assert first.token_id == 7
        task = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert route.closed_early.wait(5)


def test_aclose_closes_the_response(sc: SamplingClient, route: StreamRoute) -> None:
    _gated(route, sc)

    async def main() -> None:
        async with sc.sample_stream_async(PROMPT, PARAMS) as stream:
            async for chunk in stream:
                assert chunk.token_id == 7
                break

    asyncio.run(main())
    assert route.closed_early.wait(5)


def test_validation_happens_at_the_call(sc: SamplingClient) -> None:
    with pytest.raises(TinkexValidationError, match="num_samples"):
        sc.sample_stream(PROMPT, PARAMS, num_samples=0)
    with pytest.raises(TinkexValidationError, match="sampling_params"):
        sc.sample_stream(PROMPT, "hot")  # type: ignore[arg-type]


def test_collect_groups_sequences_by_index() -> None:
    chunks = [
        SampleStreamChunk(token_id=1, logprob=-1.0, index=0),
        SampleStreamChunk(token_id=5, logprob=-2.0, index=1),
        SampleStreamChunk(token_id=6, logprob=-3.0, index=1, finish_reason="stop"),
        SampleStreamChunk(token_id=2, logprob=-4.0, index=0, finish_reason="length"),
    ]
    response = collect_sample_stream(chunks)
    assert [s.tokens for s in response.sequences] == [[1, 2], [5, 6]]
    assert [s.stop_reason for s in response.sequences] == ["length", "stop"]
    assert [s.logprobs for s in response.sequences] == [[-1.0, -4.0], [-2.0, -3.0]]
    with pytest.raises(TinkexValidationError, match="sequence 0 has no final chunk"):
        collect_sample_stream(chunks[:1])


def test_the_dispatch_slot_is_held_until_the_stream_ends(
    sc: SamplingClient, route: StreamRoute
) -> None:
    _gated(route, sc)
    assert sc.dispatch.in_flight == 0
    stream = sc.sample_stream(PROMPT, PARAMS)
    assert next(stream).token_id == 7
    assert sc.dispatch.in_flight == 1  # the stream is open: its slot is taken
    stream.close()  # returns once the response is closed and the slot given back
    assert sc.dispatch.in_flight == 0
    assert sc.dispatch.max_in_flight == 1
