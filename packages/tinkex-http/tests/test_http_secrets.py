"""Issue 17, finding 7: no secret is reachable from a raised exception or held in plain
text by an object (the httpx request behind ``__context__``/``__cause__`` included)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tinkex_http import HTTPClient, Secret, scrub_exception, scrub_request
from tinkex_http._messages import RequestOptions
from tinkex_http._pipeline import make_plan
from tinkex_http._wire import encode_body

MakeClient = Callable[..., HTTPClient]
CF_SECRET = "cf-SECRET-canary-abcdef0123456789"


def chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        cur = todo.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        todo += [e for e in (cur.__cause__, cur.__context__) if e is not None]


def reachable_text(exc: BaseException) -> str:
    """Everything an error reporter could print: each exception's str/repr/args/__dict__ and
    the headers (and their repr) of every request or response it holds."""
    parts: list[str] = []
    for cur in chain(exc):
        parts += [str(cur), repr(cur), repr(cur.args), repr(vars(cur))]
        for obj in (getattr(cur, "_request", None), getattr(cur, "response", None)):
            request = getattr(obj, "_request", obj)
            if isinstance(request, httpx.Request):
                parts += [repr(request.headers), repr(dict(request.headers)), repr(request)]
                parts += [v for _, v in request.headers.multi_items()]
    return "\n".join(parts)


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError, httpx.ReadError, httpx.ConnectTimeout, httpx.RemoteProtocolError],
)
async def test_connection_failure_chain_holds_no_secret(
    make_client: MakeClient, api_key: str, error: type[httpx.TransportError]
) -> None:
    sent: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        raise error("connection refused", request=request)

    async with make_client(
        respond, max_retries=0, cf_access_client_id="cid", cf_access_client_secret=CF_SECRET
    ) as http:
        with pytest.raises(Exception) as info:
            await http.get("/api/v1/healthz")
    assert sent
    assert sent[0].headers["x-api-key"] == "[REDACTED]"  # the sent request, scrubbed after
    # ... but nothing reachable from the raised error holds it (the old code kept the
    # plaintext key in __context__.request.headers).
    context = info.value.__context__
    assert isinstance(context, httpx.TransportError)
    assert context.request.headers["x-api-key"] == "[REDACTED]"
    assert context.request.headers["cf-access-client-secret"] == "[REDACTED]"
    text = reachable_text(info.value)
    assert api_key not in text
    assert CF_SECRET not in text


async def test_the_key_is_sent_on_the_wire(make_client: MakeClient, api_key: str) -> None:
    seen: list[str] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["x-api-key"])
        seen.append(request.headers.get("cf-access-client-secret", ""))
        return httpx.Response(200, json={})

    async with make_client(respond, cf_access_client_secret=CF_SECRET) as http:
        await http.get("/api/v1/healthz")
    assert seen == [api_key, CF_SECRET]


async def test_non_transport_error_from_transport_is_scrubbed(
    make_client: MakeClient, api_key: str
) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        raise httpx.DecodingError("bad gzip", request=request)

    async with make_client(respond, max_retries=0) as http:
        with pytest.raises(httpx.DecodingError) as info:
            await http.get("/api/v1/healthz")
    assert api_key not in reachable_text(info.value)


async def test_objects_hold_no_plaintext_key(make_client: MakeClient, api_key: str) -> None:
    async with make_client(lambda r: httpx.Response(200, json={})) as http:
        assert isinstance(http.secret_headers["x-api-key"], Secret)
        assert api_key not in repr(vars(http))
        assert api_key not in repr(http.static_headers)
        opts = RequestOptions()
        plan = make_plan(http, "POST", "/x", encode_body("POST", {"a": 1}), opts)
        assert api_key not in repr(plan)
        assert api_key not in repr(plan.headers)


def test_scrub_helpers_cover_responses_and_groups(api_key: str) -> None:
    request = httpx.Request("GET", "https://x.test/", headers={"x-api-key": api_key, "a": "b"})
    response = httpx.Response(500, request=request)
    status = httpx.HTTPStatusError("boom", request=request, response=response)
    group = ExceptionGroup("many", [RuntimeError("x")])
    group.__context__ = status
    scrub_exception(group)
    assert request.headers["x-api-key"] == "[REDACTED]"
    assert request.headers["a"] == "b"
    scrub_request(None)  # nothing to do
    gc.collect()


def test_secret_headers_from_default_headers_are_secrets(api_key: str) -> None:
    from tinkex_http import Config
    from tinkex_http._messages import secret_headers, static_headers

    cfg = Config(api_key=api_key, env={}, default_headers={"Authorization": "Bearer canary"})
    assert "authorization" not in static_headers(cfg)
    secrets: dict[str, Any] = secret_headers(cfg)
    assert secrets["authorization"].get_secret_value() == "Bearer canary"
    assert "canary" not in repr(secrets)
