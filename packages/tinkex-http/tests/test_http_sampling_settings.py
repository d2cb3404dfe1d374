"""The sampling dispatch limits as Config settings (rows of the table, environment)."""

from __future__ import annotations

import pytest

from tinkex_http import Config, SamplingDispatch
from tinkex_types import TinkexValidationError

ENV = {"TINKER_API_KEY": "tml-dispatch0000000000000"}


def test_defaults_and_environment() -> None:
    config = Config(env=ENV)
    assert (
        config.sampling_concurrency,
        config.sampling_throttled_concurrency,
        config.sampling_byte_budget,
    ) == (400, 10, 5 * 1024 * 1024)
    tuned = Config(
        env={
            **ENV,
            "TINKEX_SAMPLING_CONCURRENCY": "16",
            "TINKEX_SAMPLING_THROTTLED_CONCURRENCY": "2",
            "TINKEX_SAMPLING_BYTE_BUDGET": "1048576",
        }
    )
    dispatch = SamplingDispatch.from_config(tuned)
    assert (dispatch.concurrency, dispatch.throttled_concurrency) == (16, 2)
    assert dispatch.bytes.max_bytes == 1048576
    assert dispatch.tenant == tuned.tenant_key
    explicit = SamplingDispatch.from_config(tuned, concurrency=3, byte_budget=1000)
    assert (explicit.concurrency, explicit.throttled_concurrency) == (3, 2)
    assert explicit.bytes.max_bytes == 1000


def test_bad_values_name_the_setting() -> None:
    with pytest.raises(TinkexValidationError) as info:
        Config(env={**ENV, "TINKEX_SAMPLING_CONCURRENCY": "0"})
    assert info.value.field == "TINKEX_SAMPLING_CONCURRENCY"
    with pytest.raises(TinkexValidationError) as info:
        Config(env=ENV, sampling_byte_budget=-5)
    assert info.value.field == "sampling_byte_budget"
    with pytest.raises(TinkexValidationError) as info:
        SamplingDispatch.from_config(Config(env=ENV), throttled_concurrency=0)
    assert info.value.field == "throttled_concurrency"
