"""SSE decoding (any split of the byte stream gives the same events) and streaming responses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinkex_http import HTTPClient, SSEDecoder, SSEEvent
from tinkex_types import BadRequestError

MakeClient = Callable[..., HTTPClient]

STREAM = (
    b": comment line\n"
    b"event: chunk\n"
    b"id: 1\n"
    b'data: {"tokens": [1, 2]}\n'
    b"\n"
    b"data: line one\r\n"
    b"data:line two\r\n"
    b"retry: 1500\r\n"
    b"\r\n"
    b"data: caf\xc3\xa9 \xe2\x9c\x93\r"
    b"\r"
    b"event: done\n"
    b"unknown: field\n"
    b"data\n"
    b"\n"
    b"data: unterminated"
)

EXPECTED = [
    SSEEvent(data='{"tokens": [1, 2]}', event="chunk", id="1"),
    SSEEvent(data="line one\nline two", retry=1500),
    SSEEvent(data="café ✓"),
    SSEEvent(data="", event="done"),
    SSEEvent(data="unterminated"),
]


def decode_in_pieces(stream: bytes, cuts: list[int]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    last = 0
    for cut in sorted(set(cuts)):
        events.extend(decoder.feed(stream[last:cut]))
        last = cut
    events.extend(decoder.feed(stream[last:]))
    events.extend(decoder.flush())
    return events


def test_whole_stream() -> None:
    assert decode_in_pieces(STREAM, []) == EXPECTED
    assert EXPECTED[0].json() == {"tokens": [1, 2]}


def test_byte_by_byte() -> None:
    assert decode_in_pieces(STREAM, list(range(len(STREAM)))) == EXPECTED


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    assert decode_in_pieces(STREAM, cuts) == EXPECTED


line_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"),
    max_size=12,
)
field = st.one_of(
    st.tuples(st.just("data"), line_text),
    st.tuples(st.just("event"), line_text),
    st.tuples(st.just("id"), line_text),
    st.tuples(st.just(""), line_text),  # comment
)


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(st.lists(field, min_size=1, max_size=4), max_size=6),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    data=st.data(),
)
def test_generated_streams_split_anywhere(
    events: list[list[tuple[str, str]]], newline: str, data: st.DataObject
) -> None:
    text = ""
    for fields in events:
        for name, value in fields:
            text += f"{name}: {value}{newline}" if name else f":{value}{newline}"
        text += newline
    stream = text.encode()
    whole = decode_in_pieces(stream, [])
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20))
    assert decode_in_pieces(stream, cuts) == whole
    assert len(whole) == sum(1 for fields in events if any(name for name, _ in fields))


async def chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_streaming_response_yields_events_and_json(make_client: MakeClient) -> None:
    body = b'data: {"a": 1}\n\ndata: not json\n\ndata: {"b": 2}\n\n'
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        pieces = [body[i : i + 5] for i in range(0, len(body), 5)]
        return httpx.Response(
            200, content=chunks(pieces), headers={"content-type": "text/event-stream"}
        )

    async with make_client(handler) as http:
        async with http.stream("POST", "/api/v1/stream_sample", body={"x": 1}) as response:
            assert response.status_code == 200
            items = [item async for item in response.iter_json()]
    assert items == [{"a": 1}, {"b": 2}]
    assert seen[0].headers["accept"] == "text/event-stream"


async def test_streaming_error_status_raises_before_yielding(make_client: MakeClient) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"detail": "bad prompt"})

    async with make_client(handler) as http:
        with pytest.raises(BadRequestError, match="bad prompt"):
            async with http.stream("POST", "/api/v1/stream_sample", body={}):
                raise AssertionError("must not be reached")
