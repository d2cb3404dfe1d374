"""Sampling requests batched by the server give what each request gets alone.

The scheduler hands every queued sample request to the engine as one ``sample_batch``
(rows with their own max_tokens, stops, seeds and temperatures); the decode of a small
batch runs on one intra-op thread. Neither may change a result: greedy and seeded
requests answer the same tokens queued together, one by one, or on more threads.
"""

from __future__ import annotations

import asyncio
from typing import Any

import torch

from tinkex_server._engine import Engine, SampleRequest
from tinkex_server._engine import sampling as sampling_module
from tinkex_server._engine.registry import load_base_model
from tinkex_server._engine.sampling import SERIAL_DECODE_WORK, SampleRow, generate

MODEL = "tinkex/tiny-llama-100k"


def _mixed_params() -> list[dict[str, Any]]:
    """Greedy and seeded rows, different lengths, stop ids and stop strings, n > 1."""
    return [
        {"max_tokens": 5, "temperature": 0.0},
        {"max_tokens": 12, "seed": 11},
        {"max_tokens": 3, "seed": 12, "temperature": 0.7, "top_k": 20},
        {"max_tokens": 16, "seed": 13, "top_p": 0.9, "stop": [7, 9, 11, 13]},
        {"max_tokens": 9, "temperature": 0.0, "stop": ["e"]},
        {"max_tokens": 7, "seed": 14, "temperature": 1.3},
        {"max_tokens": 16, "seed": 15, "stop": ["th", "a"]},
        {"max_tokens": 1, "seed": 16},
    ]


def _body(sampler: str, i: int, params: dict[str, Any], n: int = 1) -> dict[str, Any]:
    return {
        "num_samples": n,
        "prompt": {"chunks": [{"tokens": [1, 5 + i, 40 + 3 * i, 200 - i]}]},
        "sampling_params": params,
        "sampling_session_id": sampler,
        "seq_id": i,
        "prompt_logprobs": False,
        "topk_prompt_logprobs": 0,
    }


async def test_a_batch_of_mixed_requests_equals_each_request_alone(
    make_server: Any, api_for: Any, gated_engine: Any
) -> None:
    engine = gated_engine
    async with api_for(make_server(engine=engine)) as api:
        sid = await api.session()
        mid = await api.model(sid)
        create = {
            "session_id": sid,
            "sampling_session_seq_id": 0,
            "base_model": MODEL,
            "model_path": None,
        }
        sampler = (await api.ok("create_sampling_session", create))["sampling_session_id"]
        bodies = [_body(sampler, i, p, n=2 if i == 1 else 1) for i, p in enumerate(_mixed_params())]
        # Hold the engine on a forward so every sample request queues behind it.
        engine.gate.clear()
        blocker = await api.ok("forward", api.fwd_body(mid, 1))
        await asyncio.to_thread(engine.entered.wait, 10)
        futures = await asyncio.gather(*(api.ok("asample", b) for b in bodies))
        engine.gate.set()
        await api.result(blocker)
        batched = [await api.result(f) for f in futures]
        assert engine.batch_sizes == [len(bodies)]
        alone = []
        for body in bodies:
            alone.append(await api.result(await api.ok("asample", body)))
        assert engine.batch_sizes == [len(bodies)] + [1] * len(bodies)

    def view(result: dict[str, Any]) -> list[tuple[list[int], str]]:
        return [(s["tokens"], s["stop_reason"]) for s in result["sequences"]]

    assert [view(r) for r in batched] == [view(r) for r in alone]
    # The rows really differ: lengths follow each request's own max_tokens and stops.
    lengths = [len(r["sequences"][0]["tokens"]) for r in batched]
    assert all(n <= p["max_tokens"] for n, p in zip(lengths, _mixed_params(), strict=True))
    assert lengths[7] == 1
    assert len(batched[1]["sequences"]) == 2
    for got, was in zip(batched, alone, strict=True):
        for x, y in zip(got["sequences"], was["sequences"], strict=True):
            assert torch.allclose(
                torch.tensor(x["logprobs"]), torch.tensor(y["logprobs"]), atol=1e-5
            )


def _engine_requests() -> list[SampleRequest]:
    return [
        SampleRequest(
            prompt=[1, 5 + i, 40 + 3 * i],
            max_tokens=int(p["max_tokens"]),
            base_model=MODEL,
            seed=p.get("seed"),
            temperature=float(p.get("temperature", 1.0)),
            stop_token_ids=[t for t in p.get("stop", []) if isinstance(t, int)],
            stop_strings=[s for s in p.get("stop", []) if isinstance(s, str)],
        )
        for i, p in enumerate(_mixed_params())
        if "seed" in p or p.get("temperature") == 0.0
    ]


def test_engine_batch_equals_one_by_one_on_one_or_two_threads() -> None:
    before = torch.get_num_threads()
    try:
        outputs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            engine = Engine(seed=0)
            requests = _engine_requests()
            batched = engine.sample_batch(requests)
            alone = [engine.sample(r) for r in requests]
            tokens = [[s.tokens for s in r.sequences] for r in batched]
            assert tokens == [[s.tokens for s in r.sequences] for r in alone]
            # The decode put the caller's thread count back.
            assert torch.get_num_threads() == threads
            outputs.append(tokens)
        assert outputs[0] == outputs[1]
    finally:
        torch.set_num_threads(before)


def test_small_decodes_run_on_one_thread_large_ones_keep_the_setting(monkeypatch: Any) -> None:
    base = load_base_model(MODEL)
    params = sum(p.numel() for p in base.module.parameters())
    seen: list[int] = []
    real_prefill = sampling_module._prefill

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.get_num_threads())
        return real_prefill(*args, **kwargs)

    monkeypatch.setattr(sampling_module, "_prefill", spy)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        row = SampleRow(prompt=[1, 2, 3], adapter=None, max_tokens=2, temperature=0.0)
        small = generate(base.module, [row], tokenizer=None)
        big_rows = SERIAL_DECODE_WORK // params + 1
        big = generate(base.module, [row] * big_rows, tokenizer=None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 2]
    assert small[0].tokens == big[0].tokens == big[-1].tokens


def test_the_engine_worker_lowers_the_switch_interval_while_it_lives() -> None:
    import sys

    from tinkex_server._worker import ENGINE_SWITCH_INTERVAL_S, EngineWorker

    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    try:
        first, second = EngineWorker(), EngineWorker()
        assert first.run_sync(lambda engine: sys.getswitchinterval()) == ENGINE_SWITCH_INTERVAL_S
        assert second.run_sync(lambda engine: sys.getswitchinterval()) == ENGINE_SWITCH_INTERVAL_S
        first.close()
        # Still lowered while another engine lives; restored after the last one.
        assert sys.getswitchinterval() == ENGINE_SWITCH_INTERVAL_S
        second.close()
        assert sys.getswitchinterval() == 0.005
        # A worker that never built its engine changes nothing.
        EngineWorker().close()
        assert sys.getswitchinterval() == 0.005
    finally:
        sys.setswitchinterval(before)
