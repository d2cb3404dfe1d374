"""Concurrent sampling: many requests in flight at once, with futures and with asyncio.

Run it with ``hatch run python examples/concurrent_sampling.py``. By default it talks to the
local server embedded in tinkex (``local://``); with ``TINKER_BASE_URL`` and
``TINKER_API_KEY`` set it runs unchanged against the Tinker service (pick a real model with
``--model``).

What it shows: ``SamplingClient.sample`` returns a future at once, so submitting every
request before waiting on any keeps them all in flight (the server batches them);
``sample_async`` does the same from asyncio code with ``asyncio.gather``. Each request
carries its own ``seed``, so the completions do not depend on how requests were scheduled:
the concurrent results equal the one-at-a-time results, only faster.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

import tinkex as tinker
from tinkex import types

DEFAULT_MODEL = "tinkex/tiny-llama-100k"
PROMPTS = ["Once upon a time", "The weather today", "My favourite food", "In the morning"]


@dataclass
class ConcurrentResult:
    """What the run produced (the test reads it): the tokens of every request, per mode."""

    sequential: list[list[int]] = field(default_factory=list)
    with_futures: list[list[int]] = field(default_factory=list)
    with_asyncio: list[list[int]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def requests_for(
    tokenizer: Any, count: int, max_tokens: int, seed: int
) -> list[tuple[types.ModelInput, types.SamplingParams]]:
    """``count`` requests cycling over the prompts, each with its own seed."""
    out = []
    for i in range(count):
        ids = tokenizer.encode(PROMPTS[i % len(PROMPTS)], add_special_tokens=True)
        params = types.SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=seed + i)
        out.append((types.ModelInput.from_ints(ids), params))
    return out


def run(
    *,
    base_url: str | None = None,
    model: str = DEFAULT_MODEL,
    requests: int = 32,
    max_tokens: int = 16,
    seed: int = 0,
    console: Console | None = None,
) -> ConcurrentResult:
    console = console or Console()
    result = ConcurrentResult()
    base_url = base_url or os.environ.get("TINKER_BASE_URL") or "local://"
    console.print(
        f"[bold]tinkex concurrent sampling[/] against [cyan]{base_url}[/] with [cyan]{model}[/]"
    )

    with tinker.ServiceClient(base_url=base_url) as service:
        sampler = service.create_sampling_client(base_model=model)
        tokenizer = sampler.get_tokenizer()
        batch = requests_for(tokenizer, requests, max_tokens, seed)

        # 1. One at a time: wait for each result before sending the next request.
        started = time.perf_counter()
        for prompt, params in batch:
            response = sampler.sample(prompt=prompt, num_samples=1, sampling_params=params)
            result.sequential.append(response.result().sequences[0].tokens)
        result.seconds["one at a time"] = time.perf_counter() - started

        # 2. Futures: submit everything, then collect the results in order.
        started = time.perf_counter()
        futures = [
            sampler.sample(prompt=prompt, num_samples=1, sampling_params=params)
            for prompt, params in batch
        ]
        result.with_futures = [f.result().sequences[0].tokens for f in futures]
        result.seconds["futures"] = time.perf_counter() - started

        # 3. asyncio: sample_async returns the response itself; gather keeps the order.
        async def sample_all() -> list[types.SampleResponse]:
            return await asyncio.gather(
                *(
                    sampler.sample_async(prompt=prompt, num_samples=1, sampling_params=params)
                    for prompt, params in batch
                )
            )

        started = time.perf_counter()
        result.with_asyncio = [r.sequences[0].tokens for r in asyncio.run(sample_all())]
        result.seconds["asyncio.gather"] = time.perf_counter() - started

        first = tokenizer.decode(result.sequential[0], skip_special_tokens=True)
        console.print(f"request 0: {PROMPTS[0]!r} → {first!r}")

    table = Table(title=f"{requests} seeded sample requests")
    table.add_column("mode", style="bold")
    table.add_column("seconds", justify="right")
    table.add_column("same tokens as one at a time")
    outputs = [result.sequential, result.with_futures, result.with_asyncio]
    for (mode, seconds), tokens in zip(result.seconds.items(), outputs, strict=True):
        table.add_row(mode, f"{seconds:.2f}", str(tokens == result.sequential))
    console.print(table)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=None, help="default: $TINKER_BASE_URL or local://")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run(
        base_url=args.base_url,
        model=args.model,
        requests=args.requests,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
