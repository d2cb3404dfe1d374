"""The one numeric validation (tinkex_types._numbers) and the models that use it.

Regression tests of issue 17: finding 1 (a ``null`` tensor element was a bare TypeError),
finding 2 (infinity accepted, and ``null`` read as "use the default"), finding 8 (errors
that did not name the field).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tinkex_types import (
    FLOAT32_MAX,
    INT64_MAX,
    INT64_MIN,
    AdamParams,
    CreateModelRequest,
    Datum,
    ForwardBackwardInput,
    LoraConfig,
    ModelInput,
    OptimStepRequest,
    SampleRequest,
    SamplingParams,
    TensorData,
    TinkexValidationError,
    check_float,
    check_int,
    check_sampling_params,
)

MI = ModelInput.from_ints([1, 2])
INF = math.inf
NAN = math.nan


def _locs(exc: ValidationError) -> list[str]:
    return [".".join(str(p) for p in err["loc"]) for err in exc.errors()]


# -- finding 1: a null element is a validation error naming the key ---------------------------


@pytest.mark.parametrize("value", [[None], [1.0, None], [[1.0], [None]]])
def test_null_tensor_element_names_the_loss_input(value: list[Any]) -> None:
    with pytest.raises(ValidationError) as info:
        Datum(model_input=MI, loss_fn_inputs={"weights": value})
    assert _locs(info.value) == ["loss_fn_inputs.weights"]
    assert "null" in str(info.value)


def test_null_tensor_element_from_json_names_the_loss_input() -> None:
    body = {"model_input": {"chunks": [{"tokens": [1]}]}, "loss_fn_inputs": {"weights": [None]}}
    with pytest.raises(ValidationError) as info:
        Datum.model_validate_json(json.dumps(body))
    assert _locs(info.value) == ["loss_fn_inputs.weights"]
    body["loss_fn_inputs"] = {"weights": {"data": [None], "dtype": "float32"}}
    with pytest.raises(ValidationError) as info:
        Datum.model_validate(body)
    assert _locs(info.value) == ["loss_fn_inputs.weights"]
    assert "data[0]" in str(info.value)


def test_from_list_refuses_non_numbers_with_a_value_error() -> None:
    for bad in ([None], ["a"], [True], [[1], [None]]):
        with pytest.raises(ValueError, match="numbers"):
            TensorData.from_list(bad)


# -- finding 2: infinity (and NaN) refused everywhere a number enters ------------------------


@pytest.mark.parametrize(
    "name", ["learning_rate", "beta1", "beta2", "eps", "weight_decay", "grad_clip_norm"]
)
@pytest.mark.parametrize("value", [INF, -INF, NAN])
def test_adam_params_refuse_non_finite(name: str, value: float) -> None:
    with pytest.raises(ValidationError) as info:
        AdamParams(**{name: value})
    assert _locs(info.value) == [name]
    assert "finite" in str(info.value)


@pytest.mark.parametrize("name", ["temperature", "top_p"])
@pytest.mark.parametrize("value", [INF, -INF, NAN])
def test_sampling_params_refuse_non_finite(name: str, value: float) -> None:
    with pytest.raises(ValidationError) as info:
        SamplingParams(**{name: value})
    assert _locs(info.value) == [name]


@pytest.mark.parametrize("value", [INF, -INF, NAN, 1e39, -1e39])
def test_loss_inputs_refuse_non_finite_and_float32_overflow(value: float) -> None:
    with pytest.raises(ValidationError) as info:
        Datum(model_input=MI, loss_fn_inputs={"weights": [1.0, value]})
    assert _locs(info.value) == ["loss_fn_inputs.weights"]
    assert "data[1]" in str(info.value)
    with pytest.raises(ValidationError):
        Datum(model_input=MI, loss_fn_inputs={"advantages": np.array([value, 0.0])})


def test_loss_config_refuses_non_finite() -> None:
    with pytest.raises(ValidationError) as info:
        ForwardBackwardInput(data=[], loss_fn="ppo", loss_fn_config={"clip_low_threshold": INF})
    assert _locs(info.value) == ["loss_fn_config.clip_low_threshold"]


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (AdamParams, '{"learning_rate": null}', "learning_rate"),
        (AdamParams, '{"weight_decay": null}', "weight_decay"),
        (SamplingParams, '{"temperature": null}', "temperature"),
        (SamplingParams, '{"top_k": null}', "top_k"),
        (LoraConfig, '{"rank": null}', "rank"),
        (AdamParams, '{"learning_rate": Infinity}', "learning_rate"),
        (AdamParams, '{"learning_rate": NaN}', "learning_rate"),
        (SamplingParams, '{"temperature": -Infinity}', "temperature"),
    ],
)
def test_null_or_non_finite_json_for_a_number_is_refused(
    model: type[Any], body: str, field: str
) -> None:
    # An encoder that writes infinity as null (orjson) must not get the default instead.
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(body)
    assert _locs(info.value) == [field]


def test_null_still_means_none_or_default_where_it_is_no_number() -> None:
    sp = SamplingParams.model_validate_json('{"max_tokens": null, "seed": null, "stop": null}')
    assert (sp.max_tokens, sp.seed, sp.stop) == (None, None, None)
    lora = LoraConfig.model_validate_json('{"rank": 4, "seed": null, "train_mlp": null}')
    assert (lora.seed, lora.train_mlp) == (None, True)
    opt = OptimStepRequest.model_validate_json('{"adam_params": {}, "model_id": "m"}')
    assert opt.adam_params == AdamParams()


# -- finding 8: every error names the field -----------------------------------------------


def test_huge_seed_names_seed() -> None:
    with pytest.raises(ValidationError) as info:
        LoraConfig(seed=2**70)
    assert _locs(info.value) == ["seed"]
    assert "out of range" in str(info.value)
    with pytest.raises(ValidationError) as info:
        SamplingParams(seed=2**70)
    assert _locs(info.value) == ["seed"]
    body = {"session_id": "s", "model_seq_id": 0, "base_model": "b", "lora_config": {"seed": 2**70}}
    with pytest.raises(ValidationError) as info:
        CreateModelRequest.model_validate(body)
    assert _locs(info.value) == ["lora_config.seed"]


def test_fractional_target_token_names_the_key() -> None:
    with pytest.raises(ValidationError) as info:
        Datum(model_input=MI, loss_fn_inputs={"target_tokens": [1.5]})
    assert _locs(info.value) == ["loss_fn_inputs.target_tokens"]
    assert "1.5" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rank": True}, "rank"),
        ({"rank": 2.0}, "rank"),
        ({"rank": "8"}, "rank"),
        ({"rank": 0}, "rank"),
        ({"seed": 1.5}, "seed"),
        ({"seed": False}, "seed"),
        ({"seed": INT64_MAX + 1}, "seed"),
    ],
)
def test_lora_config_integers_are_strict(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        LoraConfig(**kwargs)
    assert _locs(info.value) == [field]


@pytest.mark.parametrize(
    ("tokens", "where"),
    [([1, True], "tokens[1]"), ([1.5], "tokens[0]"), (["3"], "tokens[0]"), ([2**63], "tokens[0]")],
)
def test_token_ids_are_strict_int64(tokens: list[Any], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        ModelInput.from_ints(tokens)
    assert _locs(info.value) == ["tokens"]
    assert where in str(info.value)
    with pytest.raises(ValidationError) as info:
        ModelInput.model_validate({"chunks": [{"tokens": tokens}]})
    assert _locs(info.value) == ["chunks.0.encoded_text.tokens"]


def test_sample_request_counts_are_strict() -> None:
    base = {"prompt": {"chunks": [{"tokens": [1]}]}, "sampling_session_id": "s"}
    for key, value in [("num_samples", 0), ("num_samples", 1.5), ("topk_prompt_logprobs", -1)]:
        with pytest.raises(ValidationError) as info:
            SampleRequest.model_validate({**base, key: value})
        assert _locs(info.value) == [key]


# -- valid extremes are kept exactly -----------------------------------------------------------


def test_valid_extremes_round_trip_unchanged() -> None:
    adam = AdamParams(learning_rate=1e300, beta1=0.0, beta2=math.nextafter(1.0, 0.0), eps=5e-324)
    assert AdamParams.model_validate_json(adam.to_json()) == adam
    sp = SamplingParams(seed=INT64_MIN, top_k=INT64_MAX, max_tokens=INT64_MAX, temperature=0.0)
    assert SamplingParams.model_validate_json(sp.to_json()) == sp
    lora = LoraConfig(rank=1, seed=INT64_MAX)
    assert LoraConfig.model_validate_json(lora.to_json()) == lora
    datum = Datum(
        model_input=ModelInput.from_ints([0, INT64_MAX]),
        loss_fn_inputs={"target_tokens": [INT64_MIN, 0], "weights": [FLOAT32_MAX, -FLOAT32_MAX]},
    )
    again = Datum.model_validate_json(datum.to_json())
    assert again == datum
    assert again.loss_fn_inputs["weights"].data == [FLOAT32_MAX, -FLOAT32_MAX]


def test_numpy_numbers_are_accepted_as_numbers() -> None:
    assert LoraConfig(rank=np.int64(8), seed=np.int32(-3)).seed == -3
    assert AdamParams(learning_rate=np.float32(0.5)).learning_rate == 0.5
    with pytest.raises(ValidationError):
        LoraConfig(rank=np.bool_(True))


def test_json_schema_publishes_the_bounds() -> None:
    props = AdamParams.model_json_schema()["properties"]
    assert props["beta1"]["exclusiveMaximum"] == 1.0
    assert props["eps"]["exclusiveMinimum"] == 0.0
    seed = LoraConfig.model_json_schema(mode="serialization")["properties"]["seed"]["anyOf"][0]
    assert (seed["minimum"], seed["maximum"]) == (INT64_MIN, INT64_MAX)


def test_check_functions_name_the_field() -> None:
    with pytest.raises(TinkexValidationError) as info:
        check_int(2**64, "req.seed")
    assert info.value.field == "req.seed"
    with pytest.raises(TinkexValidationError) as info:
        check_float(INF, "adam_params.learning_rate", ge=0.0)
    assert info.value.field == "adam_params.learning_rate"
    assert check_float(3, "x") == 3.0
    assert check_int(np.int64(7), "x") == 7


# -- the model and check_sampling_params agree --------------------------------------------

_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(),
    st.text(max_size=3),
)
_json_value = st.one_of(_json_scalar, st.lists(_json_scalar, max_size=3))


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["max_tokens", "seed", "stop", "temperature", "top_k", "top_p"]),
        _json_value,
    )
)
def test_model_and_check_sampling_params_agree(raw: dict[str, Any]) -> None:
    """A JSON-shaped dict passes the model exactly when its values pass the check."""
    try:
        SamplingParams.model_validate(raw)
        model_ok = True
    except ValidationError:
        model_ok = False
    # The check reads attributes as they are; None for a number with a default is what
    # the model refuses as null, so drop-null is not the check's business.
    constructed = SamplingParams.model_construct(**raw)
    try:
        check_sampling_params(constructed)
        check_ok = True
    except TinkexValidationError:
        check_ok = False
    nulls = any(raw.get(k, 0) is None for k in ("temperature", "top_k", "top_p"))
    assert model_ok == (check_ok and not nulls), raw
