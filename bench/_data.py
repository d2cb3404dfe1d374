"""Seeded synthetic training batches (plain Python lists, as a user's data loader yields)."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Example", "make_examples"]


@dataclass(frozen=True)
class Example:
    """One supervised example: input tokens, targets (inputs shifted by one) and weights
    (0.0 over a prompt of random length, 1.0 over the completion)."""

    tokens: list[int]
    targets: list[int]
    weights: list[float]


def make_examples(n: int, seq_len: int, *, vocab: int = 1024, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    out: list[Example] = []
    for _ in range(n):
        seq = [rng.randrange(vocab) for _ in range(seq_len + 1)]
        prompt = rng.randint(max(1, seq_len // 8), max(1, seq_len // 2))
        weights = [0.0] * prompt + [1.0] * (seq_len - prompt)
        out.append(Example(seq[:-1], seq[1:], weights))
    return out
