"""Sampling requests of the engine: validation, batching across adapters, results.

Rows (prompts x samples) of every request on the same base model are decoded together by
:func:`tinkex_server._engine.sampling.generate`, whatever their adapters, in chunks of
``max_sample_rows``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

from tinkex_server._engine.adapters import EngineCore
from tinkex_server._engine.errors import EngineInputError
from tinkex_server._engine.lora import Adapter
from tinkex_server._engine.registry import BaseModel
from tinkex_server._engine.sampling import OnToken, RowOutput, SampleRow, generate
from tinkex_server._engine.types import SampledSequence, SampleRequest, SampleResult

__all__ = ["SamplingMixin"]

#: A validated request: its base model, its rows and the seed it used.
_Planned = tuple[BaseModel, list[SampleRow], int]


@dataclass(frozen=True)
class _Params:
    """The checked sampling parameters of one request."""

    max_tokens: int
    num_samples: int
    top_k: int
    temperature: float
    top_p: float
    topk_prompt: int
    stop_ids: frozenset[int]
    stop_strings: tuple[str, ...]


def _int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise EngineInputError(
            f"sampling_params.{name}", f"must be an integer >= {lo}, got {value!r}"
        )
    return value


def _num(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EngineInputError(f"sampling_params.{name}", f"must be a number: {value!r}")
    if not math.isfinite(value):
        raise EngineInputError(f"sampling_params.{name}", "must be finite")
    return float(value)


def _check_prompt(req: SampleRequest, base: BaseModel) -> list[int]:
    vocab = base.config.vocab_size
    prompt = list(req.prompt)
    if not prompt or not all(
        isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in prompt
    ):
        raise EngineInputError(
            "prompt",
            f"must be a non-empty list of token ids in [0, {vocab})",
            "tokenize with this model's tokenizer",
        )
    return prompt


def _check_stops(req: SampleRequest, base: BaseModel) -> tuple[frozenset[int], tuple[str, ...]]:
    stop_ids = set()
    for t in req.stop_token_ids:
        if isinstance(t, bool) or not isinstance(t, int):
            raise EngineInputError("sampling_params.stop", f"bad stop token id {t!r}")
        stop_ids.add(t)
    if req.stop_at_eos:
        stop_ids.update(base.eos_token_ids)
    stop_strings = tuple(s for s in req.stop_strings)
    if any(not isinstance(s, str) or not s for s in stop_strings):
        raise EngineInputError("sampling_params.stop", "stop strings must be non-empty")
    if stop_strings and base.tokenizer is None:
        raise EngineInputError(
            "sampling_params.stop",
            f"stop strings need a tokenizer and {base.name!r} has none",
            "use stop token ids",
        )
    return frozenset(stop_ids), stop_strings


def _check_extras(req: SampleRequest, base: BaseModel, prompt_len: int) -> None:
    """The 0.38 extras: ``prompt_logprobs_last_n``, ``topk_sample_logprobs``,
    ``target_prompt_logprobs`` and ``prompt_alt_tokens_k``."""
    for name in ("topk_sample_logprobs", "prompt_alt_tokens_k"):
        value = getattr(req, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise EngineInputError(name, f"must be an integer >= 0, got {value!r}")
    last_n = req.prompt_logprobs_last_n
    if last_n is not None:
        if isinstance(last_n, bool) or not isinstance(last_n, int):
            raise EngineInputError("prompt_logprobs_last_n", f"must be an integer: {last_n!r}")
        if not 1 <= last_n <= prompt_len - 1:
            raise EngineInputError(
                "prompt_logprobs_last_n",
                f"must be between 1 and len(prompt) - 1 = {prompt_len - 1}, got {last_n}",
            )
    ids = req.target_prompt_logprobs
    if ids is None:
        return
    vocab = base.config.vocab_size
    width = len(ids[0]) if len(ids) else 0
    if len(ids) != prompt_len - 1 or any(len(r) != width for r in ids):
        raise EngineInputError(
            "target_prompt_logprobs",
            f"must be [len(prompt) - 1, K] = [{prompt_len - 1}, K]",
        )
    if any(
        isinstance(t, bool) or not isinstance(t, int) or not -1 <= t < vocab for r in ids for t in r
    ):
        raise EngineInputError(
            "target_prompt_logprobs", f"token ids must be in [0, {vocab}) or -1 (none)"
        )


def _check_params(req: SampleRequest, base: BaseModel, prompt_len: int) -> _Params:
    max_tokens = _int("max_tokens", req.max_tokens, 1)
    num_samples = _int("num_samples", req.num_samples, 1)
    top_k = req.top_k if req.top_k is not None else -1
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise EngineInputError(
            "sampling_params.top_k", f"must be an integer (-1 = off), got {top_k!r}"
        )
    temperature = _num("temperature", req.temperature)
    if temperature < 0:
        raise EngineInputError("sampling_params.temperature", "must be >= 0 (0 is greedy)")
    top_p = _num("top_p", req.top_p)
    if not 0 < top_p <= 1:
        raise EngineInputError("sampling_params.top_p", f"must be in (0, 1], got {top_p}")
    topk_prompt = _int("topk_prompt_logprobs", req.topk_prompt_logprobs, 0)
    _check_extras(req, base, prompt_len)
    context = base.config.max_position_embeddings
    if prompt_len + max_tokens > context:
        raise EngineInputError(
            "sampling_params.max_tokens",
            f"prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) exceeds the "
            f"context length {context}",
            "lower max_tokens or shorten the prompt",
        )
    stop_ids, stop_strings = _check_stops(req, base)
    return _Params(
        max_tokens, num_samples, top_k, temperature, top_p, topk_prompt, stop_ids, stop_strings
    )


class _Relay:
    """``on_token`` of one chunk of rows: row numbers shifted to sample indices."""

    def __init__(self, on_token: OnToken, offset: int) -> None:
        self.on_token = on_token
        self.offset = offset
        self.stopped = False

    def __call__(self, row: int, token: int, logprob: float, stop: str | None) -> bool:
        self.stopped = not self.on_token(self.offset + row, token, logprob, stop)
        return not self.stopped


class SamplingMixin(EngineCore):
    """``sample``, ``sample_batch`` and ``compute_logprobs`` of the engine."""

    def _sampling_source(self, req: SampleRequest) -> tuple[BaseModel, Adapter | None]:
        if req.model_id is not None:
            slot = self._slot(req.model_id)
            if req.base_model is not None and req.base_model != slot.base.name:
                raise EngineInputError(
                    "base_model",
                    f"model {req.model_id!r} is built on {slot.base.name!r}, "
                    f"not {req.base_model!r}",
                )
            return slot.base, slot.adapter
        if req.base_model is not None:
            return self._base(req.base_model), None
        raise EngineInputError("model_id", "give a model_id or a base_model to sample from")

    def _rows_for(self, req: SampleRequest, seed: int) -> tuple[BaseModel, list[SampleRow]]:
        base, adapter = self._sampling_source(req)
        prompt = _check_prompt(req, base)
        p = _check_params(req, base, len(prompt))
        rows = [
            SampleRow(
                prompt=prompt,
                adapter=adapter,
                max_tokens=p.max_tokens,
                temperature=p.temperature,
                top_k=p.top_k,
                top_p=p.top_p,
                seed=(seed + i) % 2**63,
                stop_ids=p.stop_ids,
                stop_strings=p.stop_strings,
                prompt_logprobs=bool(req.prompt_logprobs) and i == 0,
                topk_prompt_logprobs=p.topk_prompt if i == 0 else 0,
                prompt_logprobs_last_n=req.prompt_logprobs_last_n,
                target_prompt_ids=req.target_prompt_logprobs if i == 0 else None,
                prompt_alt_tokens_k=req.prompt_alt_tokens_k if i == 0 else 0,
                topk_sample_logprobs=req.topk_sample_logprobs,
            )
            for i in range(p.num_samples)
        ]
        return base, rows

    def _plan(
        self, requests: Sequence[SampleRequest], return_exceptions: bool
    ) -> list[_Planned | Exception]:
        planned: list[_Planned | Exception] = []
        for req in requests:
            seed = req.seed if req.seed is not None else self._rng.randrange(2**62)
            try:
                if isinstance(seed, bool) or not isinstance(seed, int):
                    raise EngineInputError("sampling_params.seed", f"bad seed {seed!r}")
                base, rows = self._rows_for(req, seed)
                planned.append((base, rows, seed))
            except EngineInputError as exc:
                if not return_exceptions:
                    raise
                planned.append(exc)
        return planned

    def _decode(self, planned: list[_Planned | Exception]) -> dict[tuple[int, int], RowOutput]:
        """Decode every row, grouped by base model; keys are (request, sample) indices."""
        by_base: dict[str, list[tuple[int, int, SampleRow]]] = {}
        bases: dict[str, BaseModel] = {}
        for ri, item in enumerate(planned):
            if isinstance(item, Exception):
                continue
            base, rows, _ = item
            bases[base.name] = base
            by_base.setdefault(base.name, []).extend((ri, si, row) for si, row in enumerate(rows))
        row_out: dict[tuple[int, int], RowOutput] = {}
        for name, entries in by_base.items():
            base = bases[name]
            pad = base.config.pad_token_id if base.config.pad_token_id is not None else 0
            for start in range(0, len(entries), self.max_sample_rows):
                chunk = entries[start : start + self.max_sample_rows]
                outs = generate(
                    base.module, [row for _, _, row in chunk], tokenizer=base.tokenizer, pad_id=pad
                )
                for (ri, si, _), out in zip(chunk, outs, strict=True):
                    row_out[(ri, si)] = out
        return row_out

    @staticmethod
    def _result(outs: list[RowOutput], seed: int) -> SampleResult:
        return SampleResult(
            sequences=[
                SampledSequence(o.tokens, o.logprobs, o.stop_reason, o.topk_logprobs) for o in outs
            ],
            seed=seed,
            prompt_logprobs=outs[0].prompt_logprobs,
            topk_prompt_logprobs=outs[0].topk_prompt_logprobs,
            target_prompt_logprobs=outs[0].target_prompt_logprobs,
            prompt_alt_tokens=outs[0].prompt_alt_tokens,
        )

    @overload
    def sample_batch(
        self, requests: Sequence[SampleRequest], *, return_exceptions: Literal[False] = ...
    ) -> list[SampleResult]: ...

    @overload
    def sample_batch(
        self, requests: Sequence[SampleRequest], *, return_exceptions: Literal[True]
    ) -> list[SampleResult | Exception]: ...

    def sample_batch(
        self, requests: Sequence[SampleRequest], *, return_exceptions: bool = False
    ) -> list[SampleResult] | list[SampleResult | Exception]:
        """Run many sampling requests together (rows of the same base model are decoded in
        shared batches, whatever their adapters). Results come back in request order.

        With ``return_exceptions`` an invalid request yields its exception in its slot and
        the others still run; otherwise the first invalid request raises before anything
        runs.
        """
        with self._lock:
            planned = self._plan(requests, return_exceptions)
            row_out = self._decode(planned)
            results: list[SampleResult | Exception] = []
            for ri, item in enumerate(planned):
                if isinstance(item, Exception):
                    results.append(item)
                    continue
                _, rows, seed = item
                results.append(self._result([row_out[(ri, si)] for si in range(len(rows))], seed))
            return results

    def sample(self, request: SampleRequest) -> SampleResult:
        """One sampling request (see :meth:`sample_batch`)."""
        return self.sample_batch([request])[0]

    def sample_stream(self, request: SampleRequest, on_token: OnToken) -> SampleResult:
        """One sampling request whose tokens are handed to ``on_token(sample index, token,
        logprob, stop reason or None)`` as they are chosen; ``on_token`` answering ``False``
        stops generating (the result then holds what was generated). For a seed, the tokens
        are those :meth:`sample` gives."""
        with self._lock:
            (item,) = self._plan([request], return_exceptions=False)
            assert not isinstance(item, Exception)
            base, rows, seed = item
            pad = base.config.pad_token_id if base.config.pad_token_id is not None else 0
            outs: list[RowOutput] = []
            for start in range(0, len(rows), self.max_sample_rows):
                relay = _Relay(on_token, start)
                chunk = rows[start : start + self.max_sample_rows]
                outs += generate(
                    base.module, chunk, tokenizer=base.tokenizer, pad_id=pad, on_token=relay
                )
                if relay.stopped:
                    break
            return self._result(outs, seed)

    def compute_logprobs(
        self,
        tokens: Sequence[int],
        *,
        model_id: str | None = None,
        base_model: str | None = None,
    ) -> list[float | None]:
        """Logprob of each token given the previous ones (``None`` for the first)."""
        req = SampleRequest(
            prompt=list(tokens),
            max_tokens=1,
            model_id=model_id,
            base_model=base_model,
            temperature=0.0,
            prompt_logprobs=True,
            stop_at_eos=False,
        )
        result = self.sample(req)
        assert result.prompt_logprobs is not None
        return result.prompt_logprobs
