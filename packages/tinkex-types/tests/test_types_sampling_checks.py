"""check_sampling_params / split_stop / resolve_max_tokens: the one sampling validation."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from tinkex_types import (
    INT64_MAX,
    INT64_MIN,
    SamplingParams,
    TinkexValidationError,
    check_sampling_params,
    resolve_max_tokens,
    split_stop,
)


def _bad(params: SamplingParams, field: str = "sampling_params") -> TinkexValidationError:
    with pytest.raises(TinkexValidationError) as info:
        check_sampling_params(params, field)
    return info.value


def test_defaults_and_typical_values_pass_unchanged() -> None:
    params = SamplingParams()
    assert check_sampling_params(params) is params
    full = SamplingParams(
        max_tokens=20, seed=INT64_MIN, stop=["\n\n"], temperature=0.0, top_k=50, top_p=0.9
    )
    assert check_sampling_params(full) is full
    assert check_sampling_params(SamplingParams(seed=INT64_MAX, top_k=0, stop=[])).top_k == 0


@pytest.mark.parametrize(
    ("kwargs", "sub_field"),
    [
        ({"temperature": math.inf}, "temperature"),
        ({"temperature": -math.inf}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"top_p": math.inf}, "top_p"),
        ({"top_p": math.nan}, "top_p"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"top_k": 2**63}, "top_k"),
        ({"top_k": 1.5}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -3}, "max_tokens"),
        ({"max_tokens": 2**63}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"seed": 2**63}, "seed"),
        ({"seed": INT64_MIN - 1}, "seed"),
        ({"seed": 1.0}, "seed"),
        ({"stop": ""}, "stop[0]"),
        ({"stop": ["ok", ""]}, "stop[1]"),
        ({"stop": [1, -1]}, "stop[1]"),
        ({"stop": [1, 2**63]}, "stop[1]"),
        ({"stop": [False]}, "stop[0]"),
        ({"stop": [1, "x"]}, "stop"),
        ({"stop": ["x", 1]}, "stop"),
        ({"stop": 7}, "stop"),
        ({"stop": {"a": 1}}, "stop"),
    ],
)
def test_each_rule_names_its_sub_field(kwargs: dict[str, Any], sub_field: str) -> None:
    # model_construct skips pydantic: the check must stand on its own (the server may get
    # models built any way, and a mutated model is no longer validated).
    params = SamplingParams.model_construct(**kwargs)
    err = _bad(params, "req.sampling_params")
    assert err.field == f"req.sampling_params.{sub_field}"
    assert err.fix


def test_infinity_that_pydantic_lets_through_is_refused() -> None:
    with pytest.raises(ValidationError, match="temperature"):  # the model agrees now
        SamplingParams(temperature=math.inf)
    params = SamplingParams.model_construct(temperature=math.inf)
    assert _bad(params).field == "sampling_params.temperature"
    assert "finite" in _bad(params).problem


def test_not_sampling_params_is_refused() -> None:
    with pytest.raises(TinkexValidationError) as info:
        check_sampling_params({"max_tokens": 3})  # type: ignore[arg-type]
    assert info.value.field == "sampling_params"
    assert "SamplingParams" in str(info.value)


def test_split_stop_shapes() -> None:
    assert split_stop(None) == ((), ())
    assert split_stop([]) == ((), ())
    assert split_stop("END") == (("END",), ())
    assert split_stop(["a", "b"]) == (("a", "b"), ())
    assert split_stop((3, 4)) == ((), (3, 4))
    assert split_stop(SamplingParams(stop=[5]).stop) == ((), (5,))


def test_resolve_max_tokens() -> None:
    def resolve(max_tokens: int | None, prompt: int = 10) -> int:
        return resolve_max_tokens(
            SamplingParams.model_construct(max_tokens=max_tokens),
            prompt_tokens=prompt,
            context_length=64,
            default=16,
        )

    assert resolve(None) == 16
    assert resolve(None, prompt=60) == 4
    assert resolve(54) == 54
    with pytest.raises(TinkexValidationError) as info:
        resolve(55)
    assert info.value.field == "sampling_params.max_tokens"
    assert info.value.fix == "use max_tokens <= 54"
    with pytest.raises(TinkexValidationError) as info:
        resolve(0)
    assert info.value.field == "sampling_params.max_tokens"
    with pytest.raises(TinkexValidationError) as info:
        resolve(None, prompt=64)
    assert info.value.field == "prompt"
