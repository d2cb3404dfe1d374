"""The sampling dispatch limits of a SamplingClient come from its Config (TINKEX_SAMPLING_*)."""

from __future__ import annotations

import httpx
import pytest

from tinkex_clients import ServiceClient
from tinkex_types import Hooks

from .conftest import FakeTinker


def _client(fake: FakeTinker, hooks: Hooks, **config: int) -> ServiceClient:
    return ServiceClient(
        api_key="tml-test-key",
        base_url="http://fake.test",
        transport=httpx.MockTransport(fake.handler),
        hooks=hooks,
        **config,
    )


def test_config_sets_the_sampling_limits(fake: FakeTinker, private_hooks: Hooks) -> None:
    service = _client(
        fake,
        private_hooks,
        sampling_concurrency=7,
        sampling_throttled_concurrency=2,
        sampling_byte_budget=4096,
    )
    try:
        dispatch = service.create_sampling_client(base_model="m").dispatch
        assert (dispatch.concurrency, dispatch.throttled_concurrency) == (7, 2)
        assert dispatch.bytes.max_bytes == 4096
    finally:
        service.close()


def test_environment_sets_the_sampling_limits(
    fake: FakeTinker, private_hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINKEX_SAMPLING_CONCURRENCY", "5")
    service = _client(fake, private_hooks)
    try:
        assert service.create_sampling_client(base_model="m").dispatch.concurrency == 5
    finally:
        service.close()
