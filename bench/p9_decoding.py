"""P9 request decoding on the server: one forward_backward of 64 datums × 2048 tokens (with
weights) decoded by ``tinkex serve`` from protobuf vs from JSON.

Both bodies are what the official clients send: protobuf as 0.25+ write it
(``tinker_public.ForwardBackwardRequest``, packed int32 tokens, raw little-endian float32
and int64 tensors; also timed zstd-compressed, as with ``proto_compress_fwdbwd``) and JSON
as 0.16.1 writes it. Each body goes through the server's own codec seam,
``tinkex_server._wire.decode_request`` (Content-Encoding, Content-Type, codec, pydantic
model), on a Starlette ``Request`` built around the bytes, and ends as the
``ForwardBackwardRequest`` the training service receives. Rounds alternate between the
encodings; CPU time of the calling thread, medians.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Callable
from typing import Any, Final

from bench._data import Example, make_examples
from bench._harness import Context, Row, log, median

KEY = "p9"
OP: Final = ">="
TARGET = 2.0
UNIT = "×"
TITLE = "server decoding, forward_backward"
MODEL_ID = "bench-session:train:0"


def _json_body(examples: list[Example]) -> bytes:
    body = {
        "forward_backward_input": {
            "data": [
                {
                    "model_input": {"chunks": [{"tokens": ex.tokens}]},
                    "loss_fn_inputs": {
                        "target_tokens": {
                            "data": ex.targets,
                            "dtype": "int64",
                            "shape": [len(ex.targets)],
                        },
                        "weights": {
                            "data": ex.weights,
                            "dtype": "float32",
                            "shape": [len(ex.weights)],
                        },
                    },
                }
                for ex in examples
            ],
            "loss_fn": "cross_entropy",
            "loss_fn_config": None,
        },
        "model_id": MODEL_ID,
        "seq_id": 1,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _bodies(examples: list[Example]) -> dict[str, tuple[bytes, dict[str, str]]]:
    from tinkex_types import PROTOBUF_MEDIA_TYPE, ForwardBackwardRequest, codec_for, encode_content

    json_body = _json_body(examples)
    codec = codec_for(PROTOBUF_MEDIA_TYPE)
    assert codec is not None
    proto = codec.encode(ForwardBackwardRequest.model_validate_json(json_body))
    return {
        "json": (json_body, {"content-type": "application/json"}),
        "protobuf": (proto, {"content-type": PROTOBUF_MEDIA_TYPE}),
        "protobuf+zstd": (
            encode_content(proto, "zstd"),
            {"content-type": PROTOBUF_MEDIA_TYPE, "content-encoding": "zstd"},
        ),
    }


def _decoder(body: bytes, headers: dict[str, str]) -> Callable[[], Any]:
    """One call decodes ``body`` through the server's seam, as a request to it would."""
    from fastapi import FastAPI
    from starlette.requests import Request

    from tinkex_server._wire import decode_request
    from tinkex_types import ForwardBackwardRequest

    app = FastAPI()
    raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
    loop = asyncio.new_event_loop()

    async def once() -> Any:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/api/v1/forward_backward",
            "headers": raw_headers,
            "app": app,
        }
        return await decode_request(Request(scope, receive), ForwardBackwardRequest)

    def call() -> Any:
        return loop.run_until_complete(once())

    return call


def run(ctx: Context) -> Row:
    n, seq_len, rounds = (4, 128, 2) if ctx.tiny else (64, 2048, 7)
    examples = make_examples(n, seq_len, seed=7)
    log(f"p9: {n} datums x {seq_len} tokens, {rounds} alternating rounds")
    bodies = _bodies(examples)
    calls = {name: _decoder(body, headers) for name, (body, headers) in bodies.items()}
    first = {name: call() for name, call in calls.items()}  # warm-up, and the same result
    tokens = {
        name: [list(d.model_input.chunks[0].tokens) for d in req.forward_backward_input.data]
        for name, req in first.items()
    }
    assert tokens["protobuf"] == tokens["json"] == tokens["protobuf+zstd"]
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            gc.collect()
            start = time.thread_time()
            call()
            times[name].append(time.thread_time() - start)
    med = {name: median(ts) for name, ts in times.items()}
    size = {name: len(body) for name, (body, _) in bodies.items()}
    ratio = med["json"] / med["protobuf"]
    detail = (
        f"CPU time: JSON {med['json'] * 1e3:.0f} ms ({size['json'] / 1e6:.1f} MB), "
        f"protobuf {med['protobuf'] * 1e3:.0f} ms ({size['protobuf'] / 1e6:.1f} MB), "
        f"protobuf+zstd {med['protobuf+zstd'] * 1e3:.0f} ms "
        f"({size['protobuf+zstd'] / 1e6:.1f} MB)"
    )
    return Row(
        key=KEY,
        title=f"{TITLE} {n}×{seq_len} + weights (protobuf speed-up over JSON)",
        value=ratio,
        unit=UNIT,
        op=OP,
        target=TARGET,
        detail=detail,
        extra={"median_s": med, "bytes": size, "datums": n, "seq_len": seq_len, "rounds": rounds},
    )
