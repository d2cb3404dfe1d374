"""The client codec seam: request bodies encoded and answers decoded by media type in one
place, JSON by default, any codec registered in tinkex-types (here a tiny fake one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import httpx
import orjson
import pytest
import zstandard
from pydantic import BaseModel

from tinkex_http import APIFutureResolver, HTTPClient
from tinkex_types import (
    JSON_MEDIA_TYPE,
    APIResponseValidationError,
    TinkexValidationError,
    WireDecodeError,
    register_codec,
)

MakeClient = Callable[..., HTTPClient]
FAKE = "application/x-tinkex-fake"
_M = TypeVar("_M", bound=BaseModel)


class Ping(BaseModel):
    n: int
    note: str = ""


class Pong(BaseModel):
    total: int


class Other(BaseModel):
    x: int = 0


class FakeCodec:
    """``FAKE:`` followed by the JSON of the model; carries Ping and Pong only."""

    media_type = FAKE

    def carries(self, model: type[BaseModel]) -> bool:
        return model in (Ping, Pong)

    def encode(self, value: BaseModel) -> bytes:
        return b"FAKE:" + value.model_dump_json().encode()

    def decode(self, model: type[_M], body: bytes) -> _M:
        if not body.startswith(b"FAKE:"):
            raise WireDecodeError("body", "has no FAKE: prefix", "send a fake body")
        return model.model_validate_json(body[5:])


register_codec(FakeCodec())


def recording(
    answer: Callable[[httpx.Request], httpx.Response], seen: list[httpx.Request]
) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    return handler


async def test_post_model_as_json_uses_the_json_codec(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []
    handler = recording(lambda r: httpx.Response(200, json={"ok": True}), seen)
    async with make_client(handler) as http:
        out = await http.post_model("/api/v1/forward", Ping(n=3), request_type="Forward")
    assert out == {"ok": True}
    assert seen[0].headers["content-type"] == JSON_MEDIA_TYPE
    assert "content-encoding" not in seen[0].headers
    assert seen[0].headers["x-tinker-request-type"] == "Forward"
    assert orjson.loads(seen[0].content) == {"n": 3, "note": ""}


async def test_post_model_with_a_registered_codec_and_zstd(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []
    handler = recording(
        lambda r: httpx.Response(
            200, content=b'FAKE:{"total": 7}', headers={"content-type": f"{FAKE}; v=1"}
        ),
        seen,
    )
    async with make_client(handler) as http:
        out = await http.post_model(
            "/api/v1/forward_backward",
            Ping(n=7, note="x" * 200),
            media_type=FAKE,
            compress="zstd",
            result_model=Pong,
            request_type="ForwardBackward",
        )
    assert out == Pong(total=7)
    request = seen[0]
    assert request.headers["content-type"] == FAKE
    assert request.headers["content-encoding"] == "zstd"
    assert request.headers["x-tinker-request-type"] == "ForwardBackward"
    raw = zstandard.ZstdDecompressor().stream_reader(request.content).read()
    assert raw == FakeCodec().encode(Ping(n=7, note="x" * 200))
    assert len(request.content) < len(raw)


async def test_encoding_errors_name_the_field_and_the_fix(make_client: MakeClient) -> None:
    async with make_client(lambda r: httpx.Response(200, json={})) as http:
        with pytest.raises(TinkexValidationError) as info:
            await http.post_model("/api/v1/forward", Ping(n=1), media_type="application/x-none")
        assert info.value.field == "media_type"
        assert "register_codec" in str(info.value)
        with pytest.raises(TinkexValidationError) as info:
            await http.post_model("/api/v1/forward", Other(), media_type=FAKE)
        assert info.value.field == "media_type"
        assert "does not carry Other" in str(info.value)
        with pytest.raises(TinkexValidationError) as info:
            await http.post("/api/v1/forward", {"n": 1}, media_type=FAKE)
        assert info.value.field == "body"
        with pytest.raises(TinkexValidationError) as info:
            await http.post_model("/api/v1/forward", Ping(n=1), compress="brotli")
        assert info.value.field == "compress"


async def test_binary_answers_need_a_result_model_and_a_valid_body(
    make_client: MakeClient,
) -> None:
    bodies = iter([b'FAKE:{"total": 1}', b"garbage"])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=next(bodies), headers={"content-type": FAKE})

    async with make_client(handler) as http:
        with pytest.raises(APIResponseValidationError, match="result_model"):
            await http.post("/api/v1/forward", {})
        with pytest.raises(APIResponseValidationError, match="not a valid Pong"):
            await http.post("/api/v1/forward", {}, result_model=Pong)


async def test_json_answers_stay_plain_data_even_with_a_result_model(
    make_client: MakeClient,
) -> None:
    handler = recording(lambda r: httpx.Response(200, json={"total": 2}), [])
    async with make_client(handler) as http:
        assert await http.post("/api/v1/forward", {}, result_model=Pong) == {"total": 2}


async def test_the_resolver_decodes_a_binary_poll_result_by_content_type(
    make_client: MakeClient,
) -> None:
    answers = iter(
        [
            httpx.Response(200, json={"type": "try_again", "queue_state": "active"}),
            httpx.Response(200, content=b'FAKE:{"total": 42}', headers={"content-type": FAKE}),
        ]
    )
    seen: list[httpx.Request] = []
    async with make_client(recording(lambda r: next(answers), seen)) as http:
        result = await APIFutureResolver(
            http, "req-1", request_type="ForwardBackward", result_model=Pong, accept=(FAKE,)
        )
    assert result == Pong(total=42)
    assert len(seen) == 2
    assert all(r.headers["accept"] == f"{FAKE}, application/json;q=0.5" for r in seen)
    assert all(r.headers["x-tinker-request-type"] == "ForwardBackward" for r in seen)


async def test_protobuf_is_an_added_codec_request_and_poll_result(make_client: MakeClient) -> None:
    """The real protobuf codec of tinkex-types through the same seam, nothing else changed."""
    from tinkex_types import (
        PROTOBUF_MEDIA_TYPE,
        Datum,
        ForwardBackwardInput,
        ForwardBackwardOutput,
        ForwardBackwardRequest,
        ModelInput,
        codec_for,
        decode_content,
    )

    codec = codec_for(PROTOBUF_MEDIA_TYPE)
    assert codec is not None
    datum = Datum(
        model_input=ModelInput.from_ints([1, 2, 3]),
        loss_fn_inputs={"target_tokens": [2, 3, 4], "weights": [1.0, 1.0, 1.0]},
    )
    request = ForwardBackwardRequest(
        model_id="m-1",
        seq_id=1,
        forward_backward_input=ForwardBackwardInput(data=[datum], loss_fn="cross_entropy"),
    )
    output = ForwardBackwardOutput(
        loss_fn_output_type="cross_entropy", loss_fn_outputs=[], metrics={"loss:sum": 1.5}
    )
    received: list[ForwardBackwardRequest] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/api/v1/forward_backward"):
            body = decode_content(req.content, req.headers.get("content-encoding"))
            received.append(codec.decode(ForwardBackwardRequest, body))
            return httpx.Response(200, json={"request_id": "fb-1"})
        return httpx.Response(
            200, content=codec.encode(output), headers={"content-type": PROTOBUF_MEDIA_TYPE}
        )

    async with make_client(handler) as http:
        submitted = await http.post_model(
            "/api/v1/forward_backward",
            request,
            media_type=PROTOBUF_MEDIA_TYPE,
            compress="zstd",
            request_type="ForwardBackward",
        )
        result = await APIFutureResolver(
            http,
            submitted["request_id"],
            request_type="ForwardBackward",
            result_model=ForwardBackwardOutput,
            accept=(PROTOBUF_MEDIA_TYPE,),
        )
    assert received == [request]
    assert result == output
