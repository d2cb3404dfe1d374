"""P6 sampling through the full stack against the engine's own decode of the same prompts.

N distinct 8-token prompts (seeded, ``max_tokens`` fixed) on a built-in base model:

* full stack, concurrent: N ``sample`` futures submitted at once through one tinkex
  ``SamplingClient`` (HTTP to the shared ``tinkex serve``), then all awaited;
* full stack, one by one: ``sample(...).result()`` N times;
* the limit, in a fresh process with the server's torch thread count and no HTTP, futures
  or client: ``tinkex_server.Engine().sample_batch`` of the same N requests at once (the
  engine's batched decode, its default row batch as in the server), and ``Engine.sample``
  of each request alone (the bare single decode).

Two rows: ``p6-batch`` = concurrent stack tokens/s over the engine's batched tokens/s
(target ≥ 0.5×); ``p6-seq`` = per-request overhead of the one-by-one stack, its mean time
per request minus the engine's single-decode mean (target ≤ 3 ms). Stack rounds alternate.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

from bench._clients import SMALL_MODEL, close_quietly, tinkex_service
from bench._harness import Context, Row, log, median, rounds_within

KEY = "p6"
TITLE = "sampling"
OP: Final = ">="
TARGET = 0.5
UNIT = "×"
SEQ_TARGET_MS = 3.0


def _prompts(n: int) -> list[list[int]]:
    rng = random.Random(6)
    return [[rng.randrange(5, 1024) for _ in range(8)] for _ in range(n)]


def _engine_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in the fresh subprocess: the engine alone."""
    import torch

    from tinkex_server import Engine
    from tinkex_server._engine import SampleRequest

    torch.set_num_threads(spec["threads"])
    engine = Engine(seed=0)
    engine.load_base_model(spec["model"])
    reqs = [
        SampleRequest(prompt=p, max_tokens=spec["max_tokens"], base_model=spec["model"], seed=i)
        for i, p in enumerate(spec["prompts"])
    ]
    engine.sample_batch(reqs[:4])  # warm-up
    batch_s: list[float] = []
    tokens = 0
    for _ in range(spec["rounds"]):
        start = time.perf_counter()
        out = engine.sample_batch(reqs)
        batch_s.append(time.perf_counter() - start)
        tokens = sum(len(s.tokens) for r in out for s in r.sequences)
    start = time.perf_counter()
    for req in reqs:
        engine.sample(req)
    single_s = (time.perf_counter() - start) / len(reqs)
    return {"batch_s": batch_s, "tokens": tokens, "single_s": single_s}


def _engine_in_subprocess(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.p6_concurrency"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"engine subprocess failed:\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _stack(url: str, prompts: list[list[int]], max_tokens: int, rounds: int) -> dict[str, Any]:
    from tinkex_types import ModelInput, SamplingParams

    inputs = [ModelInput.from_ints(p) for p in prompts]
    params = [SamplingParams(max_tokens=max_tokens, seed=i) for i in range(len(prompts))]
    service = tinkex_service(url)
    times: dict[str, list[float]] = {"seq": [], "conc": []}
    tokens: dict[str, int] = {}
    try:
        sampler = service.create_sampling_client(base_model=SMALL_MODEL)
        for i in range(min(len(inputs), 4)):  # warm-up
            sampler.sample(inputs[i], 1, params[i]).result()

        def sequential() -> list[Any]:
            return [sampler.sample(p, 1, sp).result() for p, sp in zip(inputs, params, strict=True)]

        def concurrent() -> list[Any]:
            futures = [sampler.sample(p, 1, sp) for p, sp in zip(inputs, params, strict=True)]
            return [f.result() for f in futures]

        for r in rounds_within(rounds, 100, KEY):
            order = [("seq", sequential), ("conc", concurrent)]
            if r % 2:
                order.reverse()
            for name, fn in order:
                start = time.perf_counter()
                out = fn()
                times[name].append(time.perf_counter() - start)
                tokens[name] = sum(len(s.tokens) for resp in out for s in resp.sequences)
    finally:
        close_quietly(service)
    return {"times": times, "tokens": tokens}


def run(ctx: Context) -> list[Row]:
    n, max_tokens, rounds = (8, 4, 1) if ctx.tiny else (256, 16, 2)
    url = ctx.server().base_url
    log(f"p6: {n} sample requests ({max_tokens} tokens each, {SMALL_MODEL}), {rounds} rounds")
    prompts = _prompts(n)
    stack = _stack(url, prompts, max_tokens, rounds)
    engine = _engine_in_subprocess(
        {
            "model": SMALL_MODEL,
            "prompts": prompts,
            "max_tokens": max_tokens,
            "rounds": rounds,
            "threads": ctx.torch_threads,
        }
    )
    seq, conc = median(stack["times"]["seq"]), median(stack["times"]["conc"])
    eng = median(engine["batch_s"])
    conc_tps = stack["tokens"]["conc"] / conc
    eng_tps = engine["tokens"] / eng
    seq_ms = seq / n * 1e3
    single_ms = engine["single_s"] * 1e3
    extra = {
        "n": n,
        "max_tokens": max_tokens,
        "stack": stack,
        "engine": engine,
        "concurrent_over_sequential": seq / conc,
    }
    batch = Row(
        key=f"{KEY}-batch",
        title=f"{TITLE}: {n} concurrent through the stack (tokens/s vs engine batched decode)",
        value=conc_tps / eng_tps,
        unit=UNIT,
        op=OP,
        target=TARGET,
        detail=(
            f"stack concurrent {conc_tps:,.0f} tok/s ({conc:.2f} s), engine sample_batch "
            f"{eng_tps:,.0f} tok/s ({eng:.2f} s); {engine['tokens']} tokens; stack "
            f"concurrent/one-by-one {seq / conc:.2f}×"
        ),
        extra=extra,
    )
    sequential = Row(
        key=f"{KEY}-seq",
        title=f"{TITLE}: one by one, overhead per request over a bare single decode",
        value=seq_ms - single_ms,
        unit="ms",
        op="<=",
        target=SEQ_TARGET_MS,
        detail=(
            f"stack {seq_ms:.1f} ms/request, engine.sample alone {single_ms:.1f} ms/request "
            f"({max_tokens} tokens)"
        ),
        extra=extra,
    )
    return [batch, sequential]


if __name__ == "__main__":
    print(json.dumps(_engine_child(json.loads(sys.stdin.read()))))
