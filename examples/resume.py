"""Checkpoint and resume: ``save_state``, then continue training in a new client.

Run it with ``hatch run python examples/resume.py``. By default it talks to the local server
embedded in tinkex (``local://``); with ``TINKER_BASE_URL`` and ``TINKER_API_KEY`` set it
runs unchanged against the Tinker service (pick a real model with ``--model``).

What it shows: train a few steps, ``save_state`` (weights *and* Adam state, as
``tinker://<run>/weights/<name>``), keep training the original client, and compare with a
training client created from the checkpoint -- in a separate ``ServiceClient``, as a new
process would -- by ``create_training_client_from_state_with_optimizer``. The losses of the
resumed run match the uninterrupted ones step for step. For contrast, a client restored by
``create_training_client_from_state`` (weights only, fresh optimizer) matches on the first
step and then drifts away.
"""

from __future__ import annotations

import argparse
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
PHRASES: list[tuple[str, str]] = [
    ("The sky is", " blue."),
    ("Grass is", " green."),
    ("Snow is", " white."),
    ("Fire is", " red."),
]


@dataclass
class ResumeResult:
    """What the run produced (the test reads it)."""

    checkpoint: str = ""
    uninterrupted: list[float] = field(default_factory=list)
    """Losses of the steps after the checkpoint, in the original client."""
    resumed: list[float] = field(default_factory=list)
    """The same steps in a client restored with its optimizer state."""
    weights_only: list[float] = field(default_factory=list)
    """The same steps in a client restored without optimizer state."""
    seconds: float = 0.0


def build_data(tokenizer: Any) -> list[types.Datum]:
    """One datum per phrase: the prompt is context (weight 0), the completion is learned."""
    data = []
    for prompt, completion in PHRASES:
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=True)
        completion_ids = [*tokenizer.encode(completion, add_special_tokens=False)]
        completion_ids.append(tokenizer.eos_token_id)
        tokens = prompt_ids + completion_ids
        weights = [0.0] * (len(prompt_ids) - 1) + [1.0] * len(completion_ids)
        data.append(
            types.Datum(
                model_input=types.ModelInput.from_ints(tokens[:-1]),
                loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights},
            )
        )
    return data


def train(
    training: tinker.TrainingClient, data: list[types.Datum], adam: types.AdamParams, steps: int
) -> list[float]:
    """``steps`` of forward_backward + optim_step; the loss of each (before its update)."""
    losses = []
    for _ in range(steps):
        backward = training.forward_backward(data, "cross_entropy")
        optim = training.optim_step(adam)
        losses.append(backward.result().metrics["loss:sum"])
        optim.result()
    return losses


def run(
    *,
    base_url: str | None = None,
    model: str = DEFAULT_MODEL,
    steps_before: int = 5,
    steps_after: int = 3,
    learning_rate: float = 1e-2,
    rank: int = 8,
    seed: int = 0,
    console: Console | None = None,
) -> ResumeResult:
    console = console or Console()
    result = ResumeResult()
    started = time.perf_counter()
    base_url = base_url or os.environ.get("TINKER_BASE_URL") or "local://"
    console.print(f"[bold]tinkex resume[/] against [cyan]{base_url}[/] with [cyan]{model}[/]")
    adam = types.AdamParams(learning_rate=learning_rate)

    with tinker.ServiceClient(base_url=base_url) as service:
        original = service.create_lora_training_client(base_model=model, rank=rank, seed=seed)
        data = build_data(original.get_tokenizer())
        train(original, data, adam, steps_before)
        result.checkpoint = original.save_state(name="resume-example").result().path
        console.print(f"saved after {steps_before} steps: [cyan]{result.checkpoint}[/]")
        result.uninterrupted = train(original, data, adam, steps_after)

    # A new ServiceClient, as a new process would have: the checkpoint path is all it needs.
    with tinker.ServiceClient(base_url=base_url) as service:
        resumed = service.create_training_client_from_state_with_optimizer(result.checkpoint)
        result.resumed = train(resumed, data, adam, steps_after)
        weights_only = service.create_training_client_from_state(result.checkpoint)
        result.weights_only = train(weights_only, data, adam, steps_after)

    result.seconds = time.perf_counter() - started
    table = Table(title=f"loss (sum) of the steps after the checkpoint ({result.seconds:.1f} s)")
    table.add_column("step", justify="right")
    table.add_column("uninterrupted", justify="right")
    table.add_column("resumed with optimizer", justify="right", style="green")
    table.add_column("weights only", justify="right", style="yellow")
    for i, (a, b, c) in enumerate(
        zip(result.uninterrupted, result.resumed, result.weights_only, strict=True)
    ):
        table.add_row(str(steps_before + i + 1), f"{a:.6f}", f"{b:.6f}", f"{c:.6f}")
    console.print(table)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=None, help="default: $TINKER_BASE_URL or local://")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--steps-before", type=int, default=5)
    parser.add_argument("--steps-after", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run(
        base_url=args.base_url,
        model=args.model,
        steps_before=args.steps_before,
        steps_after=args.steps_after,
        learning_rate=args.learning_rate,
        rank=args.rank,
        seed=args.seed,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
