"""P4 future latency: from the server finishing a request to the client's future resolving.

A tinkex ``TrainingClient`` sends N small ``forward`` requests one at a time and takes
``time.time()`` the moment ``future.result()`` returns. The server's completion moment is
the ``completed_at`` wall-clock stamp it writes into its futures table (SQLite, WAL, read
here read-only after the run) when the engine's result is stored, before any poll answer
is built. Both clocks are the same host's ``CLOCK_REALTIME``. Requests are matched by the
model's ``seq_id``. The official 0.16.1 client runs the same sequence for reference.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Final

from bench._clients import SMALL_MODEL, close_quietly, tinker_service, tinkex_service
from bench._data import make_examples
from bench._harness import Context, Row, log, median, percentile

KEY = "p4"
TITLE = "future latency, server done → future resolved"
OP: Final = "<="
TARGET = 5.0
UNIT = "ms"


def _completed_at(db_path: Any, model_id: str, request_type: str) -> dict[int, float]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30.0)
    try:
        rows = conn.execute(
            "SELECT seq_id, completed_at FROM futures "
            "WHERE target=? AND request_type=? AND completed_at IS NOT NULL",
            (model_id, request_type),
        ).fetchall()
    finally:
        conn.close()
    return {int(seq): float(done) for seq, done in rows}


def _drive(training: Any, datum: Any, n: int) -> list[tuple[int, float]]:
    """Send ``n`` forwards one after another; returns (position, resolved wall time)."""
    out: list[tuple[int, float]] = []
    for i in range(n):
        fut = training.forward([datum], "cross_entropy")
        fut.result()
        out.append((i, time.time()))
    return out


def _latencies(
    ctx: Context, model_id: str, resolved: list[tuple[int, float]], first_seq: int
) -> list[float]:
    done = _completed_at(ctx.server().db_path, model_id, "Forward")
    lat: list[float] = []
    for i, t_client in resolved:
        seq = first_seq + i
        if seq not in done:
            raise RuntimeError(
                f"no completed_at for {model_id} seq_id {seq} in the server's futures table"
            )
        lat.append((t_client - done[seq]) * 1e3)
    return lat


def run(ctx: Context) -> Row:
    n, warm = (3, 1) if ctx.tiny else (100, 5)
    url = ctx.server().base_url
    ex = make_examples(1, 32, seed=4)[0]
    log(f"p4: {n} sequential forward() calls (1×32 tokens, {SMALL_MODEL}) per client")

    from tinker import types as T

    from tinkex_types import Datum, ModelInput

    tx_datum = Datum(
        model_input=ModelInput.from_ints(ex.tokens),
        loss_fn_inputs={"target_tokens": ex.targets, "weights": ex.weights},  # type: ignore[dict-item]
    )
    tk_datum = T.Datum(
        model_input=T.ModelInput.from_ints(ex.tokens),
        loss_fn_inputs={"target_tokens": ex.targets, "weights": ex.weights},
    )
    results: dict[str, list[float]] = {}
    for name, make, datum in (
        ("tinkex", tinkex_service, tx_datum),
        ("tinker", tinker_service, tk_datum),
    ):
        service = make(url)
        try:
            training = service.create_lora_training_client(SMALL_MODEL, rank=4)
            _drive(training, datum, warm)
            resolved = _drive(training, datum, n)
            model_id = str(training.model_id)
        finally:
            close_quietly(service)
        # Training seq_ids start at 1 after creation; the warm-up took the first ``warm``.
        results[name] = _latencies(ctx, model_id, resolved, first_seq=warm + 1)
    tx, tk = results["tinkex"], results["tinker"]
    value = median(tx)
    detail = (
        f"tinkex median {median(tx):.2f} ms, p99 {percentile(tx, 99):.2f} ms; "
        f"tinker median {median(tk):.2f} ms, p99 {percentile(tk, 99):.2f} ms "
        f"({n} forwards each)"
    )
    return Row(
        key=KEY,
        title=f"{TITLE} (tinkex median)",
        value=value,
        unit=UNIT,
        op=OP,
        target=TARGET,
        detail=detail,
        extra={
            "tinkex_ms": {"median": median(tx), "p99": percentile(tx, 99), "min": min(tx)},
            "tinker_ms": {"median": median(tk), "p99": percentile(tk, 99), "min": min(tk)},
            "n": n,
        },
    )
