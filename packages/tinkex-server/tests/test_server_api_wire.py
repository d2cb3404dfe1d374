"""The server's codec seam and its published contract: bodies decoded by Content-Type and
Content-Encoding (JSON, protobuf, zstd), results encoded by the poll's Accept, every
refusal of the seam a 400 naming the problem, the OpenAPI document declaring every
answer with the one error body, and the hooks the app is given (not the global ones)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import zstandard

from tinkex_server._app import create_app
from tinkex_server._config import ServerConfig
from tinkex_server._local import LocalServer, LocalTransport
from tinkex_types import (
    PROTOBUF_MEDIA_TYPE,
    ForwardBackwardOutput,
    ForwardBackwardRequest,
    Hooks,
    SampleResponse,
    codec_for,
    hookimpl,
    make_plugin_manager,
    set_hooks,
)

PROTO_HEADERS = {"content-type": PROTOBUF_MEDIA_TYPE}


def _protobuf() -> Any:
    codec = codec_for(PROTOBUF_MEDIA_TYPE)
    assert codec is not None, "tinkex_types registers a protobuf codec"
    return codec


async def _poll(api: Any, request_id: str, accept: str) -> httpx.Response:
    for _ in range(200):
        r = await api.c.post(
            "/api/v1/retrieve_future",
            json={"request_id": request_id, "allow_metadata_only": False},
            headers={"accept": accept},
        )
        if r.status_code != 408:
            return r
    raise AssertionError(f"{request_id} never finished")


async def test_protobuf_forward_backward_and_protobuf_result(api: Any) -> None:
    codec = _protobuf()
    sid = await api.session()
    mid = await api.model(sid)
    request = ForwardBackwardRequest.model_validate(api.fb_body(mid, 1))
    r = await api.c.post(
        "/api/v1/forward_backward", content=codec.encode(request), headers=PROTO_HEADERS
    )
    assert r.status_code == 200, r.text
    request_id = r.json()["request_id"]

    as_proto = await _poll(api, request_id, f"{PROTOBUF_MEDIA_TYPE}, application/json;q=0.5")
    assert as_proto.status_code == 200
    assert as_proto.headers["content-type"].startswith(PROTOBUF_MEDIA_TYPE)
    out = codec.decode(ForwardBackwardOutput, as_proto.content)
    assert out.metrics["loss:sum"] > 0

    as_json = await _poll(api, request_id, "application/json")
    assert as_json.headers["content-type"].startswith("application/json")
    assert ForwardBackwardOutput.model_validate(as_json.json()) == out
    # A result the codec does not carry (create_model) falls back to JSON.
    status, _ = await api.poll(request_id)
    assert status == 200


async def test_accept_negotiation_falls_back_to_json(api: Any) -> None:
    sid = await api.session()
    fut = await api.ok(
        "create_model",
        {"session_id": sid, "model_seq_id": 0, "base_model": "tinkex/tiny-llama-100k"},
    )
    # The protobuf codec does not carry CreateModelResponse: JSON, whatever the preference.
    r = await _poll(api, fut["request_id"], PROTOBUF_MEDIA_TYPE)
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"model_id": fut["model_id"], "type": "create_model"}
    mid = fut["model_id"]
    done = await api.ok("forward", api.fwd_body(mid, 1))
    # q=0 refuses protobuf; a higher q for JSON wins over protobuf.
    for accept in (f"{PROTOBUF_MEDIA_TYPE};q=0", f"{PROTOBUF_MEDIA_TYPE};q=0.2, */*;q=0.9"):
        r = await _poll(api, done["request_id"], accept)
        assert r.headers["content-type"].startswith("application/json"), accept
        assert ForwardBackwardOutput.model_validate(r.json()).loss_fn_outputs


async def test_protobuf_sample_result(api: Any) -> None:
    codec = _protobuf()
    fut = await api.ok(
        "asample",
        {
            "num_samples": 2,
            "prompt": {"chunks": [{"tokens": [1, 2, 3]}]},
            "sampling_params": {"max_tokens": 3, "seed": 1},
            "base_model": "tinkex/tiny-llama-100k",
        },
    )
    r = await _poll(api, fut["request_id"], PROTOBUF_MEDIA_TYPE)
    assert r.headers["content-type"].startswith(PROTOBUF_MEDIA_TYPE)
    sample = codec.decode(SampleResponse, r.content)
    assert len(sample.sequences) == 2
    assert all(1 <= len(s.tokens) <= 3 for s in sample.sequences)


async def test_zstd_json_body_is_decoded(api: Any) -> None:
    body = b'{"tags": [], "user_metadata": {}, "sdk_version": "0.16.1", "project_id": null}'
    r = await api.c.post(
        "/api/v1/create_session",
        content=zstandard.ZstdCompressor().compress(body),
        headers={"content-type": "application/json", "content-encoding": "zstd"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["session_id"]


async def test_undecodable_bodies_are_400_naming_the_problem(api: Any) -> None:
    sid = await api.session()
    mid = await api.model(sid)
    cases: list[tuple[str, bytes, dict[str, str], str]] = [
        ("forward_backward", b"oops", {"content-type": "text/plain"}, "Content-Type"),
        ("create_session", b"\x08\x01", PROTO_HEADERS, "CreateSessionRequest"),
        ("forward_backward", b"\xff\xff\xff\xff", PROTO_HEADERS, "body"),
        (
            "forward_backward",
            b"not zstd",
            {"content-type": "application/json", "content-encoding": "zstd"},
            "zstd",
        ),
        (
            "forward_backward",
            b"{}",
            {"content-type": "application/json", "content-encoding": "br"},
            "Content-Encoding",
        ),
        ("telemetry", b"{}", {"content-type": "text/csv"}, "Content-Type"),
    ]
    for endpoint, content, headers, needle in cases:
        r = await api.c.post(f"/api/v1/{endpoint}", content=content, headers=headers)
        assert r.status_code == 400, (endpoint, headers, r.text)
        assert needle in r.json()["detail"], (endpoint, r.json())
    # Nothing was queued on the model by the refused bodies.
    assert api.applied(mid) == [(None, "CreateModel")]


async def test_openapi_declares_every_answer_with_one_error_body(api: Any) -> None:
    doc = (await api.c.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in str(doc["paths"])
    assert set(schemas["ErrorResponse"]["required"]) == {"detail"}
    operations = [(p, m, op) for p, ops in doc["paths"].items() for m, op in ops.items()]
    assert len(operations) >= 31
    for path, method, op in operations:
        responses = op["responses"]
        for status, answer in responses.items():
            if status == "302":
                continue
            content = answer.get("content")
            assert content, (path, method, status)
            if int(status) >= 400 and status != "408":
                ref = content["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorResponse"), (path, method, status)
        assert {"401", "422", "500"} <= set(responses), (path, method)
        if method in ("post", "put") and not path.endswith("/publish"):
            assert "requestBody" in op, (path, method)
            assert "413" in responses, (path, method)
    fb = doc["paths"]["/api/v1/forward_backward"]["post"]
    body_ref = fb["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body_ref.endswith("/ForwardBackwardRequest")
    assert "/api/v1/_test/applied" not in doc["paths"]  # test routes are opt-in


class _Spans:
    def __init__(self) -> None:
        self.names: list[str] = []

    @hookimpl
    def tinkex_operation_span(
        self, operation: str, attributes: Mapping[str, Any], carrier: Mapping[str, str] | None
    ) -> contextlib.AbstractContextManager[Any]:
        self.names.append(operation)
        return contextlib.nullcontext()


@contextlib.contextmanager
def _global_hooks(plugin: object) -> Iterator[None]:
    old = set_hooks(Hooks(make_plugin_manager(load_entrypoints=False, plugins=[plugin])))
    try:
        yield
    finally:
        set_hooks(old)


async def test_create_app_uses_the_hooks_it_is_given(tmp_path: Path) -> None:
    given, global_ = _Spans(), _Spans()
    hooks = Hooks(make_plugin_manager(load_entrypoints=False, plugins=[given]))
    with _global_hooks(global_):
        app = create_app(ServerConfig(data_dir=tmp_path / "d"), hooks=hooks)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.post("/api/v1/create_session", json={"sdk_version": "0.16.1"})
            assert r.status_code == 200
        await app.state.tinkex.aclose()
    assert "server.create_session" in given.names
    assert global_.names == []


async def test_local_server_takes_explicit_hooks(tmp_path: Path) -> None:
    given = _Spans()
    hooks = Hooks(make_plugin_manager(load_entrypoints=False, plugins=[given]))
    server = LocalServer(ServerConfig(data_dir=tmp_path / "d"), hooks=hooks)
    try:
        async with httpx.AsyncClient(
            transport=LocalTransport(server), base_url="local://"
        ) as client:
            r = await client.get("/api/v1/healthz")
            assert r.json() == {"status": "ok"}
    finally:
        server.close()
    assert given.names == ["server.healthz"]
