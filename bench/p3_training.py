"""P3 training throughput: the full stack vs a bare torch loop of the same model and LoRA.

Full stack: tinkex ``TrainingClient`` → HTTP (loopback) → ``tinkex serve`` → engine; one
step is ``forward_backward(batch, "cross_entropy")`` and ``optim_step(AdamParams)``
submitted back to back, then both results awaited. Bare loop: ``tinkex_server``'s
``bare_training_loop`` (the engine's decoder and LoRA code, a padded batch,
``-sum(logprobs)``, ``backward``, ``torch.optim.AdamW``; no engine, validation,
serialisation, HTTP or futures), run in a fresh Python process like the server. Same
model, batch (the same token ids), LoRA rank and seed, AdamW hyper-parameters and torch
thread count (torch's default in both processes, as ``tinkex serve`` uses it). The stack
runs twice: over HTTP to the shared ``tinkex serve`` subprocess (row ``p3-http``) and
in-process through ``local://`` (row ``p3-local``; the engine shares this process). The figure
is the ratio of trained tokens per second at the median step time; measured rounds
alternate between the two.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

from bench._clients import close_quietly, tinkex_service
from bench._harness import Context, Row, log, rounds_within

KEY = "p3"
TITLE = "training throughput"
OP: Final = ">="
TARGET = 0.9
UNIT = "×"

LEARNING_RATE = 1e-3


def _sequences(batch: int, seq_len: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(seq_len + 1)] for _ in range(batch)]


def _bare_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in the fresh subprocess."""
    import torch

    from tinkex_server import bare_training_loop

    result = bare_training_loop(
        spec["model"],
        rank=spec["rank"],
        steps=spec["steps"],
        warmup=spec["warmup"],
        learning_rate=LEARNING_RATE,
        seed=0,
        sequences=spec["sequences"],
    )
    return {
        "step_seconds": result.step_seconds,
        "losses": result.losses,
        "torch_threads": torch.get_num_threads(),
    }


def _bare_in_subprocess(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.p3_training"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bare loop subprocess failed:\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def run(ctx: Context) -> list[Row]:
    # (model, batch, seq_len, rank, steps, warmup, rounds)
    sizes: dict[bool, tuple[str, int, int, int, int, int, int]] = {
        True: ("tinkex/tiny-llama-100k", 2, 16, 4, 1, 1, 1),
        False: ("tinkex/tiny-llama-1m", 8, 128, 8, 5, 2, 2),
    }
    model, batch, seq_len, rank, steps, warmup, rounds = sizes[ctx.tiny]
    from tinkex_types import AdamParams, Datum, ModelInput

    url = ctx.server().base_url
    sequences = _sequences(batch, seq_len, 1024, seed=3)
    spec = {
        "model": model,
        "rank": rank,
        "steps": steps,
        "warmup": warmup,
        "sequences": sequences,
    }
    log(
        f"p3: {model}, batch {batch}x{seq_len}, LoRA rank {rank}, {rounds} rounds of "
        f"{warmup}+{steps} steps each side"
    )
    data = [
        Datum(
            model_input=ModelInput.from_ints(seq[:-1]),
            loss_fn_inputs={"target_tokens": seq[1:], "weights": [1.0] * seq_len},  # type: ignore[dict-item]
        )
        for seq in sequences
    ]
    adam = AdamParams(learning_rate=LEARNING_RATE, beta1=0.9, beta2=0.95, eps=1e-12)
    services = {
        "http": tinkex_service(url),
        "local": tinkex_service(f"local://{ctx.scratch('p3-local') / 'data'}"),
    }
    steps_s: dict[str, list[float]] = {"bare": [], "http": [], "local": []}
    first_loss: dict[str, float] = {}
    threads = 0
    try:
        clients = {
            name: svc.create_lora_training_client(model, rank=rank, seed=0)
            for name, svc in services.items()
        }
        for r in rounds_within(rounds, 120, KEY):
            bare = _bare_in_subprocess(spec)
            steps_s["bare"].extend(bare["step_seconds"])
            threads = bare["torch_threads"]
            first_loss.setdefault("bare", bare["losses"][0])
            order = list(clients) if r % 2 == 0 else list(reversed(clients))
            for name in order:
                training = clients[name]
                for i in range(warmup + steps):
                    start = time.perf_counter()
                    fb = training.forward_backward(data, "cross_entropy")
                    opt = training.optim_step(adam)
                    out = fb.result()
                    opt.result()
                    elapsed = time.perf_counter() - start
                    if i >= warmup:
                        steps_s[name].append(elapsed)
                    if r == 0 and i == 0:
                        first_loss[name] = float(out.metrics.get("loss:sum", float("nan")))
    finally:
        for svc in services.values():
            close_quietly(svc)
    tokens = batch * seq_len
    med = {k: statistics.median(v) for k, v in steps_s.items()}
    extra = {
        "model": model,
        "batch": batch,
        "seq_len": seq_len,
        "rank": rank,
        "step_s": steps_s,
        "first_loss": first_loss,
        "torch_threads": threads,
    }
    rows = []
    for name, how in (("http", "client → HTTP → server"), ("local", "client → local:// → server")):
        detail = (
            f"{how} {tokens / med[name]:,.0f} tok/s ({med[name] * 1e3:.0f} ms/step), "
            f"bare torch {tokens / med['bare']:,.0f} tok/s ({med['bare'] * 1e3:.0f} ms/step); "
            f"{model} {batch}×{seq_len}, rank {rank}, {threads} torch threads"
        )
        rows.append(
            Row(
                key=f"{KEY}-{name}",
                title=f"{TITLE} via {name} (tokens/s stack/bare)",
                value=med["bare"] / med[name],  # = (tokens / stack) / (tokens / bare)
                unit=UNIT,
                op=OP,
                target=TARGET,
                detail=detail,
                extra=extra,
            )
        )
    return rows


if __name__ == "__main__":
    print(json.dumps(_bare_child(json.loads(sys.stdin.read()))))
