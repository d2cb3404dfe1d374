"""P2 request encoding: build and serialise one forward_backward request, tinkex vs tinker.

Both pipelines start from the same plain Python lists (tokens, targets, weights) and end
with the JSON bytes of an ``httpx.Request``, doing what each client does on the caller's
side of ``TrainingClient.forward_backward``:

* tinkex: ``tinkex_types.Datum`` / ``ModelInput.from_ints`` per example, the client's input
  checks and chunking (``tinkex_clients``), ``ForwardBackwardRequest(...).to_json_dict()``
  and ``tinkex_http.encode_json`` (orjson), as ``HTTPClient`` sends it.
* tinker 0.16.1: ``tinker.types.Datum`` / ``ModelInput.from_ints``, its chunk-size
  estimate, ``ForwardBackwardRequest``, ``model_dump(exclude_unset=True, mode="json")``
  (``resources/training.py``) and ``httpx.Request(json=...)`` (``json.dumps``, what its
  ``_build_request`` hands to httpx).

The reference ceiling is ``orjson.dumps`` / ``json.dumps`` of a plain dict holding the same
lists (no models, no checks). Rounds alternate between the pipelines; each is timed in CPU
time of the calling thread (``time.thread_time``: the work is single-threaded, and CPU time
is not inflated when other processes take the core away), medians are used.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import httpx
import orjson

from bench._data import Example, make_examples
from bench._harness import Context, Row, log, median

KEY = "p2"
OP: Final = ">="
TARGET = 3.0
UNIT = "×"
TITLE = "request encoding, forward_backward"
URL = "http://127.0.0.1:1/api/v1/forward_backward"
MODEL_ID = "bench-session:train:0"


def tinkex_pipeline(examples: list[Example]) -> bytes:
    from tinkex_clients import chunk_data
    from tinkex_clients._validate import as_data, as_loss_fn, check_loss_inputs
    from tinkex_http import encode_json
    from tinkex_types import Datum, ForwardBackwardInput, ForwardBackwardRequest, ModelInput

    data = [
        Datum(
            model_input=ModelInput.from_ints(ex.tokens),
            loss_fn_inputs={"target_tokens": ex.targets, "weights": ex.weights},  # type: ignore[dict-item]
        )
        for ex in examples
    ]
    # TrainingClient._prepare: the same checks and chunking the client runs.
    datums = as_data(data)
    loss = as_loss_fn("cross_entropy")
    check_loss_inputs(datums, loss)
    chunks = chunk_data(datums)
    body = b""
    for seq, chunk in enumerate(chunks, start=1):
        request = ForwardBackwardRequest(
            forward_backward_input=ForwardBackwardInput(
                data=chunk, loss_fn="cross_entropy", loss_fn_config=None
            ),
            model_id=MODEL_ID,
            seq_id=seq,
        )
        content = encode_json(request.to_json_dict())
        body += httpx.Request("POST", URL, content=content).content
    return body


def tinker_pipeline(examples: list[Example]) -> bytes:
    from tinker import types as T
    from tinker._compat import model_dump

    data = [
        T.Datum(
            model_input=T.ModelInput.from_ints(ex.tokens),
            loss_fn_inputs={"target_tokens": ex.targets, "weights": ex.weights},
        )
        for ex in examples
    ]
    # TrainingClient._chunked_requests_generator (MAX_CHUNK_LEN 1024, 5 MB estimate).
    chunks: list[list[Any]] = []
    current: list[Any] = []
    current_bytes = 0
    for datum in data:
        size = sum(c.length * 10 for c in datum.model_input.chunks) + sum(
            len(v.data) * 10 for v in datum.loss_fn_inputs.values()
        )
        if (current and current_bytes + size > 5_000_000) or len(current) == 1024:
            chunks.append(current)
            current, current_bytes = [], 0
        current.append(datum)
        current_bytes += size
    if current:
        chunks.append(current)
    body = b""
    for seq, chunk in enumerate(chunks, start=1):
        request = T.ForwardBackwardRequest(
            forward_backward_input=T.ForwardBackwardInput(
                data=chunk, loss_fn="cross_entropy", loss_fn_config=None
            ),
            model_id=MODEL_ID,
            seq_id=seq,
        )
        payload = model_dump(request, exclude_unset=True, mode="json")
        body += httpx.Request("POST", URL, json=payload).content
    return body


def _plain(examples: list[Example]) -> dict[str, Any]:
    return {
        "forward_backward_input": {
            "data": [
                {
                    "model_input": {"chunks": [{"tokens": ex.tokens}]},
                    "loss_fn_inputs": {
                        "target_tokens": {"data": ex.targets, "dtype": "int64"},
                        "weights": {"data": ex.weights, "dtype": "float32"},
                    },
                }
                for ex in examples
            ],
            "loss_fn": "cross_entropy",
        },
        "model_id": MODEL_ID,
        "seq_id": 1,
    }


def orjson_ceiling(examples: list[Example]) -> bytes:
    return orjson.dumps(_plain(examples))


def json_ceiling(examples: list[Example]) -> bytes:
    return json.dumps(_plain(examples), separators=(",", ":")).encode()


def _measure(
    fns: Mapping[str, Callable[[list[Example]], bytes]], examples: list[Example], rounds: int
) -> tuple[dict[str, list[float]], dict[str, int]]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    sizes: dict[str, int] = {}
    for name, fn in fns.items():  # warm-up: imports, pydantic schema caches
        sizes[name] = len(fn(examples[:2]))
    for _ in range(rounds):
        for name, fn in fns.items():
            gc.collect()
            start = time.thread_time()
            out = fn(examples)
            times[name].append(time.thread_time() - start)
            sizes[name] = len(out)
            del out
    return times, sizes


def run(ctx: Context) -> Row:
    n, seq_len, rounds = (4, 128, 2) if ctx.tiny else (64, 2048, 7)
    examples = make_examples(n, seq_len, seed=2)
    log(f"p2: {n} datums x {seq_len} tokens, {rounds} alternating rounds")
    fns = {
        "tinkex": tinkex_pipeline,
        "tinker": tinker_pipeline,
        "orjson": orjson_ceiling,
        "json": json_ceiling,
    }
    times, sizes = _measure(fns, examples, rounds)
    med = {name: median(ts) for name, ts in times.items()}
    mbps = {name: sizes[name] / med[name] / 1e6 for name in fns}
    ratio = med["tinker"] / med["tinkex"]
    detail = (
        f"CPU time: tinkex {med['tinkex'] * 1e3:.0f} ms ({mbps['tinkex']:.0f} MB/s), "
        f"tinker {med['tinker'] * 1e3:.0f} ms ({mbps['tinker']:.0f} MB/s); "
        f"ceiling orjson {mbps['orjson']:.0f} MB/s, json {mbps['json']:.0f} MB/s; "
        f"body {sizes['tinkex'] / 1e6:.1f} MB"
    )
    return Row(
        key=KEY,
        title=f"{TITLE} {n}×{seq_len} + weights (speed-up)",
        value=ratio,
        unit="×",
        op=">=",
        target=3.0,
        detail=detail,
        extra={
            "median_s": med,
            "mb_per_s": mbps,
            "bytes": sizes,
            "datums": n,
            "seq_len": seq_len,
            "rounds": rounds,
        },
    )
