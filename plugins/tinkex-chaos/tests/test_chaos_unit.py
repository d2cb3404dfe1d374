"""ChaosTransport and ChaosConfig against httpx.MockTransport (no server needed)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

import tinkex_chaos
from tinkex_chaos import ChaosConfig, ChaosStats, ChaosTransport
from tinkex_chaos import _plugin as chaos_plugin
from tinkex_types import TinkexValidationError


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("TINKEX_CHAOS", raising=False)
    tinkex_chaos.reset_stats()
    yield
    tinkex_chaos.reset_stats()


class Recorder:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request.url.path)
        return httpx.Response(200, json={"ok": True, "padding": "x" * 64})


async def _no_sleep(_: float) -> None:
    return None


def _client(config: ChaosConfig, recorder: Recorder) -> tuple[httpx.AsyncClient, ChaosTransport]:
    transport = ChaosTransport(httpx.MockTransport(recorder), config, sleep=_no_sleep)
    return httpx.AsyncClient(transport=transport, base_url="http://test"), transport


def test_parse_full_string() -> None:
    cfg = ChaosConfig.parse(
        "seed=7,error_rate=0.1,reset_after_send_rate=0.05,rate_limit_rate=0.05,"
        "latency_ms=0..200,endpoints=/api/v1/forward*|/api/v1/optim_step"
    )
    assert cfg.seed == 7
    assert cfg.error_rate == pytest.approx(0.1)
    assert cfg.latency_ms == (0, 200)
    assert cfg.endpoints == ("/api/v1/forward*", "/api/v1/optim_step")
    assert cfg.total_fault_rate == pytest.approx(0.2)
    assert cfg.applies_to("/api/v1/forward_backward")
    assert not cfg.applies_to("/api/v1/retrieve_future")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("error_rate=1.5", "error_rate"),
        ("bogus=1", "TINKEX_CHAOS"),
        ("error_rate=0.7,timeout_rate=0.7", "error_rate"),
        ("latency_ms=50..10", "latency_ms"),
        ("seed=abc", "TINKEX_CHAOS.seed"),
        ("error_rate", "TINKEX_CHAOS"),
    ],
)
def test_parse_rejects_bad_values_naming_the_field(text: str, field: str) -> None:
    with pytest.raises(TinkexValidationError) as info:
        ChaosConfig.parse(text)
    assert info.value.field == field


async def test_same_seed_same_fault_sequence() -> None:
    cfg = ChaosConfig(seed=3, error_rate=0.3, rate_limit_rate=0.2, timeout_rate=0.1)

    async def run() -> list[int]:
        client, _ = _client(cfg, Recorder())
        async with client:
            return [(await client.post("/api/v1/x")).status_code for _ in range(40)]

    first, second = await run(), await run()
    assert first == second
    assert {503, 429, 408, 200} <= set(first)


async def test_faults_before_server_do_not_reach_it() -> None:
    recorder = Recorder()
    client, transport = _client(ChaosConfig(seed=1, error_rate=1.0), recorder)
    async with client:
        response = await client.get("/api/v1/healthz")
    assert response.status_code == 503
    assert recorder.seen == []
    assert transport.stats.snapshot()["error"] == 1


async def test_rate_limit_carries_retry_after() -> None:
    client, _ = _client(ChaosConfig(rate_limit_rate=1.0, retry_after_s=0.25), Recorder())
    async with client:
        response = await client.get("/p")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "0.25"


async def test_reset_after_send_reaches_server_then_fails() -> None:
    recorder = Recorder()
    client, transport = _client(ChaosConfig(reset_after_send_rate=1.0), recorder)
    async with client:
        with pytest.raises(httpx.ReadError):
            await client.post("/api/v1/forward_backward", json={})
    assert recorder.seen == ["/api/v1/forward_backward"]
    assert transport.stats.snapshot()["reset_after_send"] == 1


async def test_truncate_breaks_the_body_mid_stream() -> None:
    recorder = Recorder()
    client, _ = _client(ChaosConfig(truncate_rate=1.0), recorder)
    async with client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/api/v1/optim_step", json={})
    assert recorder.seen == ["/api/v1/optim_step"]


async def test_endpoint_filter_and_exclude() -> None:
    recorder = Recorder()
    cfg = ChaosConfig(error_rate=1.0, endpoints=("/api/v1/*",), exclude=("/api/v1/healthz",))
    client, transport = _client(cfg, recorder)
    async with client:
        assert (await client.get("/api/v1/healthz")).status_code == 200
        assert (await client.get("/other")).status_code == 200
        assert (await client.get("/api/v1/asample")).status_code == 503
    assert transport.stats.snapshot()["error"] == 1
    assert transport.stats.by_path() == {("error", "/api/v1/asample"): 1}


async def test_latency_uses_the_injected_sleeper() -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    transport = ChaosTransport(
        httpx.MockTransport(Recorder()), ChaosConfig(latency_ms=(10, 20)), sleep=fake_sleep
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for _ in range(5):
            assert (await client.get("/x")).status_code == 200
    assert len(slept) == 5
    assert all(0.010 <= s <= 0.020 for s in slept)
    assert transport.stats.snapshot()["passed"] == 5


def test_hook_returns_none_when_off() -> None:
    inner = httpx.MockTransport(Recorder())
    assert chaos_plugin.tinkex_wrap_transport(transport=inner, config=None) is None


def test_hook_wraps_when_enabled_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKEX_CHAOS", "seed=2,error_rate=0.5")
    inner = httpx.MockTransport(Recorder())
    wrapped = chaos_plugin.tinkex_wrap_transport(transport=inner, config=None)
    assert isinstance(wrapped, ChaosTransport)
    assert wrapped.inner is inner
    assert wrapped.config.seed == 2


def test_explicit_disable_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKEX_CHAOS", "error_rate=0.5")
    tinkex_chaos.disable()
    assert tinkex_chaos.current_config() is None
    tinkex_chaos.enable("seed=9,timeout_rate=0.2")
    cfg = tinkex_chaos.current_config()
    assert cfg is not None
    assert cfg.seed == 9


def test_stats_snapshot_has_every_kind() -> None:
    stats = ChaosStats()
    stats.add("error", "/a")
    snap = stats.snapshot()
    assert set(snap) == {*tinkex_chaos.FAULT_KINDS, "latency", "passed"}
    assert snap["error"] == 1
    assert stats.total_faults == 1


async def test_each_path_has_its_own_fault_stream() -> None:
    """The faults one endpoint sees do not depend on traffic to other endpoints."""
    cfg = ChaosConfig(seed=5, error_rate=0.3, timeout_rate=0.2)

    async def statuses(interleave: int) -> list[int]:
        client, _ = _client(cfg, Recorder())
        out = []
        async with client:
            for _ in range(30):
                for _ in range(interleave):
                    await client.post("/api/v1/retrieve_future")
                out.append((await client.post("/api/v1/optim_step")).status_code)
        return out

    alone, busy = await statuses(0), await statuses(3)
    assert alone == busy
    assert {503, 408, 200} <= set(alone)


async def test_base_path_is_stripped_before_matching_and_counting() -> None:
    recorder = Recorder()
    cfg = ChaosConfig(error_rate=1.0, endpoints=("/api/v1/*",))
    transport = ChaosTransport(
        httpx.MockTransport(recorder), cfg, sleep=_no_sleep, base_path="/tmp/data/"
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/tmp/data/api/v1/forward")).status_code == 503
        assert (await client.post("/elsewhere/api/v1/forward")).status_code == 200
    assert transport.stats.by_path() == {("error", "/api/v1/forward"): 1}


def test_hook_takes_the_base_path_from_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from tinkex_http import Config

    monkeypatch.setenv("TINKEX_CHAOS", "seed=1,error_rate=0.1")
    inner = httpx.MockTransport(Recorder())
    config = Config(base_url="local:///srv/tinkex-data", env={})
    wrapped = chaos_plugin.tinkex_wrap_transport(transport=inner, config=config)
    assert isinstance(wrapped, ChaosTransport)
    assert wrapped.base_path == "/srv/tinkex-data"
    plain = chaos_plugin.tinkex_wrap_transport(
        transport=inner, config=Config(base_url="http://127.0.0.1:8000", env={})
    )
    assert isinstance(plain, ChaosTransport)
    assert plain.base_path == ""
