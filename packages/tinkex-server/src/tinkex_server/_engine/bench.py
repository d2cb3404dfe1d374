"""A bare torch LoRA training loop: the floor the full stack is benchmarked against.

:func:`bare_training_loop` runs the same decoder and LoRA code as the engine, but with no
engine, validation, serialisation, HTTP or futures: one padded batch, ``-sum(logprobs)``,
``backward``, ``torch.optim.AdamW``. ``bench/`` compares a full client->server step with it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from tinkex_server._engine.engine import DEFAULT_LORA_ALPHA
from tinkex_server._engine.lora import Adapter, LoraSpec
from tinkex_server._engine.registry import load_base_model

__all__ = ["BareLoopResult", "bare_training_loop"]


@dataclass
class BareLoopResult:
    """Timings (seconds, measured steps only) and losses (all steps) of a bare loop."""

    base_model: str
    batch_size: int
    seq_len: int
    rank: int
    step_seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    @property
    def median_step_seconds(self) -> float:
        """Median wall time of one forward+backward+AdamW step."""
        return statistics.median(self.step_seconds) if self.step_seconds else float("nan")

    @property
    def tokens_per_second(self) -> float:
        """Trained tokens per second at the median step time."""
        return self.batch_size * self.seq_len / self.median_step_seconds


def bare_training_loop(
    base_model: str = "tinkex/tiny-llama-1m",
    *,
    batch_size: int = 8,
    seq_len: int = 128,
    steps: int = 5,
    warmup: int = 2,
    rank: int = 8,
    learning_rate: float = 1e-3,
    seed: int = 0,
    sequences: Sequence[Sequence[int]] | None = None,
) -> BareLoopResult:
    """Train a fresh LoRA adapter for ``warmup + steps`` steps on one fixed batch.

    The batch is ``sequences`` (each ``seq_len + 1`` tokens: inputs and shifted targets)
    or, by default, seeded random tokens. Only the last ``steps`` steps are timed.
    """
    base = load_base_model(base_model)
    model = base.module
    vocab = base.config.vocab_size
    if sequences is None:
        gen = torch.Generator().manual_seed(seed)
        batch = torch.randint(0, vocab, (batch_size, seq_len + 1), generator=gen)
    else:
        batch = torch.tensor([list(s) for s in sequences], dtype=torch.long)
        batch_size, seq_len = batch.shape[0], batch.shape[1] - 1
    inputs, targets = batch[:, :-1], batch[:, 1:]
    spec = LoraSpec(rank=rank, alpha=DEFAULT_LORA_ALPHA, seed=seed)
    adapter = Adapter(base_model, model, spec)
    lora = adapter.context()
    opt = torch.optim.AdamW(
        adapter.parameters(), lr=learning_rate, betas=(0.9, 0.95), eps=1e-12, weight_decay=0.0
    )
    result = BareLoopResult(base_model, batch_size, seq_len, rank)
    for i in range(warmup + steps):
        start = time.perf_counter()
        logits = model(inputs, lora)
        logp = torch.log_softmax(logits, dim=-1)
        loss = -logp.gather(-1, targets[..., None]).sum()
        torch.autograd.backward([loss])
        opt.step()
        opt.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - start
        result.losses.append(float(loss.detach()))
        if i >= warmup:
            result.step_seconds.append(elapsed)
    return result
