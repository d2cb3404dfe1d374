"""Bad input gets a 4xx with a ``detail`` naming the field, and the server keeps serving:
malformed JSON, wrong types, unknown ids, limits, oversized bodies, API keys, fuzzing."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinkex_server._app import create_app, runtime_of
from tinkex_server._config import ServerConfig
from tinkex_server._local import LocalTransport

MODEL = "tinkex/tiny-llama-100k"

POST_ENDPOINTS = [
    "create_session",
    "session_heartbeat",
    "create_model",
    "get_info",
    "unload_model",
    "forward",
    "forward_backward",
    "optim_step",
    "save_weights",
    "save_weights_for_sampler",
    "load_weights",
    "weights_info",
    "create_sampling_session",
    "asample",
    "retrieve_future",
]


async def _healthy(api: Any) -> None:
    assert (await api.c.get("/api/v1/healthz")).json() == {"status": "ok"}


async def test_malformed_json_and_wrong_types(api: Any) -> None:
    for endpoint in POST_ENDPOINTS:
        r = await api.c.post(
            f"/api/v1/{endpoint}",
            content=b'{"oops": ',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400, (endpoint, r.text)
        assert "malformed JSON" in r.json()["detail"]
    sid = await api.session()
    mid = await api.model(sid)
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("forward_backward", {**api.fb_body(mid, 1), "seq_id": "one"}, "seq_id"),
        (
            "create_model",
            {"session_id": sid, "model_seq_id": -1, "base_model": MODEL},
            "model_seq_id",
        ),
        (
            "optim_step",
            {"model_id": mid, "adam_params": {"learning_rate": "fast"}},
            "adam_params.learning_rate",
        ),
        (
            "forward",
            {"forward_input": {"data": [], "loss_fn": "mystery"}, "model_id": mid},
            "loss_fn",
        ),
        ("asample", {"prompt": {"chunks": []}, "num_samples": 1}, "sampling_session_id"),
        ("create_session", {"tags": "a,b"}, "tags"),
        (
            "create_model",
            {
                "session_id": sid,
                "model_seq_id": 3,
                "base_model": MODEL,
                "lora_config": {
                    "rank": 4,
                    "train_mlp": False,
                    "train_attn": False,
                    "train_unembed": False,
                },
            },
            "train_mlp",
        ),
        ("save_weights", {"model_id": mid, "path": "a/b", "seq_id": 2}, "path"),
        ("load_weights", {"model_id": mid, "path": "weights/x", "seq_id": 2}, "tinker://"),
    ]
    for endpoint, body, needle in cases:
        r = await api.post(endpoint, body)
        assert r.status_code == 422, (endpoint, r.text)
        assert needle in r.json()["detail"], (endpoint, r.json())
    await _healthy(api)
    # Nothing half-done: none of these queued work on the model.
    assert api.applied(mid) == [(None, "CreateModel")]


async def test_semantic_errors_are_400_naming_the_field(api: Any) -> None:
    sid = await api.session()
    mid = await api.model(sid)
    sampler = (
        await api.ok(
            "create_sampling_session",
            {
                "session_id": sid,
                "sampling_session_seq_id": 0,
                "base_model": MODEL,
                "model_path": None,
            },
        )
    )["sampling_session_id"]

    def sample(**over: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "num_samples": 1,
            "prompt": {"chunks": [{"tokens": [1, 2, 3]}]},
            "sampling_params": {"max_tokens": 4},
            "sampling_session_id": sampler,
            "seq_id": 0,
            "prompt_logprobs": False,
            "topk_prompt_logprobs": 0,
        }
        body.update(over)
        return body

    image = {"chunks": [{"data": "iVBORw0KGgo=", "format": "png"}]}
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("asample", sample(sampling_params={"max_tokens": 10**9}), "sampling_params.max_tokens"),
        ("asample", sample(sampling_params={"max_tokens": 0}), "sampling_params.max_tokens"),
        ("asample", sample(num_samples=10**6), "num_samples"),
        ("asample", sample(topk_prompt_logprobs=10**4), "topk_prompt_logprobs"),
        ("asample", sample(prompt={"chunks": [{"tokens": [1, 10**7]}]}), "prompt"),
        ("asample", sample(prompt={"chunks": []}), "prompt"),
        ("asample", sample(prompt=image), "prompt.chunks[0]"),
        ("asample", sample(sampling_params={"stop": ["", "x"]}), "sampling_params.stop"),
        (
            "forward",
            api.fwd_body(mid, 1, [{"model_input": image, "loss_fn_inputs": {}}]),
            "chunks[0]",
        ),
        (
            "forward_backward",
            {
                **api.fb_body(mid, 1),
                "forward_backward_input": {"data": [], "loss_fn": "cross_entropy"},
            },
            "data",
        ),
        (
            "create_model",
            {
                "session_id": sid,
                "model_seq_id": 1,
                "base_model": "no/such-model",
                "lora_config": {"rank": 2},
            },
            "base_model",
        ),
        (
            "create_model",
            {
                "session_id": sid,
                "model_seq_id": 1,
                "base_model": MODEL,
                "lora_config": {"rank": 10**6},
            },
            "lora_config.rank",
        ),
        ("save_weights", {"model_id": mid, "seq_id": 1, "ttl_seconds": None}, "path"),
        ("save_weights_for_sampler", {"model_id": mid, "seq_id": 1, "ttl_seconds": None}, "path"),
        ("load_weights", {"model_id": mid, "path": "tinker://x/other/y", "seq_id": 1}, "path"),
        ("weights_info", {"tinker_path": "tinker://only-two/parts"}, "tinker_path"),
        (
            "create_sampling_session",
            {"session_id": sid, "sampling_session_seq_id": 9},
            "base_model",
        ),
        ("forward", api.fwd_body(mid, 2**70), "seq_id"),
        ("asample", sample(seq_id=2**64), "seq_id"),
        (
            "create_model",
            {"session_id": sid, "model_seq_id": 2**64, "base_model": MODEL},
            "model_seq_id",
        ),
        (
            "create_model",
            {
                "session_id": sid,
                "model_seq_id": 4,
                "base_model": MODEL,
                "lora_config": {"rank": 2, "seed": 2**64},
            },
            "lora_config.seed",
        ),
        (
            "create_sampling_session",
            {"session_id": sid, "sampling_session_seq_id": 2**64, "base_model": MODEL},
            "sampling_session_seq_id",
        ),
        (
            "save_weights_for_sampler",
            {"model_id": mid, "sampling_session_seq_id": 2**64, "seq_id": 1},
            "sampling_session_seq_id",
        ),
        (
            "create_sampling_session",
            {"session_id": sid, "sampling_session_seq_id": 9, "model_path": "tinker://a/b/c"},
            "model_path",
        ),
    ]
    for endpoint, body, needle in cases:
        r = await api.post(endpoint, body)
        # 422: numbers out of their range (max_tokens 0, 64-bit ids) and empty stop strings
        # are refused by the models themselves now (tinkex_types numeric validation).
        assert r.status_code in (400, 422), (endpoint, body, r.text)
        assert needle in r.json()["detail"], (endpoint, r.json())
    r = await api.c.get("/api/v1/training_runs", params={"access_scope": "everything"})
    assert r.status_code == 400
    assert "access_scope" in r.json()["detail"]
    r = await api.c.get("/api/v1/checkpoints", params={"offset": 2**70})
    assert r.status_code == 422
    assert "offset" in r.json()["detail"]
    await _healthy(api)


async def test_absent_max_tokens_gets_the_server_cap(make_server: Any, api_for: Any) -> None:
    async with api_for(make_server(default_max_tokens=7)) as api:
        body = {
            "num_samples": 1,
            "prompt": {"chunks": [{"tokens": [1, 2, 3]}]},
            "sampling_params": {"temperature": 0.0, "stop": []},
            "base_model": MODEL,
            "seq_id": 0,
            "prompt_logprobs": False,
            "topk_prompt_logprobs": 0,
        }
        res = await api.result(await api.ok("asample", body))
        seq = res["sequences"][0]
        assert 1 <= len(seq["tokens"]) <= 7
        assert seq["stop_reason"] == ("length" if len(seq["tokens"]) == 7 else "stop")


async def test_unknown_ids_are_404(api: Any) -> None:
    sid = await api.session()
    mid = await api.model(sid)
    ghost = f"tinker://{mid}/weights/ghost"
    posts: list[tuple[str, dict[str, Any], str]] = [
        ("get_info", {"model_id": "nope:train:0"}, "nope:train:0"),
        ("forward", api.fwd_body("nope:train:0", 1), "model_id"),
        ("optim_step", {"model_id": "nope:train:0", "adam_params": {}, "seq_id": 1}, "model_id"),
        ("unload_model", {"model_id": "nope"}, "model_id"),
        (
            "create_model",
            {
                "session_id": "nope",
                "model_seq_id": 0,
                "base_model": MODEL,
                "lora_config": {"rank": 2},
            },
            "session_id",
        ),
        (
            "create_sampling_session",
            {"session_id": "nope", "sampling_session_seq_id": 0, "base_model": MODEL},
            "session_id",
        ),
        (
            "create_sampling_session",
            {"session_id": sid, "sampling_session_seq_id": 0, "model_path": ghost},
            "ghost",
        ),
        (
            "asample",
            {"prompt": {"chunks": [{"tokens": [1]}]}, "sampling_session_id": "nope:sample:0"},
            "sampling_session_id",
        ),
        ("weights_info", {"tinker_path": ghost}, "ghost"),
        ("retrieve_future", {"request_id": "nope"}, "request_id"),
        ("session_heartbeat", {"session_id": "nope"}, "session_id"),
    ]
    for endpoint, body, needle in posts:
        r = await api.post(endpoint, body)
        assert r.status_code == 404, (endpoint, r.text)
        assert needle in r.json()["detail"]
    ckpt = f"/api/v1/training_runs/{mid}/checkpoints/weights/ghost"
    gets = [
        ("GET", "/api/v1/samplers/nope:sample:1"),
        ("GET", "/api/v1/training_runs/nope:train:0"),
        ("GET", "/api/v1/training_runs/nope:train:0/checkpoints"),
        ("GET", "/api/v1/sessions/nope"),
        ("GET", f"{ckpt}/archive"),
        ("DELETE", ckpt),
        ("POST", f"{ckpt}/publish"),
        ("DELETE", f"{ckpt}/publish"),
        ("PUT", f"{ckpt}/ttl"),
        ("GET", f"/api/v1/training_runs/{mid}/checkpoints/bogus/x/archive"),
        ("GET", "/api/v1/no_such_endpoint"),
    ]
    for method, path in gets:
        r = await api.c.request(method, path, json={"ttl_seconds": 5} if method == "PUT" else None)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["detail"]
    await _healthy(api)


async def test_oversized_bodies_get_413(make_server: Any, api_for: Any) -> None:
    async with api_for(make_server(max_body_bytes=2000)) as api:
        big = {"tags": ["x" * 5000], "user_metadata": {}, "sdk_version": "0.16.1"}
        r = await api.post("create_session", big)
        assert r.status_code == 413
        assert "max_body_bytes" in r.json()["detail"]
        await _healthy(api)
        assert (await api.post("create_session", {"sdk_version": "0.16.1"})).status_code == 200


async def test_oversized_chunked_body_gets_413(tmp_path: Any) -> None:
    app = create_app(ServerConfig(data_dir=tmp_path / "d", max_body_bytes=1000))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 500

    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            r = await client.post(
                "/api/v1/create_session",
                content=chunks(),
                headers={"content-type": "application/json"},
            )
            assert "content-length" not in r.request.headers
            assert r.status_code == 413
            assert (await client.get("/api/v1/healthz")).status_code == 200
    finally:
        await runtime_of(app).aclose()


async def test_api_key_required_when_configured(
    make_server: Any, api_for: Any, caplog: Any
) -> None:
    secret = "tml-very-secret-key"
    server = make_server(api_keys=(secret, "tml-second"))
    assert secret not in repr(server.config)
    caplog.set_level(logging.DEBUG)
    async with api_for(server) as api:
        body = {"tags": [], "user_metadata": {}, "sdk_version": "0.16.1", "project_id": None}
        r = await api.post("create_session", body)
        assert r.status_code == 401
        assert "X-API-Key" in r.json()["detail"]
        r = await api.post("create_session", body, headers={"X-API-Key": "tml-wrong"})
        assert r.status_code == 401
        assert secret not in r.text
        r = await api.post("create_session", body, headers={"X-API-Key": secret})
        assert r.status_code == 200
        r = await api.post("create_session", body, headers={"X-API-Key": "tml-second"})
        assert r.status_code == 200
        assert (await api.c.get("/api/v1/healthz")).status_code == 200  # open for probes
        assert (await api.c.get("/api/v1/get_server_capabilities")).status_code == 401
    assert secret not in caplog.text


async def test_any_key_accepted_without_configuration(api: Any) -> None:
    body = {"sdk_version": "0.16.1"}
    for headers in ({}, {"X-API-Key": "tml-anything"}, {"X-API-Key": "not-even-tml"}):
        assert (await api.post("create_session", body, headers=headers)).status_code == 200


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, -1, 2**63, 2**64])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "session_id",
        "model_id",
        "seq_id",
        "model_seq_id",
        "base_model",
        "lora_config",
        "forward_input",
        "forward_backward_input",
        "adam_params",
        "path",
        "tinker_path",
        "prompt",
        "sampling_params",
        "num_samples",
        "request_id",
        "sampling_session_id",
        "sampling_session_seq_id",
        "sdk_version",
        "ttl_seconds",
        "optimizer",
    ]
)


def test_fuzzed_bodies_never_get_5xx(make_server: Any) -> None:
    server = make_server()
    client = httpx.Client(transport=LocalTransport(server), base_url="local://", timeout=60)

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        endpoint=st.sampled_from([*POST_ENDPOINTS, "telemetry"]),
        body=st.one_of(json_values, st.dictionaries(field_names, json_values, max_size=6)),
    )
    def check(endpoint: str, body: Any) -> None:
        r = client.post(f"/api/v1/{endpoint}", json=body)
        assert r.status_code < 500, (endpoint, body, r.status_code, r.text)
        if r.status_code >= 400:
            assert isinstance(r.json().get("detail"), str)
            assert r.json()["detail"]

    try:
        check()
        assert client.get("/api/v1/healthz").json() == {"status": "ok"}
    finally:
        client.close()
