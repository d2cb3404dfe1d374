"""Issue 17, findings 1, 2 and 8 against the real local server and the real client encoder.

* Finding 1: ``"loss_fn_inputs": {"weights": [null]}`` was a 500 (a TypeError escaped).
* Finding 2: infinity travelled as ``null`` (orjson) and ``null`` meant "use the default",
  so ``AdamParams(learning_rate=inf)`` trained at 1e-4.
* Finding 8: ``seed=2**70`` and ``target_tokens=[1.5]`` gave errors that named no field.

Every bad body below must get a 4xx naming the field, and the server must keep serving.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tinkex
from tinkex import types
from tinkex_http import decode_json, encode_json
from tinkex_server._config import ServerConfig
from tinkex_server._local import LocalServer, LocalTransport
from tinkex_types import FLOAT32_MAX, TinkexValidationError

MODEL = "tinkex/tiny-llama-100k"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    srv = LocalServer(ServerConfig(data_dir=tmp_path / "data", poll_hold_s=2.0))
    yield srv
    srv.close()


@pytest.fixture
def http(server: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(transport=LocalTransport(server), base_url="local://", timeout=60) as c:
        yield c


def _result(http: httpx.Client, future: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = http.post(
            "/api/v1/retrieve_future",
            json={"request_id": future["request_id"], "allow_metadata_only": True},
        )
        if r.status_code != 408:
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            return body
    raise AssertionError("future never completed")


def _model(http: httpx.Client) -> str:
    r = http.post(
        "/api/v1/create_session",
        json={"tags": [], "user_metadata": {}, "sdk_version": "0.16.1", "project_id": None},
    )
    session = r.json()["session_id"]
    r = http.post(
        "/api/v1/create_model",
        json={
            "session_id": session,
            "model_seq_id": 0,
            "base_model": MODEL,
            "user_metadata": None,
            "lora_config": {"rank": 2, "seed": 1},
        },
    )
    assert r.status_code == 200, r.text
    return str(_result(http, r.json())["model_id"])


def _datum(weights: Any = None, targets: Any = None) -> dict[str, Any]:
    return {
        "model_input": {"chunks": [{"tokens": [5, 6, 7]}]},
        "loss_fn_inputs": {
            "target_tokens": targets if targets is not None else [6, 7, 8],
            "weights": weights if weights is not None else [1.0, 1.0, 1.0],
        },
    }


def _fb(model_id: str, datum: dict[str, Any], seq: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "forward_backward_input": {"data": [datum], "loss_fn": "cross_entropy"},
        "model_id": model_id,
    }
    if seq is not None:
        body["seq_id"] = seq
    return body


def _refused(response: httpx.Response, field: str) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert field in response.text, response.text


def test_bad_numbers_in_bodies_get_4xx_naming_the_field(http: httpx.Client) -> None:
    model_id = _model(http)
    bad_bodies = [
        # (no seq_id: a refused request must not hold up the ordered ones after it)
        ("forward_backward", _fb(model_id, _datum(weights=[None, 1.0, 1.0])), "weights"),
        ("forward", _fb(model_id, _datum(weights=[None, 1.0, 1.0])), "weights"),
        ("forward_backward", _fb(model_id, _datum(targets=[6, 7.5, 8])), "target_tokens"),
        ("forward_backward", _fb(model_id, _datum(weights=[1e39, 0.0, 0.0])), "weights"),
    ]
    for path, body, field in bad_bodies:
        if path == "forward":
            body = {"forward_input": body.pop("forward_backward_input"), **body}
        _refused(http.post(f"/api/v1/{path}", json=body), f"loss_fn_inputs.{field}")
    # Non-finite numbers as Python's json writes them, and as orjson writes them (null).
    for text in ("Infinity", "-Infinity", "NaN", "null"):
        raw = '{"adam_params": {"learning_rate": %s}, "model_id": "%s"}'
        r = http.post(
            "/api/v1/optim_step",
            content=raw % (text, model_id),
            headers={"content-type": "application/json"},
        )
        _refused(r, "adam_params.learning_rate")
    r = http.post(
        "/api/v1/create_model",
        json={"session_id": "x", "model_seq_id": 1, "base_model": MODEL,
              "lora_config": {"rank": 2, "seed": 2**70}},
    )  # fmt: skip
    _refused(r, "lora_config.seed")
    sample = {
        "prompt": {"chunks": [{"tokens": [1, 2]}]},
        "base_model": MODEL,
        "sampling_params": {"max_tokens": 2, "temperature": math.inf},
    }
    r = http.post(
        "/api/v1/asample",
        content=json.dumps(sample),  # Python's json writes Infinity
        headers={"content-type": "application/json"},
    )
    _refused(r, "sampling_params.temperature")

    # Still serving: a good step after all of that.
    r = http.post("/api/v1/forward_backward", json=_fb(model_id, _datum(), 1))
    assert r.status_code == 200, r.text
    result = _result(http, r.json())
    assert "loss:sum" in result.get("metrics", {}), result
    r = http.post(
        "/api/v1/optim_step",
        json={"adam_params": {"learning_rate": 0.25}, "model_id": model_id, "seq_id": 2},
    )
    assert _result(http, r.json())["metrics"]["learning_rate:mean"] == 0.25


def test_encoder_refuses_non_finite_instead_of_writing_null() -> None:
    with pytest.raises(TinkexValidationError) as info:
        encode_json({"adam_params": {"learning_rate": math.inf}, "seq_id": 1})
    assert info.value.field == "adam_params.learning_rate"
    with pytest.raises(TinkexValidationError) as info:
        encode_json(types.AdamParams.model_construct(weight_decay=math.nan))
    assert info.value.field == "weight_decay"
    with pytest.raises(TinkexValidationError) as info:
        encode_json({"x": [{"y": [1.0, 2.0, -math.inf]}]})
    assert info.value.field == "x[0].y[2]"
    # Real nulls and large finite numbers are written as they are.
    body = {"a": None, "b": [1e308, -1e308, 5e-324], "c": 2**63 - 1}
    assert json.loads(encode_json(body)) == body


def test_client_refuses_before_sending_naming_the_field(
    local_data_dir: Path,
) -> None:
    with tinkex.ServiceClient(base_url="local://") as service:
        with pytest.raises(ValueError, match="seed"):
            service.create_lora_training_client(base_model=MODEL, rank=2, seed=2**70)
        training = service.create_lora_training_client(base_model=MODEL, rank=2, seed=0)
        with pytest.raises(ValueError, match="learning_rate"):
            training.optim_step(types.AdamParams(learning_rate=math.inf))
        # A model built around validation is still caught before it is sent (by the
        # encoder, which refuses to write infinity as null; raised by the future).
        adam = types.AdamParams.model_construct(learning_rate=math.inf)
        with pytest.raises(TinkexValidationError, match="learning_rate") as info:
            training.optim_step(adam).result(timeout=60)
        assert info.value.field == "adam_params.learning_rate"
        with pytest.raises(ValueError, match=r"loss_fn_inputs\.weights"):
            types.Datum(
                model_input=types.ModelInput.from_ints([1, 2]),
                loss_fn_inputs={"target_tokens": [2, 3], "weights": [None, 1.0]},
            )
        with pytest.raises(ValueError, match=r"loss_fn_inputs\.target_tokens"):
            types.Datum(
                model_input=types.ModelInput.from_ints([1, 2]),
                loss_fn_inputs={"target_tokens": [1.5, 3]},
            )
        # The server trains at exactly the learning rate asked for.
        datum = types.Datum(
            model_input=types.ModelInput.from_ints([1, 2]),
            loss_fn_inputs={"target_tokens": [2, 3], "weights": [1.0, 1.0]},
        )
        training.forward_backward([datum], "cross_entropy").result(timeout=120)
        step = training.optim_step(types.AdamParams(learning_rate=3e-7)).result(timeout=120)
        assert step.metrics["learning_rate:mean"] == 3e-7


def test_valid_extremes_are_served_not_crashed(local_data_dir: Path) -> None:
    """Found by the fuzz suite: a subnormal temperature crashed the sampler (500), and a
    loss that overflows to infinity came back as a body the client could not parse."""
    assert decode_json(b'{"a": NaN, "b": -Infinity, "c": 1}') == {
        "a": pytest.approx(math.nan, nan_ok=True),
        "b": -math.inf,
        "c": 1,
    }
    with tinkex.ServiceClient(base_url="local://") as service:
        sampler = service.create_sampling_client(base_model=MODEL)
        prompt = types.ModelInput.from_ints([1, 2, 3])

        def tokens(temperature: float) -> list[int]:
            params = types.SamplingParams(max_tokens=4, temperature=temperature, seed=1)
            return list(sampler.sample(prompt, 1, params).result(timeout=120).sequences[0].tokens)

        assert tokens(5e-324) == tokens(0.0)  # the limit of a vanishing temperature: greedy
        training = service.create_lora_training_client(base_model=MODEL, rank=2, seed=0)
        datum = types.Datum(
            model_input=types.ModelInput.from_ints([1, 2]),
            loss_fn_inputs={"target_tokens": [2, 3], "weights": [FLOAT32_MAX, FLOAT32_MAX]},
        )
        out = training.forward([datum], "cross_entropy").result(timeout=120)
        assert out.metrics["loss:sum"] == math.inf  # a result, read back as it is


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"learning_rate": 1e300}, "learning_rate"),
        ({"learning_rate": 1e20, "weight_decay": 1e20}, "weight_decay"),
        ({"eps": 1e39}, "eps"),
        ({"eps": 5e-324}, "eps"),  # rounds to 0 in float32: 0/0 would make the weights NaN
    ],
)
def test_adam_values_beyond_float32_are_refused_not_crashed(
    local_data_dir: Path, params: dict[str, float], field: str
) -> None:
    """Found by the fuzz suite: finite values the float32 update cannot apply were a 500
    (torch refused the scalar) or silently turned the weights NaN."""
    with tinkex.ServiceClient(base_url="local://") as service:
        training = service.create_lora_training_client(base_model=MODEL, rank=2, seed=0)
        with pytest.raises(tinkex.RequestFailedError) as info:
            training.optim_step(types.AdamParams(**params)).result(timeout=120)
        assert info.value.category == tinkex.RequestErrorCategory.USER
        assert f"adam_params.{field}" in str(info.value)
        step = training.optim_step(types.AdamParams(learning_rate=1e-3)).result(timeout=120)
        assert step.metrics["step:max"] == 1.0  # the refused step did not count
        datum = types.Datum(
            model_input=types.ModelInput.from_ints([1, 2]),
            loss_fn_inputs={"target_tokens": [2, 3], "weights": [1.0, 1.0]},
        )
        loss = training.forward([datum], "cross_entropy").result(timeout=120).metrics["loss:sum"]
        assert math.isfinite(loss)
