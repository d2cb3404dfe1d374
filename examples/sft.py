"""Supervised fine-tuning: a training loop over a small dataset, with a held-out eval loss.

Run it with ``hatch run python examples/sft.py``. By default it talks to the local server
embedded in tinkex (``local://``); with ``TINKER_BASE_URL`` and ``TINKER_API_KEY`` set it
runs unchanged against the Tinker service (pick a real model with ``--model``).

What it shows: turning prompt/completion pairs (``examples/data/colors.jsonl``, or your own
JSONL via ``--data``) into ``Datum`` objects where only the completion is learned, a loop of
``forward_backward`` + ``optim_step`` on shuffled mini-batches, and an evaluation loss on the
held-out rows computed with ``forward`` (no gradient, so evaluation never changes the model).
Losses are reported per completion token: ``loss:sum`` divided by the sum of the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import tinkex as tinker
from tinkex import types

DEFAULT_MODEL = "tinkex/tiny-llama-100k"
#: Rows of ``{"split": "train" | "eval", "prompt": ..., "completion": ...}``.
DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "colors.jsonl"


@dataclass
class SFTResult:
    """What the run produced (the test reads it)."""

    train_losses: list[float] = field(default_factory=list)
    """Mean loss per completion token of every training step."""
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    """``(steps done, mean eval loss per completion token)``, starting before training."""
    seconds: float = 0.0


def load_rows(path: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The train and eval rows of a JSONL file (rows without ``split`` are training rows)."""
    train: list[dict[str, str]] = []
    held_out: list[dict[str, str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            (held_out if row.get("split") == "eval" else train).append(row)
    return train, held_out


def to_datum(tokenizer: Any, prompt: str, completion: str) -> types.Datum:
    """Next-token prediction over prompt + completion; weight 1 on completion tokens only."""
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=True)
    completion_ids = [*tokenizer.encode(completion, add_special_tokens=False)]
    completion_ids.append(tokenizer.eos_token_id)
    tokens = prompt_ids + completion_ids
    weights = [0.0] * (len(prompt_ids) - 1) + [1.0] * len(completion_ids)
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights},
    )


def per_token(output: types.ForwardBackwardOutput, batch: list[types.Datum]) -> float:
    """``loss:sum`` (the server sums, it never averages) divided by the weighted tokens."""
    weight = sum(sum(d.loss_fn_inputs["weights"].tolist()) for d in batch)
    return float(output.metrics["loss:sum"]) / weight


def run(
    *,
    base_url: str | None = None,
    model: str = DEFAULT_MODEL,
    data_path: Path = DEFAULT_DATA,
    steps: int = 40,
    batch_size: int = 8,
    learning_rate: float = 1e-2,
    rank: int = 8,
    eval_every: int = 10,
    seed: int = 0,
    console: Console | None = None,
) -> SFTResult:
    console = console or Console()
    result = SFTResult()
    started = time.perf_counter()
    base_url = base_url or os.environ.get("TINKER_BASE_URL") or "local://"
    console.print(f"[bold]tinkex SFT[/] against [cyan]{base_url}[/] with [cyan]{model}[/]")

    with tinker.ServiceClient(base_url=base_url) as service:
        training = service.create_lora_training_client(base_model=model, rank=rank, seed=seed)
        tokenizer = training.get_tokenizer()
        train_rows, eval_rows = load_rows(data_path)
        train_data = [to_datum(tokenizer, r["prompt"], r["completion"]) for r in train_rows]
        eval_data = [to_datum(tokenizer, r["prompt"], r["completion"]) for r in eval_rows]
        console.print(f"{len(train_data)} training rows, {len(eval_data)} held-out rows")

        def evaluate(step: int) -> None:
            loss = per_token(training.forward(eval_data, "cross_entropy").result(), eval_data)
            result.eval_losses.append((step, loss))
            console.print(f"step {step:3d}  eval loss {loss:.3f}")

        adam = types.AdamParams(learning_rate=learning_rate)
        rng = random.Random(seed)
        order: list[types.Datum] = []
        evaluate(0)
        for step in range(1, steps + 1):
            if len(order) < batch_size:  # a new epoch: reshuffle
                order = train_data[:]
                rng.shuffle(order)
            batch, order = order[:batch_size], order[batch_size:]
            # Submit both before waiting: they run in call order on the server.
            backward = training.forward_backward(batch, "cross_entropy")
            optim = training.optim_step(adam)
            result.train_losses.append(per_token(backward.result(), batch))
            optim.result()
            if step % eval_every == 0 or step == steps:
                evaluate(step)

    result.seconds = time.perf_counter() - started
    table = Table(title="mean loss per completion token")
    table.add_column("", style="bold")
    table.add_column("first", justify="right")
    table.add_column("last", justify="right")
    table.add_row("train", f"{result.train_losses[0]:.3f}", f"{result.train_losses[-1]:.3f}")
    table.add_row("eval", f"{result.eval_losses[0][1]:.3f}", f"{result.eval_losses[-1][1]:.3f}")
    console.print(table)
    console.print(f"Finished {steps} steps in {result.seconds:.1f} s.")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=None, help="default: $TINKER_BASE_URL or local://")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a JSONL file")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run(
        base_url=args.base_url,
        model=args.model,
        data_path=args.data,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        rank=args.rank,
        eval_every=args.eval_every,
        seed=args.seed,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
