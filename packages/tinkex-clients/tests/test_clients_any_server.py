"""Any Tinker-compatible server: paths passed through as the server gave them (skyrl-tx's
``tinker://model_c1804094/diag_s``), errors naming the request, tinker's RetryConfig and
ServiceClient arguments. The server is an ``httpx.MockTransport`` that records what it got."""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tinkex_clients import RetryConfig, SamplingClient, ServiceClient, as_retry_config
from tinkex_http import RetryConfig as HttpRetryConfig
from tinkex_types import Hooks, NotFoundError, TinkexValidationError

SKYRL_PATH = "tinker://model_c1804094/diag_s"


class OtherServer:
    """Answers the few routes these tests use; 404 names anything else."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []

    async def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, path, body))
        if path == "/api/v1/create_session":
            return httpx.Response(200, json={"session_id": "s-1"})
        if path == "/api/v1/session_heartbeat":
            return httpx.Response(200, json={})
        if path == "/api/v1/create_sampling_session":
            return httpx.Response(200, json={"sampling_session_id": "samp-1"})
        if path == "/api/v1/weights_info":
            return httpx.Response(200, json={"base_model": "Qwen/Qwen3-0.6B", "is_lora": True})
        if path.startswith("/api/v1/training_runs/model_c1804094/checkpoints/diag_s"):
            if path.endswith("/archive"):
                return httpx.Response(200, json={"url": "https://files.example/diag_s.tar"})
            return httpx.Response(200, json={})
        return httpx.Response(404, json={"detail": "Not Found"})

    def sent(self, method: str, path: str) -> list[Any]:
        return [b for m, p, b in self.requests if m == method and p == path]


@pytest.fixture
def other() -> OtherServer:
    return OtherServer()


@pytest.fixture
def client(other: OtherServer, private_hooks: Hooks) -> Iterator[ServiceClient]:
    service = ServiceClient(
        api_key="tml-other-key",
        base_url="http://other.test",
        transport=httpx.MockTransport(other.handler),
        hooks=private_hooks,
        heartbeat_interval=0.05,
    )
    try:
        yield service
    finally:
        service.close()


def test_server_paths_pass_through(client: ServiceClient, other: OtherServer) -> None:
    sampler = client.create_sampling_client(model_path=SKYRL_PATH)
    assert sampler.model_path == SKYRL_PATH
    assert other.sent("POST", "/api/v1/create_sampling_session")[-1]["model_path"] == SKYRL_PATH
    rest = client.create_rest_client()
    info = rest.get_weights_info_by_tinker_path(SKYRL_PATH).result()
    assert info.base_model == "Qwen/Qwen3-0.6B"
    assert other.sent("POST", "/api/v1/weights_info")[-1] == {"tinker_path": SKYRL_PATH}
    rest.publish_checkpoint_from_tinker_path(SKYRL_PATH).result()
    rest.unpublish_checkpoint_from_tinker_path(SKYRL_PATH).result()
    rest.set_checkpoint_ttl_from_tinker_path(SKYRL_PATH, 60).result()
    rest.delete_checkpoint_from_tinker_path(SKYRL_PATH).result()
    rest.delete_checkpoint("model_c1804094", "diag_s").result()
    url = rest.get_checkpoint_archive_url_from_tinker_path(SKYRL_PATH).result()
    assert url.url == "https://files.example/diag_s.tar"
    base = "/api/v1/training_runs/model_c1804094/checkpoints/diag_s"
    sent = {(m, p) for m, p, _ in other.requests}
    for expected in (
        ("POST", f"{base}/publish"),
        ("DELETE", f"{base}/publish"),
        ("PUT", f"{base}/ttl"),
        ("DELETE", base),
        ("GET", f"{base}/archive"),
    ):
        assert expected in sent, expected


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.create_sampling_client(model_path="model_c1804094/diag_s"), "model_path"),
        (lambda c: c.create_sampling_client(model_path="tinker://"), "model_path"),
        (lambda c: c.create_sampling_client(model_path=""), "model_path"),
        (lambda c: c.create_rest_client().get_weights_info_by_tinker_path(""), "tinker_path"),
        (
            lambda c: c.create_rest_client().publish_checkpoint_from_tinker_path(
                "tinker://model_c1804094"
            ),
            "tinker_path",
        ),
        (
            lambda c: c.create_rest_client().set_checkpoint_ttl_from_tinker_path("s3://x/y", 5),
            "tinker_path",
        ),
    ],
)
def test_what_must_hold_is_checked_naming_the_field(
    client: ServiceClient, other: OtherServer, call: Any, field: str
) -> None:
    before = len(other.requests)
    with pytest.raises(TinkexValidationError) as info:
        call(client)
    assert info.value.field == field
    assert len([r for r in other.requests[before:] if "heartbeat" not in r[1]]) == 0


def test_status_errors_name_method_path_and_status(client: ServiceClient) -> None:
    rest = client.create_rest_client()
    with pytest.raises(NotFoundError) as info:
        rest.get_training_run("no-such-run").result()
    text = str(info.value)
    assert text.startswith("GET /api/v1/training_runs/no-such-run → 404: Not Found"), text
    assert info.value.method == "GET"
    assert info.value.path == "/api/v1/training_runs/no-such-run"
    assert info.value.status_code == 404
    assert "tml-other-key" not in repr(info.value.__dict__)


def test_retry_config_takes_tinkers_fields() -> None:
    config = RetryConfig(100, 60.0, 0.2, 3.0, 0.1, True, True, (TimeoutError,))
    assert isinstance(config, HttpRetryConfig)
    assert (config.base_delay, config.max_delay, config.jitter) == (0.2, 3.0, 0.1)
    assert (config.retry_delay_base, config.retry_delay_max, config.jitter_factor) == (
        0.2,
        3.0,
        0.1,
    )
    assert config.total_timeout == 60.0
    assert config.progress_timeout == 60.0
    assert config.max_connections == 100
    assert config.is_retryable is not None
    assert config.is_retryable(TimeoutError())
    assert not config.is_retryable(KeyError())
    assert RetryConfig(enable_retry_logic=False).enabled is False
    assert RetryConfig(enable_stuck_detection=False).total_timeout is None
    own = RetryConfig(base_delay=1.0, max_delay=30.0, jitter=0.0, total_timeout=300.0)
    assert (own.retry_delay_base, own.retry_delay_max) == (1.0, 30.0)
    assert dataclasses.replace(own, max_connections=None).max_connections is None
    assert RetryConfig.operation().base_delay == 1.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"retry_delay_base": 1.0, "base_delay": 1.0}, "retry_delay_base"),
        ({"max_connections": 0}, "max_connections"),
        ({"retryable_exceptions": ("timeout",)}, "retryable_exceptions"),
        ({"retry_delay_base": -1.0}, "base_delay"),
    ],
)
def test_retry_config_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(TinkexValidationError) as info:
        RetryConfig(**kwargs)
    assert info.value.field == field


def test_official_retry_config_objects_are_converted() -> None:
    @dataclasses.dataclass
    class Official:  # the official tinker RetryConfig's attributes
        max_connections: int | None = 10
        progress_timeout: float = 30.0
        retry_delay_base: float = 0.25
        retry_delay_max: float = 2.0
        jitter_factor: float = 0.5
        enable_retry_logic: bool = True

    converted = as_retry_config(Official())
    assert isinstance(converted, RetryConfig)
    assert (converted.base_delay, converted.max_delay, converted.total_timeout) == (0.25, 2.0, 30.0)
    with pytest.raises(TinkexValidationError) as info:
        as_retry_config("fast")
    assert info.value.field == "retry_config"


def test_service_client_takes_tinkers_arguments(other: OtherServer, private_hooks: Hooks) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        service = ServiceClient(
            display_name="my run",
            base_url="http://other.test",
            api_key="tml-other-key",
            default_headers_overrides={"x-extra": "1"},
            timeout=httpx.Timeout(42.0, connect=3.0),
            http_client=object(),
            transport=httpx.MockTransport(other.handler),
            hooks=private_hooks,
        )
    try:
        assert service.display_name == "my run"
        assert service.config.timeout == 42.0
        assert service.config.connect_timeout == 3.0
        assert dict(service.config.default_headers)["x-extra"] == "1"
        assert any("http_client" in str(w.message) for w in caught)
        sampler = SamplingClient.create(service, sampling_session_id="samp-9").result()
        assert sampler.sampling_session_id == "samp-9"
        created = SamplingClient.create(service, base_model="Qwen/Qwen3-0.6B").result()
        assert created.sampling_session_id == "samp-1"
        assert created.get_telemetry() is service.get_telemetry()
        service.close("success", None)
    finally:
        service.close()
    assert service.closed


def test_on_queue_state_change_hears_backpressure(other: OtherServer, private_hooks: Hooks) -> None:
    heard: list[tuple[str, str | None]] = []

    class Watching(SamplingClient):
        def on_queue_state_change(self, queue_state: str, reason: str | None) -> None:
            heard.append((queue_state, reason))

    answers = iter([429])

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/asample" and next(answers, None) == 429:
            body = {"detail": "slow", "queue_state": "paused_rate_limit", "queue_state_reason": "r"}
            return httpx.Response(429, json=body)
        if request.url.path == "/api/v1/asample":
            return httpx.Response(200, json={"request_id": "f1"})
        if request.url.path == "/api/v1/retrieve_future":
            seq = {"tokens": [1], "stop_reason": "length"}
            return httpx.Response(200, json={"type": "sample", "sequences": [seq]})
        return await other.handler(request)

    service = ServiceClient(
        base_url="http://other.test",
        api_key="tml-other-key",
        transport=httpx.MockTransport(handler),
        hooks=private_hooks,
    )
    try:
        sampler = Watching(
            service._session,
            sampling_session_id="samp-1",
            retry_config=RetryConfig(retry_delay_base=0.01, retry_delay_max=0.02),
        )
        from tinkex_types import ModelInput, SamplingParams

        result = sampler.sample(
            ModelInput.from_ints([1, 2]), 1, SamplingParams(max_tokens=1)
        ).result()
        assert result.sequences[0].tokens == [1]
    finally:
        service.close()
    assert heard == [("paused_rate_limit", "r")]
