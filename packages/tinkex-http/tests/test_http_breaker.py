"""Circuit breakers per endpoint family: the state machine, the Config row, the pipeline
(refused attempts are never sent), events, and a real refused connection on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tinkex_http import (
    CircuitBreaker,
    CircuitBreakerSettings,
    CircuitOpenError,
    Config,
    HTTPClient,
    breakers,
    endpoint_family,
)
from tinkex_types import InternalServerError, TinkexValidationError
from tinkex_types._events import CircuitBreakerEvent

ON = CircuitBreakerSettings(enabled=True, failure_threshold=3, recovery_timeout=10.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry_clock() -> Iterator[Clock]:
    clock = Clock()
    registry = breakers()
    saved = registry.clock
    registry.clock = clock
    registry.reset()
    try:
        yield clock
    finally:
        registry.clock = saved
        registry.reset()


@pytest.fixture
def events() -> Iterator[list[CircuitBreakerEvent]]:
    seen: list[CircuitBreakerEvent] = []
    unsubscribe = breakers().subscribe(seen.append)
    try:
        yield seen
    finally:
        unsubscribe()


def test_state_machine() -> None:
    clock = Clock()
    seen: list[CircuitBreakerEvent] = []
    breaker = CircuitBreaker("sampling", "http://h:1", ON, clock=clock, notify=seen.append)
    for _ in range(2):
        breaker.before()
        breaker.failure("HTTP 503")
    assert breaker.state == "closed"
    breaker.answered(404)  # the server answered: the count starts again
    for _ in range(3):
        breaker.before()
        breaker.answered(503)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError) as info:
        breaker.before()
    assert info.value.family == "sampling"
    assert info.value.retry_after_s == 10.0
    assert "TINKEX_CIRCUIT_BREAKER" in str(info.value)
    clock.now += 10.0
    assert breaker.state == "half_open"
    breaker.before()  # the one probe
    with pytest.raises(CircuitOpenError):
        breaker.before()  # a second caller waits for the probe's outcome
    breaker.failure("ConnectError")
    assert breaker.state == "open"
    clock.now += 10.0
    breaker.before()
    breaker.answered(200)
    assert breaker.state == "closed"
    assert [(e.previous_state, e.state) for e in seen] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert seen[0].reason == "3 consecutive failures (last: HTTP 503)"
    assert seen[0].failures == 3


@pytest.mark.parametrize(
    ("path", "family"),
    [
        ("/api/v1/forward_backward", "training"),
        ("/api/v1/optim_step", "training"),
        ("/api/v1/asample", "sampling"),
        ("/api/v1/retrieve_future", "futures"),
        ("/api/v1/create_session", "session"),
        ("/api/v1/session_heartbeat", "session"),
        ("/api/v1/training_runs/run-1/checkpoints", "rest"),
        ("/api/v1/samplers/s-1?x=1", "rest"),
        ("/api/v1/telemetry", "telemetry"),
    ],
)
def test_families(path: str, family: str) -> None:
    assert endpoint_family(path) == family


def test_config_row() -> None:
    env = {"TINKER_API_KEY": "tml-breakertest000000000"}
    assert Config(env=env).circuit_breaker == CircuitBreakerSettings(enabled=False)
    assert Config(env={**env, "TINKEX_CIRCUIT_BREAKER": "on"}).circuit_breaker.enabled
    parsed = Config(env={**env, "TINKEX_CIRCUIT_BREAKER": "failures=2,reset=1.5,probes=3"})
    assert parsed.circuit_breaker == CircuitBreakerSettings(True, 2, 1.5, 3)
    given = Config(env=env, circuit_breaker={"failure_threshold": 4})
    assert given.circuit_breaker == CircuitBreakerSettings(True, 4, 30.0, 1)
    assert given.replace(timeout=5.0).circuit_breaker == given.circuit_breaker
    with pytest.raises(TinkexValidationError) as info:
        Config(env={**env, "TINKEX_CIRCUIT_BREAKER": "failures=x"})
    assert info.value.field == "TINKEX_CIRCUIT_BREAKER"
    with pytest.raises(TinkexValidationError) as info:
        Config(env=env, circuit_breaker={"failures": 0})
    assert info.value.field == "circuit_breaker.failure_threshold"
    with pytest.raises(TinkexValidationError):
        Config(env={**env, "TINKEX_CIRCUIT_BREAKER": "sometimes"})


async def test_pipeline_opens_and_refuses_without_sending(
    make_client: Callable[..., HTTPClient],
    registry_clock: Clock,
    events: list[CircuitBreakerEvent],
) -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        if request.url.path.endswith("forward_backward"):
            return httpx.Response(503, json={"detail": "down"})
        return httpx.Response(200, json={})

    async with make_client(handler, circuit_breaker=ON, max_retries=5) as http:
        with pytest.raises(CircuitOpenError):
            await http.post("/api/v1/forward_backward", {})
        assert (
            sum(p.endswith("/api/v1/forward_backward") for p in sent) == 3
        )  # the 4th attempt was refused
        with pytest.raises(CircuitOpenError):
            await http.post("/api/v1/forward_backward", {})
        assert sum(p.endswith("/api/v1/forward_backward") for p in sent) == 3
        # Another family of the same server is not affected.
        assert await http.post("/api/v1/asample", {}) == {}
        registry_clock.now += 10.0
        with pytest.raises(InternalServerError):  # the probe goes out, fails, reopens
            await http.post("/api/v1/forward_backward", {}, max_retries=0)
    assert [(e.family, e.state) for e in events] == [
        ("training", "open"),
        ("training", "half_open"),
        ("training", "open"),
    ]
    server = http.config.pool_key
    states = breakers().states()
    assert states[(server, "training")] == "open"
    assert states[(server, "sampling")] == "closed"


async def test_off_by_default_never_refuses(
    make_client: Callable[..., HTTPClient], registry_clock: Clock
) -> None:
    sent: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        return httpx.Response(503, json={})

    async with make_client(handler, max_retries=0) as http:
        for _ in range(8):
            with pytest.raises(InternalServerError):
                await http.post("/api/v1/forward_backward", {})
    assert len(sent) == 8
    assert breakers().states() == {}


async def test_refused_connections_on_loopback_open_the_breaker(
    hooks: Any, registry_clock: Clock
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once the socket is closed
    config = Config(
        env={},
        api_key="tml-breakertest000000000",
        base_url=f"http://127.0.0.1:{port}",
        max_retries=10,
        retry_backoff=(0.001, 0.002),
        circuit_breaker="failures=2,reset=60",
    )
    async with HTTPClient(config, hooks=hooks) as http:
        with pytest.raises(CircuitOpenError) as info:
            await http.get("/api/v1/training_runs")
    assert info.value.family == "rest"
    assert breakers().states()[(f"http://127.0.0.1:{port}", "rest")] == "open"
