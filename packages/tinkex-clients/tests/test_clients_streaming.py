"""sample_stream against the real server, in-process (``local://``) and over HTTP (``tinkex
serve`` as a subprocess on 127.0.0.1): the assembled stream equals ``sample`` for the same
seed, tokens arrive one chunk per token with a final chunk, closing/cancelling stops the
server's generation, a refused request raises its status error."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tinkex_clients import SampleStreamError, SamplingClient, ServiceClient, collect_sample_stream
from tinkex_server._app import create_app
from tinkex_server._config import ServerConfig
from tinkex_server._engine import Engine
from tinkex_server._local import _SERVERS as local_servers
from tinkex_server._local import _SERVERS_LOCK as local_servers_lock
from tinkex_server._local import LocalServer
from tinkex_server.testing import ServeProcess, serve_app
from tinkex_types import BadRequestError, Hooks, ModelInput, SamplingParams

from .conftest import FAST_POLLS, TINY

PROMPT = ModelInput.from_ints([5, 6, 7, 8])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``tinkex serve`` (``python -m tinkex_server``) on 127.0.0.1, port 0."""
    data_dir = tmp_path_factory.mktemp("stream-serve")
    with ServeProcess(data_dir, "--enable-test-routes", "--log-level", "warning") as served:
        yield served.url


@pytest.fixture(params=["local", "http"])
def service(
    request: pytest.FixtureRequest, local_hooks: Hooks, tmp_path: Path
) -> Iterator[ServiceClient]:
    if request.param == "local":
        request.getfixturevalue("local_env")
        client = ServiceClient(base_url="local://", hooks=local_hooks, poll_policy=FAST_POLLS)
    else:
        url = request.getfixturevalue("served")
        client = ServiceClient(
            base_url=url, api_key="tml-test", hooks=local_hooks, poll_policy=FAST_POLLS
        )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def sampler(service: ServiceClient) -> SamplingClient:
    return service.create_sampling_client(base_model=TINY)


def test_stream_equals_sample_for_the_same_seed(sampler: SamplingClient) -> None:
    params = SamplingParams(max_tokens=12, seed=42, temperature=1.0)
    expected = sampler.sample(PROMPT, 2, params).result(120)
    with sampler.sample_stream(PROMPT, params, num_samples=2) as stream:
        chunks = list(stream)
    assert collect_sample_stream(chunks) == expected.model_copy(
        update={
            "sequences": [s.model_copy(update={"sequence_id": None}) for s in expected.sequences]
        }
    )
    # one chunk per generated token, each sequence ending in exactly one final chunk
    for index, sequence in enumerate(expected.sequences):
        mine = [c for c in chunks if (c.index or 0) == index]
        assert [c.token_id for c in mine if c.token_id is not None] == sequence.tokens
        assert [c.event_type for c in mine].count("done") == 1
        assert mine[-1].finish_reason == sequence.stop_reason


def test_async_stream_equals_sample(sampler: SamplingClient) -> None:
    params = SamplingParams(max_tokens=8, seed=7)
    expected = sampler.sample(PROMPT, 1, params).result(120)

    async def main() -> list[int]:
        async with sampler.sample_stream_async(PROMPT, params) as stream:
            response = await stream.collect()
        return response.sequences[0].tokens

    assert asyncio.run(main()) == expected.sequences[0].tokens


def test_refused_request_raises_its_status_error(sampler: SamplingClient) -> None:
    too_long = SamplingParams(max_tokens=10**9, seed=1)
    with pytest.raises(BadRequestError, match="max_tokens"):
        list(sampler.sample_stream(PROMPT, too_long))


# -- stopping and failing: an engine that pauses (or fails) after its third token ----------


class PausingEngine(Engine):
    """Holds a stream after its third token until the server's relay says the client is
    gone (``on_token.cancelled``), records what it generated; ``fail`` raises instead."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.fail = False
        self.generated: list[int] = []
        self.stopped_by_client = threading.Event()
        self.returned = threading.Event()

    def sample_stream(self, request: Any, on_token: Any) -> Any:
        self.generated.clear()
        self.stopped_by_client.clear()
        self.returned.clear()

        def watched(index: int, token: int, logprob: float, stop: str | None) -> bool:
            self.generated.append(token)
            go = bool(on_token(index, token, logprob, stop))
            if go and len(self.generated) == 3:
                if self.fail:
                    raise RuntimeError("engine failure after three tokens")
                on_token.cancelled.wait(60)
                go = not on_token.cancelled.is_set()
            if not go:
                self.stopped_by_client.set()
            return go

        try:
            return super().sample_stream(request, watched)
        finally:
            self.returned.set()


@pytest.fixture(scope="module")
def pausing_engine() -> PausingEngine:
    return PausingEngine()


@pytest.fixture(scope="module")
def pausing_local(
    tmp_path_factory: pytest.TempPathFactory, pausing_engine: PausingEngine
) -> Iterator[str]:
    """A local server with the pausing engine, reached as ``local:///<its data dir>``."""
    data_dir = tmp_path_factory.mktemp("stream-local").resolve()
    server = LocalServer(ServerConfig(data_dir=data_dir), engine_factory=lambda: pausing_engine)
    with local_servers_lock:
        local_servers[data_dir] = server
    try:
        yield f"local://{data_dir}"
    finally:
        server.close()


@pytest.fixture(scope="module")
def pausing_http(
    tmp_path_factory: pytest.TempPathFactory, pausing_engine: PausingEngine
) -> Iterator[str]:
    """The app with the pausing engine under uvicorn on 127.0.0.1 (a real socket)."""
    data_dir = tmp_path_factory.mktemp("stream-http")
    app = create_app(ServerConfig(data_dir=data_dir), engine_factory=lambda: pausing_engine)
    with serve_app(app) as url:
        yield url


@pytest.fixture(params=["local", "http"])
def paused(
    request: pytest.FixtureRequest, local_hooks: Hooks, pausing_engine: PausingEngine
) -> Iterator[tuple[SamplingClient, PausingEngine]]:
    url = request.getfixturevalue(f"pausing_{request.param}")
    pausing_engine.fail = False
    client = ServiceClient(base_url=url, api_key="tml-test", hooks=local_hooks)
    try:
        yield client.create_sampling_client(base_model=TINY), pausing_engine
    finally:
        client.close()


LONG = SamplingParams(max_tokens=400, seed=3)


def assert_server_stopped(engine: PausingEngine) -> None:
    assert engine.returned.wait(60), "the engine is still generating"
    assert engine.stopped_by_client.is_set()
    assert len(engine.generated) == 3 < LONG.max_tokens  # type: ignore[operator]


@pytest.mark.parametrize("how", ["with", "break", "close"])
def test_stopping_the_sync_stream_stops_the_server(
    paused: tuple[SamplingClient, PausingEngine], how: str
) -> None:
    sampler, engine = paused
    if how == "with":
        with sampler.sample_stream(PROMPT, LONG) as stream:
            assert [next(stream).token_id for _ in range(3)] == engine.generated
    elif how == "break":
        for i, _chunk in enumerate(sampler.sample_stream(PROMPT, LONG)):
            if i == 2:
                break
    else:
        stream = sampler.sample_stream(PROMPT, LONG)
        for _ in range(3):
            next(stream)
        stream.close()
        with pytest.raises(StopIteration):
            next(stream)
    assert_server_stopped(engine)


def test_cancelling_the_task_stops_the_server(
    paused: tuple[SamplingClient, PausingEngine],
) -> None:
    sampler, engine = paused

    async def main() -> None:
        stream = sampler.sample_stream_async(PROMPT, LONG)
        for _ in range(3):
            await anext(stream)
        task = asyncio.ensure_future(anext(stream))  # waits: the engine is paused
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert_server_stopped(engine)


def test_failure_mid_stream_is_a_stream_error(
    paused: tuple[SamplingClient, PausingEngine],
) -> None:
    sampler, engine = paused
    engine.fail = True
    stream = sampler.sample_stream(PROMPT, LONG)
    got = [next(stream).token_id for _ in range(2)]
    with pytest.raises(SampleStreamError, match="internal server error: RuntimeError") as info:
        list(stream)
    assert got == engine.generated[:2]
    assert info.value.chunks >= 2
