"""P3 training throughput: the full stack vs a bare torch loop of the same model and LoRA.

Full stack: tinkex ``TrainingClient`` → HTTP (loopback) → ``tinkex serve`` → engine; one
step is ``forward_backward(batch, "cross_entropy")`` and ``optim_step(AdamParams)``
submitted back to back, then both results awaited. Bare loop:
``tinkex_server``'s ``bare_training_loop`` (the engine's decoder and LoRA code, a padded
batch, ``-sum(logprobs)``, ``backward``, ``torch.optim.AdamW``; no engine, validation,
serialisation, HTTP or futures) in this process. Same model, batch (the same token ids),
LoRA rank and seed, AdamW hyper-parameters and torch thread count (the server's default,
which is torch's default). The figure is the ratio of trained tokens per second at the
median step time; measured rounds alternate between the two.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Final

from bench._clients import close_quietly, tinkex_service
from bench._harness import Context, Row, log

KEY = "p3"
TITLE = "training throughput"
OP: Final = ">="
TARGET = 0.9
UNIT = "×"

LEARNING_RATE = 1e-3


def _sequences(batch: int, seq_len: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(seq_len + 1)] for _ in range(batch)]


def run(ctx: Context) -> Row:
    # (model, batch, seq_len, rank, steps, warmup, rounds)
    sizes: dict[bool, tuple[str, int, int, int, int, int, int]] = {
        True: ("tinkex/tiny-llama-100k", 2, 16, 4, 1, 1, 1),
        False: ("tinkex/tiny-llama-1m", 8, 128, 8, 5, 2, 2),
    }
    model, batch, seq_len, rank, steps, warmup, rounds = sizes[ctx.tiny]
    import torch

    from tinkex_server import bare_training_loop
    from tinkex_types import AdamParams, Datum, ModelInput

    url = ctx.server().base_url
    sequences = _sequences(batch, seq_len, 1024, seed=3)
    log(
        f"p3: {model}, batch {batch}x{seq_len}, LoRA rank {rank}, {rounds} rounds of "
        f"{warmup}+{steps} steps each side; torch threads {torch.get_num_threads()}"
    )
    data = [
        Datum(
            model_input=ModelInput.from_ints(seq[:-1]),
            loss_fn_inputs={"target_tokens": seq[1:], "weights": [1.0] * seq_len},  # type: ignore[dict-item]
        )
        for seq in sequences
    ]
    adam = AdamParams(learning_rate=LEARNING_RATE, beta1=0.9, beta2=0.95, eps=1e-12)
    service = tinkex_service(url)
    bare_steps: list[float] = []
    stack_steps: list[float] = []
    losses: dict[str, float] = {}
    try:
        training = service.create_lora_training_client(model, rank=rank, seed=0)
        for r in range(rounds):
            result = bare_training_loop(
                model,
                rank=rank,
                steps=steps,
                warmup=warmup,
                learning_rate=LEARNING_RATE,
                seed=0,
                sequences=sequences,
            )
            bare_steps.extend(result.step_seconds)
            if r == 0:
                losses["bare_first"] = result.losses[0]
            for i in range(warmup + steps):
                start = time.perf_counter()
                fb = training.forward_backward(data, "cross_entropy")
                opt = training.optim_step(adam)
                out = fb.result()
                opt.result()
                elapsed = time.perf_counter() - start
                if i >= warmup:
                    stack_steps.append(elapsed)
                if r == 0 and i == 0:
                    losses["stack_first"] = float(out.metrics.get("loss:sum", float("nan")))
    finally:
        close_quietly(service)
    tokens = batch * seq_len
    bare_tps = tokens / statistics.median(bare_steps)
    stack_tps = tokens / statistics.median(stack_steps)
    ratio = stack_tps / bare_tps
    detail = (
        f"stack {stack_tps:,.0f} tok/s ({statistics.median(stack_steps) * 1e3:.0f} ms/step), "
        f"bare torch {bare_tps:,.0f} tok/s ({statistics.median(bare_steps) * 1e3:.0f} ms/step); "
        f"{model} {batch}×{seq_len}, rank {rank}"
    )
    return Row(
        key=KEY,
        title=f"{TITLE} (tokens/s stack/bare)",
        value=ratio,
        unit=UNIT,
        op=OP,
        target=TARGET,
        detail=detail,
        extra={
            "model": model,
            "batch": batch,
            "seq_len": seq_len,
            "rank": rank,
            "stack_step_s": stack_steps,
            "bare_step_s": bare_steps,
            "first_loss": losses,
            "torch_threads": torch.get_num_threads(),
        },
    )
