"""Fixtures of the tinkex-http tests: a private hook manager with recorders, a fake clock whose
sleeper advances time instead of sleeping, and a factory for MockTransport-backed clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

import tinkex_http._plugin as http_plugin
from tinkex_http import Config, HTTPClient
from tinkex_types import (
    FutureEvent,
    Hooks,
    QueueStateEvent,
    RequestEvent,
    hookimpl,
    make_plugin_manager,
    set_hooks,
)

API_KEY = "tml-SECRET-do-not-leak-0123456789"


@dataclass
class Recorder:
    """A plugin that records every observer event."""

    requests: list[RequestEvent] = field(default_factory=list)
    futures: list[FutureEvent] = field(default_factory=list)
    queue: list[QueueStateEvent] = field(default_factory=list)
    injected: int = 0

    @hookimpl
    def tinkex_on_request(self, event: RequestEvent) -> None:
        self.requests.append(event)

    @hookimpl
    def tinkex_on_future(self, event: FutureEvent) -> None:
        self.futures.append(event)

    @hookimpl
    def tinkex_on_queue_state_change(self, event: QueueStateEvent) -> None:
        self.queue.append(event)

    @hookimpl
    def tinkex_inject_headers(self, headers: dict[str, str]) -> None:
        self.injected += 1
        headers["traceparent"] = f"00-{'a' * 32}-{'b' * 16}-01"


class FakeClock:
    """Monotonic and wall clocks that only move when :meth:`sleep` is awaited."""

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self.now = start
        self.wall_offset = wall - start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self.wall_offset

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def hooks(recorder: Recorder) -> Iterator[Hooks]:
    """A hook facade with this package's plugin and the recorder, installed process-wide."""
    pm = make_plugin_manager(
        load_entrypoints=False, defaults=False, plugins=[http_plugin, recorder]
    )
    facade = Hooks(pm)
    old = set_hooks(facade)
    try:
        yield facade
    finally:
        set_hooks(old)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def make_client(hooks: Hooks, clock: FakeClock) -> Callable[..., HTTPClient]:
    """``make_client(handler, **config_kwargs)`` → an HTTPClient over a MockTransport."""

    def factory(
        handler: Handler, *, rng: Callable[[], float] = lambda: 0.5, **cfg: Any
    ) -> HTTPClient:
        cfg.setdefault("api_key", API_KEY)
        cfg.setdefault("env", {})
        config = Config(**cfg)
        return HTTPClient(
            config,
            transport=httpx.MockTransport(handler),
            hooks=hooks,
            clock=clock,
            wall_clock=clock.wall,
            sleep=clock.sleep,
            rng=rng,
        )

    return factory


@pytest.fixture
def api_key() -> str:
    return API_KEY
