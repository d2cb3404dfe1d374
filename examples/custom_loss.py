"""Custom losses: train on a loss written in torch with ``forward_backward_custom``.

Run it with ``hatch run python examples/custom_loss.py``. By default it talks to the local
server embedded in tinkex (``local://``); with ``TINKER_BASE_URL`` and ``TINKER_API_KEY``
set it runs unchanged against the Tinker service (pick a real model with ``--model``).

What it shows: the built-in ``cross_entropy`` loss *sums* over tokens, so long completions
weigh more than short ones. ``mean_token_nll`` below gives every example the same weight
(the mean negative logprob of its completion tokens, averaged over examples).
``forward_backward_custom(data, loss_fn)`` runs a forward pass, calls
``loss_fn(data, logprobs)`` with one logprob tensor per datum, and sends the gradient
back to the server, so ``optim_step`` trains on *your* loss. Metrics the loss returns
come back in the result. When ``tinkex-regularizers`` is installed, the same loss is then
used as the base of a ``RegularizerPipeline`` with an entropy bonus.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.console import Console

import tinkex as tinker
from tinkex import types

DEFAULT_MODEL = "tinkex/tiny-llama-100k"
#: Completions of different lengths: the case where per-example averaging matters.
PAIRS: list[tuple[str, str]] = [
    ("The sky is", " blue."),
    ("Grass is", " green, like the leaves of a tree."),
    ("Snow is", " white."),
    ("The sun is", " hot and bright in the sky at noon."),
    ("Ice is", " cold."),
    ("Fire is", " red and orange."),
]


@dataclass
class CustomLossResult:
    """What the run produced (the test reads it)."""

    losses: list[float] = field(default_factory=list)
    """``mean_token_nll`` at every step, as the loss function reported it."""
    regularized: dict[str, float] | None = None
    """Pipeline metrics of the last regularized step (``None`` without tinkex-regularizers)."""
    seconds: float = 0.0


def build_data(tokenizer: Any) -> list[types.Datum]:
    """One datum per pair: the prompt is context (weight 0), the completion is learned."""
    data = []
    for prompt, completion in PAIRS:
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


def mean_token_nll(
    data: list[types.Datum], logprobs: list[torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per example: the mean of ``-logprob`` over its weighted tokens; then the mean over
    examples. ``logprobs[i]`` holds the logprob of every ``target_tokens`` entry of datum i
    and carries gradients; ``loss_fn_inputs`` are available as tensors via ``to_torch()``."""
    per_example = []
    for datum, lp in zip(data, logprobs, strict=True):
        weights = datum.loss_fn_inputs["weights"].to_torch().to(lp.dtype)
        per_example.append(-(weights * lp).sum() / weights.sum())
    loss = torch.stack(per_example).mean()
    return loss, {"mean_nll": loss.item()}


def run(
    *,
    base_url: str | None = None,
    model: str = DEFAULT_MODEL,
    steps: int = 20,
    regularized_steps: int = 3,
    learning_rate: float = 1e-2,
    rank: int = 8,
    seed: int = 0,
    console: Console | None = None,
) -> CustomLossResult:
    console = console or Console()
    result = CustomLossResult()
    started = time.perf_counter()
    base_url = base_url or os.environ.get("TINKER_BASE_URL") or "local://"
    console.print(f"[bold]tinkex custom loss[/] against [cyan]{base_url}[/] with [cyan]{model}[/]")

    with tinker.ServiceClient(base_url=base_url) as service:
        training = service.create_lora_training_client(base_model=model, rank=rank, seed=seed)
        data = build_data(training.get_tokenizer())
        adam = types.AdamParams(learning_rate=learning_rate)

        for step in range(steps):
            backward = training.forward_backward_custom(data, mean_token_nll)
            optim = training.optim_step(adam)
            loss = backward.result().metrics["mean_nll"]  # our metric, merged into the result
            optim.result()
            result.losses.append(loss)
            if step % 5 == 0 or step == steps - 1:
                console.print(f"step {step:3d}  mean_token_nll {loss:.3f}")

        try:
            from tinkex_regularizers import RegularizerPipeline, RegularizerSpec
        except ImportError:
            console.print("tinkex-regularizers is not installed: skipping the pipeline part.")
        else:
            pipeline = RegularizerPipeline(
                base_loss=mean_token_nll,
                regularizers=[RegularizerSpec.from_name("entropy", weight=0.1, mode="maximize")],
            )
            for _ in range(regularized_steps):
                backward = training.forward_backward_custom(data, pipeline.as_loss_fn())
                optim = training.optim_step(adam)
                result.regularized = {
                    k: v
                    for k, v in backward.result().metrics.items()
                    if k.startswith(("loss:", "reg/"))
                }
                optim.result()
            out = pipeline.last_output
            assert out is not None
            console.print(
                f"with an entropy bonus: total {out.loss_total:.3f} = base "
                f"{out.base_loss.value:.3f} + entropy term "
                f"{out.regularizers['entropy'].contribution:.3f}"
            )

    result.seconds = time.perf_counter() - started
    console.print(
        f"mean_token_nll: {result.losses[0]:.3f} → {result.losses[-1]:.3f} "
        f"in {result.seconds:.1f} s."
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=None, help="default: $TINKER_BASE_URL or local://")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--regularized-steps", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run(
        base_url=args.base_url,
        model=args.model,
        steps=args.steps,
        regularized_steps=args.regularized_steps,
        learning_rate=args.learning_rate,
        rank=args.rank,
        seed=args.seed,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
