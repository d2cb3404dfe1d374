"""What a sampling row asks about its prompt and its generated positions, beyond the tokens.

Row ``i`` of a prompt's logits (``[len(prompt), vocab]``) is the next-token distribution after
prompt position ``i``, so it scores prompt position ``i + 1``. Every logprob here is of the
untempered, unfiltered model distribution (as the sampled tokens' logprobs are).

* prompt logprobs / top-k prompt logprobs, for every position or only the last
  ``prompt_logprobs_last_n`` (earlier positions ``None``);
* ``target_prompt_logprobs``: the logprobs of chosen ids, ``[len(prompt) - 1, K]``, 0.0 where
  the id is ``-1``;
* ``prompt_alt_tokens_k``: k independent draws at every position after the first, at the
  row's temperature (greedy repeats the argmax), from a generator of the row's seed that is
  not the one its generated tokens use;
* :func:`topk_row`: the top-k ``(token, logprob)`` of one generated position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["PromptAsk", "ScoredPrompt", "score_prompt", "topk_row", "wants_prompt_scores"]

#: Mixed into the row's seed for the prompt draws (so they do not shift its sampled tokens).
_ALT_SEED_SALT = 0x5EED_A17


class PromptAsk(Protocol):
    """The fields of a sampling row that ask about its prompt."""

    prompt: list[int]
    seed: int
    temperature: float
    prompt_logprobs: bool
    topk_prompt_logprobs: int
    prompt_logprobs_last_n: int | None
    target_prompt_ids: Sequence[Sequence[int]] | None
    prompt_alt_tokens_k: int


class ScoredPrompt(Protocol):
    """Where :func:`score_prompt` writes (a ``RowOutput``)."""

    prompt_logprobs: list[float | None] | None
    topk_prompt_logprobs: list[list[tuple[int, float]] | None] | None
    target_prompt_logprobs: list[list[float]] | None
    prompt_alt_tokens: tuple[list[list[int]], list[list[float]]] | None


def wants_prompt_scores(row: PromptAsk) -> bool:
    """Whether the row needs the logits of its prompt positions."""
    return bool(
        row.prompt_logprobs
        or row.topk_prompt_logprobs > 0
        or row.target_prompt_ids is not None
        or row.prompt_alt_tokens_k > 0
    )


def topk_row(logp: Tensor, k: int) -> list[tuple[int, float]]:
    """The ``k`` most likely ``(token, logprob)`` of one ``[vocab]`` logprob row."""
    values, ids = torch.topk(logp, min(k, logp.shape[-1]))
    return [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]


def _first_scored(row: PromptAsk) -> int:
    """The first prompt position that gets a logprob (1, or ``n - last_n``)."""
    n = len(row.prompt)
    if row.prompt_logprobs_last_n is None:
        return 1
    return max(1, n - row.prompt_logprobs_last_n)


def score_prompt(logits: Tensor, row: PromptAsk, out: ScoredPrompt) -> None:
    """Fill ``out`` with what ``row`` asks about its prompt, from its ``[n, vocab]`` logits."""
    logp = torch.log_softmax(logits.to(torch.float32), dim=-1)
    n = len(row.prompt)
    first = _first_scored(row)
    if row.prompt_logprobs:
        targets = torch.tensor(row.prompt[first:], dtype=torch.long)
        got = logp[first - 1 : n - 1].gather(-1, targets[:, None])[:, 0].tolist()
        out.prompt_logprobs = [None] * first + [float(v) for v in got]
    if row.topk_prompt_logprobs > 0:
        tops: list[list[tuple[int, float]] | None] = [None] * first
        tops += [topk_row(logp[i - 1], row.topk_prompt_logprobs) for i in range(first, n)]
        out.topk_prompt_logprobs = tops
    if row.target_prompt_ids is not None:
        out.target_prompt_logprobs = _targets(logp, row.target_prompt_ids)
    if row.prompt_alt_tokens_k > 0:
        out.prompt_alt_tokens = _draws(logits, logp, row)


def _targets(logp: Tensor, ids: Sequence[Sequence[int]]) -> list[list[float]]:
    """``logp[i, ids[i][j]]`` (0.0 where the id is negative), one row per prompt position
    after the first."""
    if not ids or not ids[0]:
        return [[] for _ in ids]
    table = torch.tensor([list(r) for r in ids], dtype=torch.long)  # [n - 1, K]
    named = table >= 0
    got = logp[: table.shape[0]].gather(-1, table.clamp(min=0))
    return got.masked_fill(~named, 0.0).tolist()


def _draws(
    logits: Tensor, logp: Tensor, row: PromptAsk
) -> tuple[list[list[int]], list[list[float]]]:
    """``k`` independent draws at every prompt position after the first."""
    k = row.prompt_alt_tokens_k
    rows = logits[: len(row.prompt) - 1].to(torch.float64)
    if rows.shape[0] == 0:
        return [], []
    scaled = rows / row.temperature if row.temperature > 0 else rows
    if row.temperature == 0 or not bool(torch.isfinite(scaled).all()):
        # Greedy (or a temperature so small that the scaled logits overflow: its limit).
        ids = torch.argmax(rows, dim=-1, keepdim=True).expand(-1, k)
    else:
        probs = torch.softmax(scaled, dim=-1)
        generator = torch.Generator().manual_seed((row.seed ^ _ALT_SEED_SALT) % 2**63)
        ids = torch.multinomial(probs, k, replacement=True, generator=generator)
    lps = logp[: rows.shape[0]].gather(-1, ids)
    return ids.tolist(), lps.tolist()
