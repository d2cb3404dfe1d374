"""tinker 0.38.0's forward_backward request encoding, timed in its own venv (stdlib + tinker).

``python official_encode.py N SEQ_LEN ROUNDS`` (with ``PYTHONPATH`` at the repo root for
``bench._data``) builds the same seeded batch as P2, then times, in CPU time of the calling
thread, what 0.38's ``TrainingClient.forward_backward`` does on the caller's side: build
``tinker.types.Datum`` from Python lists or from numpy arrays, chunk by its protobuf size
estimate, build ``ForwardBackwardRequest``, ``forward_backward_request_to_proto`` and
``SerializeToString`` (``resources/training.py``), and hand the bytes to ``httpx.Request``.
Prints one JSON line: the per-round times for each source and the body size.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from typing import Any

URL = "http://127.0.0.1:1/api/v1/forward_backward"
MODEL_ID = "bench-session:train:0"


def pipeline(batch: list[tuple[Any, Any, Any]]) -> bytes:
    import httpx
    from tinker import types as T
    from tinker.lib.public_interfaces.training_client import _estimate_datum_bytes_count_proto
    from tinker.proto.request_conv import forward_backward_request_to_proto

    data = [
        T.Datum(
            model_input=T.ModelInput.from_ints(list(tokens)),
            loss_fn_inputs={"target_tokens": targets, "weights": weights},
        )
        for tokens, targets, weights in batch
    ]
    chunks: list[list[Any]] = []
    current: list[Any] = []
    size_now = 0
    for datum in data:  # its chunking: 1024 datums or ~5 MB estimated per request
        size = _estimate_datum_bytes_count_proto(datum)
        if current and (len(current) == 1024 or size_now + size > 5_000_000):
            chunks.append(current)
            current, size_now = [], 0
        current.append(datum)
        size_now += size
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
        content = forward_backward_request_to_proto(request).SerializeToString()
        body += httpx.Request(
            "POST", URL, content=content, headers={"Content-Type": "application/x-protobuf"}
        ).content
    return body


def main(n: int, seq_len: int, rounds: int) -> None:
    import numpy as np

    from bench._data import make_examples

    examples = make_examples(n, seq_len, seed=2)
    sources = {
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
    out: dict[str, Any] = {"times": {k: [] for k in sources}, "bytes": 0}
    for batch in sources.values():
        pipeline(batch[:2])  # warm-up
    for _ in range(rounds):
        for name, batch in sources.items():
            gc.collect()
            start = time.thread_time()
            body = pipeline(batch)
            out["times"][name].append(time.thread_time() - start)
            out["bytes"] = len(body)
    print(json.dumps(out))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
