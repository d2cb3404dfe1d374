"""Reinforcement learning: sample, score, and train with the ``importance_sampling`` loss.

Run it with ``hatch run python examples/rl.py``. By default it talks to the local server
embedded in tinkex (``local://``); with ``TINKER_BASE_URL`` and ``TINKER_API_KEY`` set it
runs unchanged against the Tinker service (pick a real model with ``--model``).

What it shows: one RL iteration is (1) snapshot the current weights as a sampler with
``save_weights_and_get_sampling_client``, (2) sample a group of completions per prompt,
(3) reward each completion -- here 1 if its text contains a digit and 0 otherwise (edit
:func:`reward` for your task), (4) turn rewards into group-relative advantages, and (5) train
with ``forward_backward(..., "importance_sampling")``, passing the logprobs the sampler
reported as the behaviour-policy logprobs. The mean reward climbs as the policy learns to
write digits.
"""

from __future__ import annotations

import argparse
import os
import statistics
import string
import sys
import time
from dataclasses import dataclass, field

from rich.console import Console

import tinkex as tinker
from tinkex import types

DEFAULT_MODEL = "tinkex/tiny-llama-100k"
PROMPTS = ["Say it:", "Shout:", "Cheer:", "Now:"]


@dataclass
class RLResult:
    """What the run produced (the test reads it)."""

    mean_rewards: list[float] = field(default_factory=list)
    """Mean reward of the samples drawn at each iteration (before its update)."""
    last_completions: list[str] = field(default_factory=list)
    """The texts of the last group sampled."""
    seconds: float = 0.0


def reward(text: str) -> float:
    """The task: 1.0 if the completion contains a digit, else 0.0."""
    return 1.0 if any(ch in string.digits for ch in text) else 0.0


def group_advantages(rewards: list[float]) -> list[float]:
    """Reward minus the group mean, divided by the group's standard deviation (0 if flat)."""
    mean = statistics.fmean(rewards)
    spread = statistics.pstdev(rewards)
    return [(r - mean) / spread if spread > 0 else 0.0 for r in rewards]


def rl_datum(prompt: list[int], sample: types.SampledSequence, advantage: float) -> types.Datum:
    """One ``importance_sampling`` row: prompt positions carry zero advantage."""
    assert sample.logprobs is not None  # the sampler always reports them
    tokens = prompt + sample.tokens
    context = len(prompt) - 1
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": tokens[1:],
            "logprobs": [0.0] * context + sample.logprobs,  # behaviour policy
            "advantages": [0.0] * context + [advantage] * len(sample.tokens),
        },
    )


def run(
    *,
    base_url: str | None = None,
    model: str = DEFAULT_MODEL,
    iterations: int = 10,
    group_size: int = 16,
    max_tokens: int = 16,
    learning_rate: float = 2e-2,
    rank: int = 8,
    seed: int = 0,
    console: Console | None = None,
) -> RLResult:
    console = console or Console()
    result = RLResult()
    started = time.perf_counter()
    base_url = base_url or os.environ.get("TINKER_BASE_URL") or "local://"
    console.print(f"[bold]tinkex RL[/] against [cyan]{base_url}[/] with [cyan]{model}[/]")

    with tinker.ServiceClient(base_url=base_url) as service:
        training = service.create_lora_training_client(base_model=model, rank=rank, seed=seed)
        tokenizer = training.get_tokenizer()
        prompts = [tokenizer.encode(p, add_special_tokens=True) for p in PROMPTS]
        adam = types.AdamParams(learning_rate=learning_rate)

        for iteration in range(iterations):
            sampler = training.save_weights_and_get_sampling_client()
            futures = [
                sampler.sample(
                    prompt=types.ModelInput.from_ints(prompt),
                    num_samples=group_size,
                    sampling_params=types.SamplingParams(
                        max_tokens=max_tokens, temperature=1.0, seed=seed + 1000 * iteration + i
                    ),
                )
                for i, prompt in enumerate(prompts)
            ]
            data, rewards = [], []
            for prompt, future in zip(prompts, futures, strict=True):
                group = future.result().sequences
                texts = [tokenizer.decode(s.tokens, skip_special_tokens=True) for s in group]
                group_rewards = [reward(text) for text in texts]
                rewards += group_rewards
                for sample, adv in zip(group, group_advantages(group_rewards), strict=True):
                    if adv != 0.0 and sample.tokens:  # zero advantage: no gradient
                        data.append(rl_datum(prompt, sample, adv))
            result.last_completions = texts
            mean_reward = statistics.fmean(rewards)
            result.mean_rewards.append(mean_reward)
            console.print(
                f"iteration {iteration:2d}  mean reward {mean_reward:.3f}  "
                f"({len(data)} samples with a non-zero advantage)"
            )
            if data:  # both calls are submitted before waiting; they run in order
                backward = training.forward_backward(data, "importance_sampling")
                optim = training.optim_step(adam)
                backward.result()
                optim.result()

    result.seconds = time.perf_counter() - started
    first, last = result.mean_rewards[0], result.mean_rewards[-1]
    console.print(f"Some completions of {PROMPTS[-1]!r} at the end: {result.last_completions[:4]}")
    console.print(
        f"Share of completions with a digit: {first:.2f} → {last:.2f} in {result.seconds:.1f} s."
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=None, help="default: $TINKER_BASE_URL or local://")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run(
        base_url=args.base_url,
        model=args.model,
        iterations=args.iterations,
        group_size=args.group_size,
        max_tokens=args.max_tokens,
        learning_rate=args.learning_rate,
        rank=args.rank,
        seed=args.seed,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
