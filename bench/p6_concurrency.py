"""P6 concurrent sampling: N sample requests in flight at once vs the same N one by one.

A tinkex ``SamplingClient`` on a built-in base model samples N prompts (distinct prompts
and seeds, ``max_tokens`` fixed, so both runs generate the same token counts). Sequential:
``sample(...).result()`` N times. Concurrent: N ``sample(...)`` futures submitted at once,
then all awaited; the server batches what is queued. The figure is the throughput ratio
(sequential wall time / concurrent wall time). The two runs alternate (the order flips).
"""

from __future__ import annotations

import random
import time
from typing import Any, Final

from bench._clients import SMALL_MODEL, close_quietly, tinkex_service
from bench._harness import Context, Row, log, median, rounds_within

KEY = "p6"
TITLE = "concurrent sampling"
OP: Final = ">="
TARGET = 4.0
UNIT = "×"


def run(ctx: Context) -> Row:
    n, max_tokens, rounds = (8, 4, 1) if ctx.tiny else (256, 16, 2)
    url = ctx.server().base_url
    log(f"p6: {n} sample requests ({max_tokens} tokens each, {SMALL_MODEL}), {rounds} rounds")
    from tinkex_types import ModelInput, SamplingParams

    rng = random.Random(6)
    prompts = [ModelInput.from_ints([rng.randrange(5, 1024) for _ in range(8)]) for _ in range(n)]
    params = [SamplingParams(max_tokens=max_tokens, seed=i) for i in range(n)]
    service = tinkex_service(url)
    seq_s: list[float] = []
    conc_s: list[float] = []
    tokens: dict[str, int] = {}
    try:
        sampler = service.create_sampling_client(base_model=SMALL_MODEL)
        for i in range(min(n, 4)):  # warm-up
            sampler.sample(prompts[i], 1, params[i]).result()

        def sequential() -> list[Any]:
            return [
                sampler.sample(p, 1, sp).result() for p, sp in zip(prompts, params, strict=True)
            ]

        def concurrent() -> list[Any]:
            futures = [sampler.sample(p, 1, sp) for p, sp in zip(prompts, params, strict=True)]
            return [f.result() for f in futures]

        for r in rounds_within(rounds, 100, KEY):
            order = [("seq", sequential), ("conc", concurrent)]
            if r % 2:
                order.reverse()
            for name, fn in order:
                start = time.perf_counter()
                out = fn()
                elapsed = time.perf_counter() - start
                (seq_s if name == "seq" else conc_s).append(elapsed)
                tokens[name] = sum(len(s.tokens) for resp in out for s in resp.sequences)
    finally:
        close_quietly(service)
    seq, conc = median(seq_s), median(conc_s)
    ratio = seq / conc
    detail = (
        f"one by one {seq:.2f} s ({n / seq:.0f} req/s), concurrent {conc:.2f} s "
        f"({n / conc:.0f} req/s); {tokens.get('conc', 0)} tokens per run"
    )
    return Row(
        key=KEY,
        title=f"{TITLE}, {n} requests (throughput concurrent/sequential)",
        value=ratio,
        unit=UNIT,
        op=OP,
        target=TARGET,
        detail=detail,
        extra={
            "n": n,
            "max_tokens": max_tokens,
            "sequential_s": seq_s,
            "concurrent_s": conc_s,
            "tokens": tokens,
        },
    )
