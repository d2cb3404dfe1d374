"""Quickstart: watch a tiny model learn on your own machine (no account, no GPU, no download).

Run it with ``hatch run quickstart`` from the repository root. It talks to the local
Tinker-compatible server embedded in tinkex (``local://``): the same code runs against the
Tinker service when ``TINKER_BASE_URL`` and ``TINKER_API_KEY`` are set (pick a real model
with ``--model``).

What it does: samples from a fresh LoRA adapter, fine-tunes it on a handful of fixed phrases
with cross-entropy, saves sampler weights, samples again, and shows before and after side by
side with the loss curve.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import tinkex as tinker
from tinkex import types

#: The task: finish each phrase. A ~1M-parameter model learns it in about a hundred steps.
PHRASES: list[tuple[str, str]] = [
    ("The sky is", " blue."),
    ("Grass is", " green."),
    ("Snow is", " white."),
    ("The sun is", " hot."),
    ("Ice is", " cold."),
    ("Fire is", " red."),
]


@dataclass
class QuickstartResult:
    """What the run produced (the test reads it)."""

    losses: list[float] = field(default_factory=list)
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    sampler_path: str = ""
    seconds: float = 0.0


def build_dataset(tokenizer: object) -> list[types.Datum]:
    """One datum per phrase: the prompt is context (weight 0), the completion is learned."""
    data = []
    for prompt, completion in PHRASES:
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=True)  # type: ignore[attr-defined]
        completion_ids = tokenizer.encode(completion, add_special_tokens=False)  # type: ignore[attr-defined]
        completion_ids.append(tokenizer.eos_token_id)  # type: ignore[attr-defined]
        tokens = prompt_ids + completion_ids
        weights = [0.0] * (len(prompt_ids) - 1) + [1.0] * len(completion_ids)
        data.append(
            types.Datum(
                model_input=types.ModelInput.from_ints(tokens[:-1]),
                loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights},
            )
        )
    return data


def complete_all(sampler: tinker.SamplingClient, tokenizer: object) -> list[str]:
    """Greedy completions of every prompt, sent concurrently."""
    params = types.SamplingParams(max_tokens=8, temperature=0.0, stop=["."])
    futures = [
        sampler.sample(
            prompt=types.ModelInput.from_ints(tokenizer.encode(prompt)),  # type: ignore[attr-defined]
            num_samples=1,
            sampling_params=params,
        )
        for prompt, _ in PHRASES
    ]
    texts = []
    for future in futures:
        tokens = future.result().sequences[0].tokens
        texts.append(tokenizer.decode(tokens, skip_special_tokens=True))  # type: ignore[attr-defined]
    return texts


def loss_curve(losses: list[float], width: int = 60, height: int = 8) -> str:
    """The loss curve as a small text chart (one column per bucket of steps)."""
    if not losses:
        return ""
    buckets = [losses[int(i * len(losses) / width)] for i in range(min(width, len(losses)))]
    top, bottom = max(buckets), min(buckets)
    span = (top - bottom) or 1.0
    rows = []
    for level in range(height, 0, -1):
        threshold = bottom + span * (level - 1) / height
        line = "".join("█" if value >= threshold else " " for value in buckets)
        if level == height:
            label = f"{top:8.2f} ┤"
        elif level == 1:
            label = f"{bottom:8.2f} ┤"
        else:
            label = "         │"
        rows.append(label + line)
    rows.append("         └" + "─" * len(buckets))
    rows.append(f"          step 1{' ' * max(0, len(buckets) - 12)}step {len(losses)}")
    return "\n".join(rows)


def run(
    *,
    base_url: str | None = None,
    model: str = "tinkex/tiny-llama-1m",
    steps: int = 100,
    learning_rate: float = 5e-3,
    rank: int = 16,
    seed: int = 0,
    console: Console | None = None,
) -> QuickstartResult:
    console = console or Console()
    result = QuickstartResult()
    started = time.perf_counter()
    base_url = base_url or os.environ.get("TINKER_BASE_URL") or "local://"
    console.print(f"[bold]tinkex quickstart[/] against [cyan]{base_url}[/] with [cyan]{model}[/]")

    with tinker.ServiceClient(base_url=base_url) as service:
        training = service.create_lora_training_client(base_model=model, rank=rank, seed=seed)
        tokenizer = training.get_tokenizer()
        data = build_dataset(tokenizer)

        untrained = training.save_weights_and_get_sampling_client(name="quickstart-before")
        result.before = complete_all(untrained, tokenizer)

        adam = types.AdamParams(learning_rate=learning_rate)
        progress = Progress(
            TextColumn("[bold blue]training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:>8.3f}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        with progress:
            task = progress.add_task("train", total=steps, loss=float("nan"))
            for _ in range(steps):
                # Both calls are submitted before waiting: they run in order on the server.
                backward = training.forward_backward(data, "cross_entropy")
                step = training.optim_step(adam)
                loss = backward.result().metrics["loss:sum"]
                step.result()
                result.losses.append(loss)
                progress.update(task, advance=1, loss=loss)

        saved = training.save_weights_for_sampler(name="quickstart").result()
        result.sampler_path = saved.path
        trained = service.create_sampling_client(model_path=saved.path)
        result.after = complete_all(trained, tokenizer)

    result.seconds = time.perf_counter() - started
    _report(console, result, base_url)
    return result


def _report(console: Console, result: QuickstartResult, base_url: str) -> None:
    table = Table(title="Completions (greedy)", show_lines=False)
    table.add_column("prompt", style="bold")
    table.add_column("expected", style="green")
    table.add_column("before training", style="red")
    table.add_column("after training", style="cyan")
    for (prompt, expected), before, after in zip(PHRASES, result.before, result.after, strict=True):
        table.add_row(prompt, expected, repr(before), repr(after))
    console.print(table)
    first, last = result.losses[0], result.losses[-1]
    console.print(
        Panel(
            loss_curve(result.losses),
            title=f"loss: {first:.3f} → {last:.3f} ({100 * last / first:.1f}% of start)",
        )
    )
    data_dir = os.environ.get("TINKEX_DATA_DIR", "the local server's data directory")
    console.print(f"Sampler weights saved at [cyan]{result.sampler_path}[/] (in {data_dir}).")
    console.print(f"Finished in {result.seconds:.1f} s. Next, try:")
    console.print(f"  tinkex --base-url {base_url} checkpoint list")
    console.print(
        f'  tinkex --base-url {base_url} sample --model-path {result.sampler_path} "The sky is"'
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=None, help="default: $TINKER_BASE_URL or local://")
    parser.add_argument("--model", default="tinkex/tiny-llama-1m")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run(
        base_url=args.base_url,
        model=args.model,
        steps=args.steps,
        learning_rate=args.learning_rate,
        rank=args.rank,
        seed=args.seed,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
