"""Batched autoregressive sampling with a KV cache.

All rows of a batch share one base model; each row may carry its own adapter, sampling
settings and ``torch.Generator``. Prompts are left-padded so that every row's next token lands
at the same cache slot; padded keys are masked out and rotary positions count from each
row's first real token, so a row's computation matches its unbatched one (up to float
rounding in batched matmuls). Random draws come only from the row's own generator (one
uniform per sampled token), so seeded rows give the same tokens alone or in any batch.
Finished rows are dropped from the batch (and the cache) as soon as they stop.

A batch whose per-step work is small (rows x parameters under :data:`SERIAL_DECODE_WORK`)
decodes on one intra-op thread: its ops are far too small to gain from a second thread,
and OpenMP helpers busy-waiting between hundreds of tiny ops per token take the cores the
server's event loop and its clients need (a 2-thread decode of the 100k-parameter model
took 10x the CPU of a 1-thread one). Results do not depend on the thread count.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from tinkex_server._engine.lora import Adapter, RowLora
from tinkex_server._engine.model import DecoderLM, KVCache
from tinkex_server._engine.prompt_scores import score_prompt, topk_row, wants_prompt_scores
from tinkex_types import Tokenizer

__all__ = ["SERIAL_DECODE_WORK", "OnToken", "RowOutput", "SampleRow", "choose_token", "generate"]

#: ``on_token(row, token, logprob, stop_reason)`` of :func:`generate`: called for every
#: token as it is chosen (``stop_reason`` is ``None`` unless the row ends with it); a
#: ``False`` answer stops the whole generation (a streaming client went away).
OnToken = Callable[[int, int, float, str | None], bool]

_INITIAL_DECODE_ROOM = 64

#: Rows x model parameters below which a batch decodes on one intra-op thread.
SERIAL_DECODE_WORK = 2**26


#: Parameters of each model decoded so far (counting them walks every parameter tensor).
_PARAMS: weakref.WeakKeyDictionary[DecoderLM, int] = weakref.WeakKeyDictionary()


def _param_count(model: DecoderLM) -> int:
    count = _PARAMS.get(model)
    if count is None:
        count = _PARAMS[model] = sum(p.numel() for p in model.parameters())
    return count


@contextlib.contextmanager
def _intra_op_threads(model: DecoderLM, rows: int) -> Iterator[None]:
    """One intra-op thread while decoding a small batch (see the module docstring)."""
    before = torch.get_num_threads()
    if before == 1 or rows * _param_count(model) >= SERIAL_DECODE_WORK:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class SampleRow:
    """One sequence to generate."""

    prompt: list[int]
    adapter: Adapter | None
    max_tokens: int
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0
    seed: int = 0
    stop_ids: frozenset[int] = frozenset()
    stop_strings: tuple[str, ...] = ()
    prompt_logprobs: bool = False
    topk_prompt_logprobs: int = 0
    prompt_logprobs_last_n: int | None = None
    target_prompt_ids: Sequence[Sequence[int]] | None = None
    prompt_alt_tokens_k: int = 0
    topk_sample_logprobs: int = 0


@dataclass
class RowOutput:
    """What :func:`generate` returns per row."""

    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    stop_reason: Literal["stop", "length"] = "length"
    prompt_logprobs: list[float | None] | None = None
    topk_prompt_logprobs: list[list[tuple[int, float]] | None] | None = None
    target_prompt_logprobs: list[list[float]] | None = None
    prompt_alt_tokens: tuple[list[list[int]], list[list[float]]] | None = None
    topk_logprobs: list[list[tuple[int, float]]] | None = None


def choose_token(
    logits: Tensor,
    *,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
) -> int:
    """Pick one token from float32 ``logits`` ``[vocab]``.

    Temperature 0 is argmax (first maximum). Otherwise the logits are divided by the
    temperature, filtered by top-k (ties with the k-th value are kept) and top-p (the
    smallest prefix of the stably sorted distribution whose exclusive cumulative mass is
    below ``top_p``; the top token is always kept), and one uniform draw from ``generator``
    picks a token by inverse CDF in float64.
    """
    if temperature == 0:
        return int(torch.argmax(logits))
    x = logits.to(torch.float64) / temperature
    if not bool(torch.isfinite(x.max())):
        # A temperature so small (e.g. 5e-324) that the scaled logits overflow: its limit,
        # greedy (softmax of +inf would be NaN and leave no token to pick).
        return int(torch.argmax(logits))
    vocab = x.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(x, top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    probs = torch.softmax(x, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True, stable=True)
        exclusive = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        drop_sorted = exclusive >= top_p
        drop_sorted[0] = False
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
    cdf = torch.cumsum(probs, dim=-1)
    u = torch.rand((), generator=generator, dtype=torch.float64)
    idx = int(torch.searchsorted(cdf, u * cdf[-1], right=True))
    if idx >= vocab or probs[idx] <= 0:
        idx = int(torch.nonzero(probs > 0)[-1])
    return idx


def _stop_string_hit(
    tokenizer: Tokenizer, tokens: list[int], stops: tuple[str, ...], window: int
) -> bool:
    text = tokenizer.decode(tokens[-window:])
    return any(s in text for s in stops)


@dataclass
class _Decoding:
    """The state of a batch being decoded: one cache slot per still-active row."""

    cache: KVCache
    lora: RowLora
    valid: Tensor  # [active, capacity]: which cache positions hold real tokens
    next_pos: Tensor  # [active]: rotary position of each row's next token
    active: list[int]  # active slot -> row index
    cur: int  # cache position of the next token
    full: int  # the most positions any row can need


def _prefill(
    model: DecoderLM, rows: Sequence[SampleRow], outputs: list[RowOutput], pad_id: int
) -> tuple[Tensor, _Decoding]:
    """Run the left-padded prompts through the model (filling prompt logprobs where asked)
    and return the logits of each row's next token with the decoding state."""
    batch = len(rows)
    lens = [len(r.prompt) for r in rows]
    width = max(lens)
    # The cache starts small and doubles when needed (rows usually stop early).
    full = width + max(r.max_tokens for r in rows)
    capacity = min(full, width + _INITIAL_DECODE_ROOM)
    offsets = torch.tensor([width - n for n in lens])
    tokens = torch.full((batch, width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, width - lens[i] :] = torch.tensor(r.prompt, dtype=torch.long)
    cols = torch.arange(capacity)
    valid = cols[None, :] >= offsets[:, None]  # [B, capacity]
    positions = (torch.arange(width)[None, :] - offsets[:, None]).clamp(min=0)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    eye = torch.eye(width, dtype=torch.bool)
    mask = (causal[None] & (valid[:, None, :width] | eye[None]))[:, None]
    cache = KVCache(model.config, batch, capacity)
    lora = RowLora([r.adapter for r in rows])
    hidden = model.hidden_states(
        tokens, positions, lora=lora, attn_mask=mask, cache=cache, cache_pos=0
    )
    for i, r in enumerate(rows):
        if wants_prompt_scores(r):
            off = width - lens[i]
            row_logits = model.logits(hidden[i : i + 1, off:], lora.select([i]))[0]
            score_prompt(row_logits, r, outputs[i])
    logits = model.logits(hidden[:, -1], lora)  # [B, vocab]
    state = _Decoding(
        cache, lora, valid, torch.tensor(lens, dtype=torch.long), list(range(batch)), width, full
    )
    return logits, state


def _advance(model: DecoderLM, state: _Decoding, keep: list[int], step_tokens: list[int]) -> Tensor:
    """Drop finished rows, append one token per kept row, return the next logits."""
    if len(keep) < len(state.active):
        sel = torch.tensor(keep, dtype=torch.long)
        state.cache.select(sel)
        state.valid = state.valid.index_select(0, sel)
        state.next_pos = state.next_pos.index_select(0, sel)
        state.lora = state.lora.select(keep)
        state.active = [state.active[s] for s in keep]
    if state.cur + 1 > state.cache.capacity:
        new_capacity = min(state.full, 2 * state.cache.capacity)
        state.cache.grow(new_capacity)
        extra = state.valid.new_ones((state.valid.shape[0], new_capacity - state.valid.shape[1]))
        state.valid = torch.cat([state.valid, extra], 1)
    step = torch.tensor(step_tokens, dtype=torch.long)[:, None]
    step_mask = state.valid[:, None, None, : state.cur + 1]
    hidden = model.hidden_states(
        step,
        state.next_pos[:, None],
        lora=state.lora,
        attn_mask=step_mask,
        cache=state.cache,
        cache_pos=state.cur,
    )
    state.cur += 1
    state.next_pos = state.next_pos + 1
    return model.logits(hidden[:, -1], state.lora)


@torch.no_grad()
def generate(
    model: DecoderLM,
    rows: Sequence[SampleRow],
    *,
    tokenizer: Tokenizer | None,
    pad_id: int = 0,
    on_token: OnToken | None = None,
) -> list[RowOutput]:
    """Generate every row in one batch and return the outputs in row order.

    ``on_token`` sees each token as it is chosen (streaming); when it answers ``False``
    generation stops there and the outputs hold what was generated so far."""
    if not rows:
        return []
    with _intra_op_threads(model, len(rows)):
        return _generate(model, rows, tokenizer, pad_id, on_token)


def _generate(
    model: DecoderLM,
    rows: Sequence[SampleRow],
    tokenizer: Tokenizer | None,
    pad_id: int,
    on_token: OnToken | None,
) -> list[RowOutput]:
    outputs = [RowOutput() for _ in rows]
    logits, state = _prefill(model, rows, outputs, pad_id)
    generators = [
        torch.Generator().manual_seed(r.seed) if r.temperature > 0 else None for r in rows
    ]
    windows = [(max(len(s) for s in r.stop_strings) + 8) if r.stop_strings else 0 for r in rows]
    while state.active:
        logp = torch.log_softmax(logits, dim=-1)
        keep: list[int] = []
        step_tokens: list[int] = []
        for slot, row_idx in enumerate(state.active):
            r = rows[row_idx]
            out = outputs[row_idx]
            tok = choose_token(
                logits[slot],
                temperature=r.temperature,
                top_k=r.top_k,
                top_p=r.top_p,
                generator=generators[row_idx],
            )
            out.tokens.append(tok)
            out.logprobs.append(float(logp[slot, tok]))
            if r.topk_sample_logprobs > 0:
                out.topk_logprobs = out.topk_logprobs or []
                out.topk_logprobs.append(topk_row(logp[slot], r.topk_sample_logprobs))
            if tok in r.stop_ids or (
                r.stop_strings
                and tokenizer is not None
                and _stop_string_hit(tokenizer, out.tokens, r.stop_strings, windows[row_idx])
            ):
                out.stop_reason = "stop"
            elif len(out.tokens) >= r.max_tokens:
                out.stop_reason = "length"
            else:
                keep.append(slot)
                step_tokens.append(tok)
            if on_token is not None:
                ended = None if keep and keep[-1] == slot else out.stop_reason
                if not on_token(row_idx, tok, out.logprobs[-1], ended):
                    return outputs
        if not keep:
            break
        logits = _advance(model, state, keep, step_tokens)
    return outputs
