"""Request headers, body encoding, response decoding and secrecy in errors and logs."""

from __future__ import annotations

import gzip
import platform
import re
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import structlog
from pydantic import BaseModel

from tinkex_http import HTTPClient, RequestOptions, decode_json, encode_json, to_jsonable
from tinkex_types import (
    NOT_GIVEN,
    APIResponseValidationError,
    BadRequestError,
    InternalServerError,
    RateLimitError,
    UnprocessableEntityError,
)

MakeClient = Callable[..., HTTPClient]


def capture(
    seen: list[httpx.Request], response: Callable[[httpx.Request], httpx.Response] | None = None
) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return response(request) if response else httpx.Response(200, json={"ok": True})

    return handler


async def test_standard_headers(make_client: MakeClient, api_key: str, recorder: Any) -> None:
    seen: list[httpx.Request] = []
    async with make_client(
        capture(seen),
        cf_access_client_id="cf-id",
        cf_access_client_secret="cf-secret",
        default_headers={"X-Team": "ml"},
    ) as http:
        await http.post("/api/v1/forward", {"a": 1}, headers={"X-Extra": "1", "X-Team": "override"})
    h = seen[0].headers
    assert h["x-api-key"] == api_key
    assert "authorization" not in h
    assert h["accept"] == "application/json"
    assert h["content-type"] == "application/json"
    assert h["user-agent"].startswith("tinkex/")
    assert h["accept-encoding"] == "gzip, deflate"
    assert h["x-stainless-package-version"] == "0.16.1"
    assert h["x-stainless-lang"] == "python"
    assert h["x-stainless-runtime"] == platform.python_implementation()
    assert h["x-stainless-runtime-version"] == platform.python_version()
    assert h["x-stainless-async"] == "async:asyncio"
    assert h["x-stainless-os"]
    assert h["x-stainless-arch"]
    assert h["x-stainless-retry-count"] == "0"
    assert h["x-stainless-read-timeout"] == "60"
    assert h["cf-access-client-id"] == "cf-id"
    assert h["cf-access-client-secret"] == "cf-secret"
    assert h["x-extra"] == "1"
    assert h["x-team"] == "override"
    assert re.fullmatch(r"[0-9a-f]{32}", h["x-idempotency-key"])
    # Hooks.inject_headers ran for the attempt
    assert recorder.injected == 1
    assert h["traceparent"].startswith("00-")


async def test_otel_propagate_off_skips_the_inject_headers_hook(
    make_client: MakeClient, recorder: Any
) -> None:
    seen: list[httpx.Request] = []
    async with make_client(capture(seen), env={"TINKEX_OTEL_PROPAGATE": "0"}) as http:
        assert http.config.otel_propagate is False
        await http.post("/api/v1/forward", {"a": 1})
    assert recorder.injected == 0
    assert "traceparent" not in seen[0].headers
    async with make_client(capture(seen), otel_propagate=True) as http:
        await http.post("/api/v1/forward", {"a": 1})
    assert recorder.injected == 1
    assert seen[1].headers["traceparent"].startswith("00-")


async def test_get_has_no_body_and_no_content_type(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []
    async with make_client(capture(seen), default_query={"region": "eu"}) as http:
        await http.get("/api/v1/training_runs", params={"limit": 20})
    req = seen[0]
    assert "content-type" not in req.headers
    assert req.content == b""
    assert dict(req.url.params) == {"region": "eu", "limit": "20"}


async def test_bodiless_post_still_sends_json_content_type(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []
    async with make_client(capture(seen)) as http:
        await http.post("/api/v1/training_runs/r/checkpoints/weights/c/publish")
    assert seen[0].headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("path", "read_timeout"),
    [
        ("/api/v1/retrieve_future", "45"),
        ("/api/v1/session_heartbeat", "10"),
        ("/api/v1/telemetry", "5"),
        ("/api/v1/create_session", "60"),
    ],
)
async def test_read_timeout_header_per_endpoint(
    make_client: MakeClient, path: str, read_timeout: str
) -> None:
    seen: list[httpx.Request] = []
    async with make_client(capture(seen)) as http:
        await http.post(path, {})
    assert seen[0].headers["x-stainless-read-timeout"] == read_timeout


async def test_request_type_iteration_roundtrip_and_backpressure(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []
    async with make_client(capture(seen)) as http:
        await http.post(
            "/api/v1/retrieve_future",
            {"request_id": "r"},
            options=RequestOptions(request_type="Sample", iteration=3, create_roundtrip_time=0.25),
        )
        await http.post("/api/v1/asample", {})
        await http.post("/api/v1/forward", {})
    h = seen[0].headers
    assert h["x-tinker-request-type"] == "Sample"
    assert h["x-tinker-request-iteration"] == "3"
    assert float(h["x-tinker-create-promise-roundtrip-time"]) == 0.25
    assert "x-tinker-sampling-backpressure" not in h
    assert seen[1].headers["x-tinker-sampling-backpressure"] == "1"
    assert "x-tinker-sampling-backpressure" not in seen[2].headers
    assert "x-tinker-request-type" not in seen[2].headers


async def test_gzip_response_is_decoded(make_client: MakeClient) -> None:
    payload = orjson.dumps({"tokens": list(range(1000))})

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            content=gzip.compress(payload),
            headers={"content-encoding": "gzip", "content-type": "application/json"},
        )

    async with make_client(capture([], respond)) as http:
        body = await http.get("/api/v1/healthz")
    assert body == {"tokens": list(range(1000))}


async def test_redirect_is_returned_not_followed(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            302,
            headers={
                "location": "https://bucket.test/a.tar?sig=1",
                "expires": "Wed, 21 Oct 2026 07:28:00 GMT",
            },
        )

    async with make_client(capture(seen, respond)) as http:
        body = await http.get("/api/v1/training_runs/r/checkpoints/weights/c/archive")
    assert body == {
        "url": "https://bucket.test/a.tar?sig=1",
        "status": 302,
        "expires": "Wed, 21 Oct 2026 07:28:00 GMT",
    }
    assert len(seen) == 1


async def test_redirect_without_location_is_an_error(make_client: MakeClient) -> None:
    async with make_client(capture([], lambda r: httpx.Response(307))) as http:
        with pytest.raises(APIResponseValidationError, match="Location"):
            await http.get("/x")


async def test_empty_body_is_empty_dict_and_bad_json_is_an_error(make_client: MakeClient) -> None:
    async with make_client(capture([], lambda r: httpx.Response(200, content=b""))) as http:
        assert await http.get("/x") == {}
    async with make_client(capture([], lambda r: httpx.Response(200, content=b"{oops"))) as http:
        with pytest.raises(APIResponseValidationError, match="not JSON"):
            await http.get("/x")


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (400, {"detail": "seq_id must increase"}, "seq_id must increase"),
        (400, {"message": "msg field"}, "msg field"),
        (400, {"error": {"message": "nested"}}, "nested"),
        (
            422,
            {"detail": [{"loc": ["body", "model_id"], "msg": "field required"}]},
            "model_id: field required",
        ),
        (429, None, "Rate limited"),
        (500, None, "HTTP 500"),
    ],
)
async def test_error_messages_come_from_the_body(
    make_client: MakeClient, status: int, body: Any, message: str
) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, headers={"x-should-retry": "false"})
        return httpx.Response(status, json=body, headers={"x-should-retry": "false"})

    async with make_client(capture([], respond)) as http:
        with pytest.raises(
            (BadRequestError, UnprocessableEntityError, RateLimitError, InternalServerError)
        ) as info:
            await http.post("/api/v1/forward", {})
    assert info.value.message == message
    assert info.value.status_code == status
    assert info.value.body == body


async def test_api_key_never_in_errors_or_logs(make_client: MakeClient, api_key: str) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        # a hostile server echoing the key back
        return httpx.Response(401, json={"detail": f"bad key {request.headers['x-api-key']}"})

    with structlog.testing.capture_logs() as logs:
        async with make_client(capture([], respond), dump_headers=True) as http:
            with pytest.raises(Exception) as info:
                await http.post("/api/v1/forward", {})
            assert api_key not in repr(http)
    assert api_key not in str(info.value)
    assert api_key not in repr(info.value)
    assert api_key not in info.value.message  # type: ignore[attr-defined]
    assert "[REDACTED]" in str(info.value)
    dumped = [entry for entry in logs if entry["event"] == "http_request"]
    assert dumped, logs
    assert dumped[0]["headers"]["x-api-key"] == "[REDACTED]"
    assert api_key not in repr(logs)


async def test_api_key_not_in_connection_error_logs(make_client: MakeClient, api_key: str) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}")

    with structlog.testing.capture_logs() as logs:
        async with make_client(capture([], respond), max_retries=1, dump_headers=True) as http:
            with pytest.raises(Exception) as info:
                await http.get("/api/v1/healthz")
    assert api_key not in str(info.value)
    assert any(entry["event"] == "http_retry" for entry in logs)
    assert api_key not in repr(logs)


class Inner(BaseModel):
    tokens: list[int]
    name: str | None = None


class Outer(BaseModel):
    chunks: list[Inner]
    weight: float = 1.0


def test_encode_pydantic_numpy_and_not_given() -> None:
    body = {
        "model": Outer(chunks=[Inner(tokens=[1, 2, 3])]),
        "array": np.arange(4, dtype=np.float32),
        "skip": NOT_GIVEN,
        "nested": {"keep": None, "drop": NOT_GIVEN, "lst": [{"x": NOT_GIVEN, "y": 1}]},
        "tokens": list(range(5)),
    }
    decoded = orjson.loads(encode_json(body))
    assert decoded == {
        "model": {"chunks": [{"tokens": [1, 2, 3], "name": None}], "weight": 1.0},
        "array": [0.0, 1.0, 2.0, 3.0],
        "nested": {"keep": None, "lst": [{"y": 1}]},
        "tokens": [0, 1, 2, 3, 4],
    }
    assert orjson.loads(encode_json(Outer(chunks=[Inner(tokens=[7])]), exclude_none=True)) == {
        "chunks": [{"tokens": [7]}],
        "weight": 1.0,
    }
    with pytest.raises(TypeError, match="not JSON-encodable"):
        encode_json({"x": object()})


def test_large_token_lists_are_passed_through_untouched() -> None:
    tokens = list(range(200_000))
    body = {"data": [{"model_input": {"chunks": [{"tokens": tokens}]}}]}
    assert to_jsonable(body)["data"][0]["model_input"]["chunks"][0]["tokens"] is tokens
    assert decode_json(encode_json(body)) == body
    assert decode_json(b"  ") == {}


async def test_pydantic_body_is_sent_as_json(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []
    async with make_client(capture(seen)) as http:
        await http.post("/api/v1/forward", Outer(chunks=[Inner(tokens=[5, 6])]), exclude_none=True)
    assert orjson.loads(seen[0].content) == {"chunks": [{"tokens": [5, 6]}], "weight": 1.0}


async def test_unknown_request_option_is_a_clear_error(make_client: MakeClient) -> None:
    async with make_client(capture([])) as http:
        with pytest.raises(TypeError, match="unknown request option"):
            await http.post("/api/v1/forward", {}, retries=3)
