"""P2 request encoding: build and serialise one forward_backward request, tinkex vs the
official clients of both wire generations, from Python lists and from numpy arrays.

Every pipeline starts from the same batch (tokens, targets, weights per datum; as lists or
as int64/float32 numpy arrays) and ends with the body bytes of an ``httpx.Request``, doing
what each client does on the caller's side of ``TrainingClient.forward_backward``:

* tinkex: ``tinkex_types.Datum`` / ``ModelInput.from_ints``, the client's input checks and
  chunking, ``ForwardBackwardRequest``, then JSON (``to_json_dict`` + orjson) or the
  protobuf ``WireCodec``;
* tinker 0.16.1 (JSON): its Datum conversion, chunk-size estimate, ``model_dump`` and
  ``httpx.Request(json=...)`` (``json.dumps``);
* tinker 0.38.0 (protobuf): ``bench/official_encode.py`` in its own venv (it cannot be
  installed next to 0.16.1): Datum, its protobuf chunk estimate,
  ``forward_backward_request_to_proto(...).SerializeToString()``.

One row per generation: tinkex JSON vs 0.16.1 (target ≥ 6×) and tinkex protobuf vs 0.38.0
(target ≥ 4×), each the worse of the lists and numpy figures. ``orjson.dumps`` /
``json.dumps`` of a plain dict holding the same lists are printed as the ceiling. CPU time
of the calling thread (``time.thread_time``), medians over alternating rounds.
"""

from __future__ import annotations

import array
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
TARGET = 6.0  # the JSON row; TARGETS below holds both
UNIT = "×"
TITLE = "request encoding, forward_backward"
URL = "http://127.0.0.1:1/api/v1/forward_backward"
MODEL_ID = "bench-session:train:0"


Batch = list[tuple[Any, Any, Any]]
"""(tokens, targets, weights) per datum: Python lists or numpy arrays."""


def _tinkex_requests(batch: Batch) -> list[Any]:
    from tinkex_clients import chunk_data
    from tinkex_clients._validate import as_data, as_loss_fn, check_loss_inputs
    from tinkex_types import Datum, ForwardBackwardInput, ForwardBackwardRequest, ModelInput

    data = [
        Datum(
            model_input=ModelInput.from_ints(tokens),
            loss_fn_inputs={"target_tokens": targets, "weights": weights},
        )
        for tokens, targets, weights in batch
    ]
    # TrainingClient._prepare: the same checks and chunking the client runs.
    datums = as_data(data)
    loss = as_loss_fn("cross_entropy")
    check_loss_inputs(datums, loss)
    return [
        ForwardBackwardRequest(
            forward_backward_input=ForwardBackwardInput(
                data=chunk, loss_fn="cross_entropy", loss_fn_config=None
            ),
            model_id=MODEL_ID,
            seq_id=seq,
        )
        for seq, chunk in enumerate(chunk_data(datums), start=1)
    ]


def tinkex_json(batch: Batch) -> bytes:
    """tinkex, JSON generation: ``to_json_dict`` + ``tinkex_http.encode_json`` (orjson)."""
    from tinkex_http import encode_json

    body = b""
    for request in _tinkex_requests(batch):
        content = encode_json(request.to_json_dict())
        body += httpx.Request("POST", URL, content=content).content
    return body


def tinkex_protobuf(batch: Batch) -> bytes:
    """tinkex, protobuf generation: the registered protobuf ``WireCodec`` (what
    ``HTTPClient.post_model`` sends; no zstd, as ``tinkex serve``'s flags say)."""
    import tinkex_types.proto  # noqa: F401  (registers the codec)
    from tinkex_types import PROTOBUF_MEDIA_TYPE, codec_for

    codec = codec_for(PROTOBUF_MEDIA_TYPE)
    body = b""
    for request in _tinkex_requests(batch):
        content = codec.encode(request)
        body += httpx.Request(
            "POST", URL, content=content, headers={"Content-Type": PROTOBUF_MEDIA_TYPE}
        ).content
    return body


def tinker_json(batch: Batch) -> bytes:
    """tinker 0.16.1: its Datum conversion, chunk estimate, ``model_dump`` and ``json.dumps``."""
    from tinker import types as T
    from tinker._compat import model_dump

    data = [
        T.Datum(
            model_input=T.ModelInput.from_ints(list(tokens)),
            loss_fn_inputs={"target_tokens": targets, "weights": weights},
        )
        for tokens, targets, weights in batch
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


def _plain(batch: Batch) -> dict[str, Any]:
    return {
        "forward_backward_input": {
            "data": [
                {
                    "model_input": {"chunks": [{"tokens": tokens}]},
                    "loss_fn_inputs": {
                        "target_tokens": {"data": targets, "dtype": "int64"},
                        "weights": {"data": weights, "dtype": "float32"},
                    },
                }
                for tokens, targets, weights in batch
            ],
            "loss_fn": "cross_entropy",
        },
        "model_id": MODEL_ID,
        "seq_id": 1,
    }


def orjson_ceiling(batch: Batch) -> bytes:
    return orjson.dumps(_plain(batch))


def json_ceiling(batch: Batch) -> bytes:
    return json.dumps(_plain(batch), separators=(",", ":")).encode()


def conversion_floor(batch: Batch) -> bytes:
    """The least any encoder does from Python lists: one C pass turning each list into
    packed little-endian bytes (``array``: int32 tokens, int64 targets, float32 weights),
    with no checks and no message around them."""
    parts = []
    for tokens, targets, weights in batch:
        parts += (
            array.array("i", tokens).tobytes(),
            array.array("q", targets).tobytes(),
            array.array("f", weights).tobytes(),
        )
    return b"".join(parts)


def _sources(examples: list[Example]) -> dict[str, Batch]:
    import numpy as np

    return {
        "lists": [(ex.tokens, ex.targets, ex.weights) for ex in examples],
        "numpy": [
            (
                np.asarray(ex.tokens, dtype=np.int64),
                np.asarray(ex.targets, dtype=np.int64),
                np.asarray(ex.weights, dtype=np.float32),
            )
            for ex in examples
        ],
    }


def _measure(
    fns: Mapping[str, Callable[[Batch], bytes]], sources: Mapping[str, Batch], rounds: int
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """CPU times per ``<fn>/<source>`` over alternating rounds, and body sizes per fn."""
    times: dict[str, list[float]] = {f"{f}/{s}": [] for f in fns for s in sources}
    sizes: dict[str, int] = {}
    for fn in fns.values():  # warm-up: imports, pydantic schema caches
        for batch in sources.values():
            fn(batch[:2])
    for _ in range(rounds):
        for name, fn in fns.items():
            for src, batch in sources.items():
                gc.collect()
                start = time.thread_time()
                out = fn(batch)
                times[f"{name}/{src}"].append(time.thread_time() - start)
                sizes[name] = len(out)
                del out
    return times, sizes


def _row(
    gen: str,
    ours: str,
    theirs: str,
    med: dict[str, float],
    ceiling: str,
    n: int,
    seq_len: int,
    sizes: dict[str, int],
) -> Row:
    target = TARGETS[gen]
    ratios = {src: med[f"{theirs}/{src}"] / med[f"{ours}/{src}"] for src in ("lists", "numpy")}
    parts = [
        f"from {src}: tinkex {med[f'{ours}/{src}'] * 1e3:.0f} ms, {LABEL[theirs]} "
        f"{med[f'{theirs}/{src}'] * 1e3:.0f} ms ({ratios[src]:.2f}×)"
        for src in ("lists", "numpy")
    ]
    return Row(
        key=f"{KEY}-{gen}",
        title=f"{TITLE} {n}×{seq_len} + weights, {gen} (worst of lists/numpy, {LABEL[theirs]}/tinkex)",
        value=min(ratios.values()),
        unit="×",
        op=">=",
        target=target,
        detail="CPU time " + "; ".join(parts) + f"; body {sizes[ours] / 1e6:.1f} MB; {ceiling}",
        extra={"ratios": ratios},
    )


#: Speed-up targets: over tinker 0.16.1's JSON path and over tinker 0.38.0's protobuf path.
TARGETS: Final = {"json": 6.0, "protobuf": 4.0}
LABEL: Final = {"tinker": "tinker 0.16.1", "tinker038": "tinker 0.38.0"}


def run(ctx: Context) -> list[Row]:
    n, seq_len, rounds = (4, 128, 2) if ctx.tiny else (64, 2048, 5)
    examples = make_examples(n, seq_len, seed=2)
    log(f"p2: {n} datums x {seq_len} tokens from lists and numpy, {rounds} alternating rounds")
    from bench._official import run_official_script

    official = run_official_script(
        "0.38.0", "official_encode.py", str(n), str(seq_len), str(rounds)
    )
    fns = {"tinkex_json": tinkex_json, "tinkex_protobuf": tinkex_protobuf, "tinker": tinker_json}
    times, sizes = _measure(fns, _sources(examples), rounds)
    for src, ts in official["times"].items():
        times[f"tinker038/{src}"] = ts
    sizes["tinker038"] = official["bytes"]
    ceil_times, ceil_sizes = _measure(
        {"orjson": orjson_ceiling, "json": json_ceiling, "floor": conversion_floor},
        {"lists": _sources(examples)["lists"]},
        rounds,
    )
    med = {name: median(ts) for name, ts in {**times, **ceil_times}.items()}
    mbps = {k: ceil_sizes[k] / med[f"{k}/lists"] / 1e6 for k in ceil_sizes}
    ceiling = (
        f"ceiling orjson {mbps['orjson']:.0f} MB/s, json {mbps['json']:.0f} MB/s of a plain dict"
        f"; floor from lists {med['floor/lists'] * 1e3:.1f} ms (one C pass packing each list)"
    )
    rows = [
        _row("json", "tinkex_json", "tinker", med, ceiling, n, seq_len, sizes),
        _row("protobuf", "tinkex_protobuf", "tinker038", med, ceiling, n, seq_len, sizes),
    ]
    for row in rows:
        row.extra.update(median_s=med, bytes=sizes, datums=n, seq_len=seq_len, rounds=rounds)
    return rows
