"""ServiceClient lifecycle against the fake service: session, heartbeats, close, factories."""

from __future__ import annotations

import time

import httpx
import pytest

from tinkex_clients import ClientClosedError, ServiceClient
from tinkex_types import (
    AuthenticationError,
    Hooks,
    TinkexValidationError,
)

from .conftest import FAST_POLLS, FakeTinker


def test_session_created_eagerly_and_heartbeats(service: ServiceClient, fake: FakeTinker) -> None:
    assert service.session_id == "sess-0"
    # The protocol handshake first (the fake has none: 404, the JSON generation).
    assert fake.paths()[:2] == ["/api/v1/client/config", "/api/v1/create_session"]
    assert fake.bodies("/api/v1/client/config") == [{"sdk_version": "0.16.1"}]
    body = fake.bodies("/api/v1/create_session")[0]
    assert body["sdk_version"] == "0.16.1"
    assert body["user_metadata"] == {}
    deadline = time.monotonic() + 5
    while fake.heartbeats < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.heartbeats >= 2
    assert all(b == {"session_id": "sess-0"} for b in fake.bodies("/api/v1/session_heartbeat"))


def test_close_stops_everything_and_later_calls_fail_clearly(
    service: ServiceClient, fake: FakeTinker
) -> None:
    tc = service.create_lora_training_client("m", rank=4)
    rest = service.create_rest_client()
    service.close()
    service.close()  # idempotent
    assert service.closed
    beats = fake.heartbeats
    time.sleep(0.15)
    assert fake.heartbeats == beats
    sent = len(fake.requests)
    with pytest.raises(ClientClosedError) as info:
        tc.optim_step({"learning_rate": 1e-3})
    assert isinstance(info.value, TinkexValidationError)
    assert info.value.field == "client"
    with pytest.raises(ClientClosedError):
        rest.list_training_runs()
    with pytest.raises(ClientClosedError):
        service.create_lora_training_client("m")
    with pytest.raises(ClientClosedError):
        service.create_rest_client()
    assert len(fake.requests) == sent
    assert "closed" in repr(service)


def test_context_manager_and_user_metadata(fake: FakeTinker, private_hooks: Hooks) -> None:
    transport = httpx.MockTransport(fake.handler)
    with ServiceClient(
        {"team": "a"},
        project_id="proj-1",
        api_key="tml-x",
        base_url="http://fake.test",
        transport=transport,
        hooks=private_hooks,
        tags=["t1"],
    ) as svc:
        assert not svc.closed
        body = fake.bodies("/api/v1/create_session")[0]
        assert body["user_metadata"] == {"team": "a"}
        assert body["project_id"] == "proj-1"
        assert body["tags"] == ["t1"]
        thread = svc._session.loop_thread.thread
    assert svc.closed
    assert not thread.is_alive()


async def test_async_context_manager(fake: FakeTinker, private_hooks: Hooks) -> None:
    async with await ServiceClient.create_async(
        api_key="tml-x",
        base_url="http://fake.test",
        transport=httpx.MockTransport(fake.handler),
        hooks=private_hooks,
    ) as svc:
        caps = await svc.get_server_capabilities_async()
        assert caps.model_names() == ["tinkex/tiny-llama-100k", "plain-name"]
    assert svc.closed


def test_failed_session_creation_raises_and_cleans_up(private_hooks: Hooks) -> None:
    def deny(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": "bad key"})

    with pytest.raises(AuthenticationError, match="bad key"):
        ServiceClient(
            api_key="tml-bad",
            base_url="http://fake.test",
            transport=httpx.MockTransport(deny),
            hooks=private_hooks,
            max_retries=0,
        )


def test_bad_arguments_rejected_before_sending(service: ServiceClient, fake: FakeTinker) -> None:
    sent = len(fake.requests)
    with pytest.raises(TinkexValidationError, match="train_mlp"):
        service.create_lora_training_client(
            "m", train_mlp=False, train_attn=False, train_unembed=False
        )
    with pytest.raises(TinkexValidationError) as info:
        service.create_lora_training_client("m", rank=0)
    assert info.value.field == "rank"
    with pytest.raises(TinkexValidationError) as info:
        service.create_lora_training_client("")
    assert info.value.field == "base_model"
    with pytest.raises(TinkexValidationError) as info:
        service.create_sampling_client()
    assert info.value.field == "model_path"
    with pytest.raises(TinkexValidationError) as info:
        service.create_sampling_client(model_path="s3://bucket/x")
    assert info.value.field == "model_path"
    with pytest.raises(TinkexValidationError) as info:
        service.create_training_client_from_state("tinker://run/sampler_weights/s1")
    assert info.value.field == "path"
    assert "sampler_weights" in str(info.value)
    with pytest.raises(TinkexValidationError):
        service.create_lora_training_client("m", user_metadata={"a": 1})  # type: ignore[dict-item]
    with pytest.raises(TinkexValidationError):
        ServiceClient(api_key="not-a-tinker-key", base_url="http://fake.test")
    assert len(fake.requests) == sent


def test_from_state_restores_weights(service: ServiceClient, fake: FakeTinker) -> None:
    tc = service.create_lora_training_client("m", rank=8)
    fake.models[tc.model_id].theta = 0.25
    path = tc.save_state("ck1").result(5).path
    assert path == f"tinker://{tc.model_id}/weights/ck1"
    tc2 = service.create_training_client_from_state_with_optimizer(path)
    assert tc2.model_id != tc.model_id
    model2 = fake.models[tc2.model_id]
    assert model2.rank == 8
    assert model2.theta == 0.25
    assert model2.seq_ids == [1]  # load_weights is the first request of the new model
    load = fake.bodies("/api/v1/load_weights")[-1]
    assert load["optimizer"] is True
    assert load["path"] == path
    tc3 = service.create_training_client_from_state(path)
    assert fake.bodies("/api/v1/load_weights")[-1]["optimizer"] is False
    assert tc3.model_id not in (tc.model_id, tc2.model_id)


def test_poll_policy_and_config_accessors(service: ServiceClient) -> None:
    assert service._session.poll_policy is FAST_POLLS
    assert service.config.base_url == "http://fake.test"
    assert "tml-test-key" not in repr(service)
    assert "tml-test-key" not in repr(service.config)
