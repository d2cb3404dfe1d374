"""Sampling: greedy/seeded determinism, stops, batching, logprobs, validation."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinkex_server._engine import Datum, Engine, EngineInputError, LoraConfig, SampleRequest
from tinkex_server._engine.lora import Adapter, LoraSpec, SingleLora
from tinkex_server._engine.registry import load_base_model
from tinkex_server._engine.sampling import choose_token
from tinkex_types import Tokenizer

MODEL = "tinkex/tiny-llama-100k"


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _sft(tokens: list[int]) -> Datum:
    return Datum(tokens[:-1], {"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)})


def _engine() -> Engine:
    """Two trained adapters of different ranks (so their outputs differ from the base)."""
    engine = Engine(seed=0)
    tok = engine.tokenizer(MODEL)
    assert tok is not None
    engine.create_adapter("a", MODEL, LoraConfig(rank=4, seed=1))
    engine.create_adapter("b", MODEL, LoraConfig(rank=8, seed=2, train_mlp=False))
    text_a = [1, *tok.encode("Hello! How are you today? I am fine, thank you."), 2]
    text_b = [1, *tok.encode("one two three four five six seven eight nine ten"), 2]
    for _ in range(40):
        engine.forward_backward("a", [_sft(text_a)])
        engine.optim_step("a", {"learning_rate": 3e-3})
        engine.forward_backward("b", [_sft(text_b)])
        engine.optim_step("b", {"learning_rate": 3e-3})
    return engine


class _Lazy:
    """Built on first use (inside a test, so under the one-thread fixture)."""

    @functools.cached_property
    def engine(self) -> Engine:
        return _engine()

    @functools.cached_property
    def tok(self) -> Tokenizer:
        tok = self.engine.tokenizer(MODEL)
        assert tok is not None
        return tok


_LAZY = _Lazy()


def _naive_greedy(model_id: str, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding by re-running the full forward pass each step (no KV cache)."""
    engine = _LAZY.engine
    base = load_base_model(MODEL)
    info = engine.adapter_info(model_id)
    spec = LoraSpec(
        rank=info.rank,
        alpha=info.alpha,
        seed=info.seed,
        train_attn=info.train_attn,
        train_mlp=info.train_mlp,
        train_unembed=info.train_unembed,
    )
    adapter = Adapter(MODEL, base.module, spec)
    adapter.load_state_dict(engine.adapter_state(model_id), source="test")
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = base.module(torch.tensor([seq]), SingleLora(adapter))[0, -1]
            seq.append(int(logits.argmax()))
    return seq[len(prompt) :]


def test_greedy_is_deterministic_and_matches_uncached_decoding() -> None:
    engine = _LAZY.engine
    tok = _LAZY.tok
    prompt = [1, *tok.encode("Hello! How")]
    req = SampleRequest(
        prompt=prompt, max_tokens=8, model_id="a", temperature=0.0, stop_at_eos=False
    )
    first = engine.sample(req).sequences[0]
    assert first == engine.sample(req).sequences[0]
    assert first.stop_reason == "length"
    assert len(first.tokens) == 8
    assert first.tokens == _naive_greedy("a", prompt, 8)
    # Longer than the cache's initial room (64 positions): the cache grows correctly.
    long = engine.sample(
        SampleRequest(
            prompt=prompt, max_tokens=100, model_id="b", temperature=0.0, stop_at_eos=False
        )
    ).sequences[0]
    assert len(long.tokens) == 100
    assert long.tokens == _naive_greedy("b", prompt, 100)
    # The adapter learned its text: greedy continues it.
    assert tok.decode(first.tokens).startswith(" are you today")


def test_same_seed_same_tokens_and_sample_i_uses_seed_plus_i() -> None:
    engine = _LAZY.engine
    base = SampleRequest(
        prompt=[1, 40, 41], max_tokens=10, model_id="a", seed=7, num_samples=3, stop_at_eos=False
    )
    r1, r2 = engine.sample(base), engine.sample(base)
    assert [s.tokens for s in r1.sequences] == [s.tokens for s in r2.sequences]
    assert r1.seed == 7
    assert len({tuple(s.tokens) for s in r1.sequences}) == 3
    shifted = engine.sample(
        SampleRequest(prompt=[1, 40, 41], max_tokens=10, model_id="a", seed=8, stop_at_eos=False)
    )
    assert shifted.sequences[0].tokens == r1.sequences[1].tokens
    unseeded = engine.sample(
        SampleRequest(prompt=[1, 40, 41], max_tokens=10, model_id="a", stop_at_eos=False)
    )
    replay = engine.sample(
        SampleRequest(
            prompt=[1, 40, 41], max_tokens=10, model_id="a", seed=unseeded.seed, stop_at_eos=False
        )
    )
    assert replay.sequences[0].tokens == unseeded.sequences[0].tokens


def _mixed_requests() -> list[SampleRequest]:
    tok = _LAZY.tok
    return [
        SampleRequest(
            prompt=[1, *tok.encode("Hello!")],
            max_tokens=12,
            model_id="a",
            seed=1,
            num_samples=2,
            temperature=0.9,
            top_k=50,
        ),
        SampleRequest(
            prompt=[1, *tok.encode("one two three")], max_tokens=5, model_id="b", seed=2, top_p=0.9
        ),
        SampleRequest(prompt=[1, 5], max_tokens=9, base_model=MODEL, seed=3, temperature=1.3),
        SampleRequest(
            prompt=[1, *tok.encode("The quick brown fox jumps")],
            max_tokens=7,
            model_id="a",
            temperature=0.0,
            prompt_logprobs=True,
            topk_prompt_logprobs=3,
        ),
        SampleRequest(
            prompt=[1, *tok.encode("one")],
            max_tokens=15,
            model_id="b",
            seed=4,
            stop_strings=["five"],
        ),
        SampleRequest(prompt=[1, 9, 10], max_tokens=80, model_id="b", seed=5, stop_at_eos=False),
    ]


def test_batched_equals_one_by_one() -> None:
    engine = _LAZY.engine
    requests = _mixed_requests()
    batched = engine.sample_batch(requests)
    for req, got in zip(requests, batched, strict=True):
        alone = engine.sample(req)
        assert [s.tokens for s in got.sequences] == [s.tokens for s in alone.sequences]
        assert [s.stop_reason for s in got.sequences] == [s.stop_reason for s in alone.sequences]
        for x, y in zip(got.sequences, alone.sequences, strict=True):
            assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-5)
        if req.prompt_logprobs:
            assert got.prompt_logprobs is not None
            assert alone.prompt_logprobs is not None
            assert got.prompt_logprobs[0] is None
            assert torch.allclose(
                torch.tensor(got.prompt_logprobs[1:]),
                torch.tensor(alone.prompt_logprobs[1:]),
                atol=1e-5,
            )
    # Small batches (forced chunking) give the same tokens too.
    small = Engine(seed=0, max_sample_rows=2)
    for mid in ("a", "b"):
        small.load_sampler_weights(mid, _save(mid))
    chunked = small.sample_batch(requests)
    assert [[s.tokens for s in r.sequences] for r in chunked] == [
        [s.tokens for s in r.sequences] for r in batched
    ]


def _save(model_id: str) -> str:
    engine = _LAZY.engine
    import tempfile

    path = tempfile.mkdtemp(prefix="tinkex-engine-test-")
    engine.save_sampler_weights(model_id, f"{path}/{model_id}")
    return f"{path}/{model_id}"


def test_sampled_logprobs_and_prompt_logprobs_match_forward() -> None:
    engine = _LAZY.engine
    tok = _LAZY.tok
    prompt = [1, *tok.encode("Hello! How are")]
    res = engine.sample(
        SampleRequest(
            prompt=prompt,
            max_tokens=6,
            model_id="a",
            seed=11,
            temperature=1.5,
            top_k=20,
            prompt_logprobs=True,
            topk_prompt_logprobs=4,
            stop_at_eos=False,
        )
    )
    seq = res.sequences[0]
    full = prompt + seq.tokens
    fwd = engine.forward("a", [_sft(full)]).loss_fn_outputs[0]["logprobs"].data
    # Sampled-token logprobs are under the raw (untempered, unfiltered) distribution.
    assert torch.allclose(
        torch.tensor(seq.logprobs), torch.tensor(fwd[len(prompt) - 1 :]), atol=1e-5
    )
    assert res.prompt_logprobs is not None
    assert len(res.prompt_logprobs) == len(prompt)
    assert res.prompt_logprobs[0] is None
    assert torch.allclose(
        torch.tensor(res.prompt_logprobs[1:]), torch.tensor(fwd[: len(prompt) - 1]), atol=1e-5
    )
    tops = res.topk_prompt_logprobs
    assert tops is not None
    assert tops[0] is None
    assert len(tops) == len(prompt)
    for i, pairs in enumerate(tops[1:], start=1):
        assert pairs is not None
        assert len(pairs) == 4
        values = [v for _, v in pairs]
        assert values == sorted(values, reverse=True)
        actual = res.prompt_logprobs[i]
        assert actual is not None
        assert actual <= values[0] + 1e-6
    assert engine.compute_logprobs(prompt, model_id="a")[1:] == pytest.approx(
        res.prompt_logprobs[1:], abs=1e-5
    )


def test_stop_tokens_strings_eos_and_length() -> None:
    engine = _LAZY.engine
    tok = _LAZY.tok
    prompt = [1, *tok.encode("Hello! How")]
    greedy = engine.sample(
        SampleRequest(
            prompt=prompt, max_tokens=20, model_id="a", temperature=0.0, stop_at_eos=False
        )
    ).sequences[0]
    stop_id = greedy.tokens[3]
    first = greedy.tokens.index(stop_id)
    r = engine.sample(
        SampleRequest(
            prompt=prompt,
            max_tokens=20,
            model_id="a",
            temperature=0.0,
            stop_token_ids=[stop_id],
            stop_at_eos=False,
        )
    ).sequences[0]
    assert r.tokens == greedy.tokens[: first + 1]
    assert r.stop_reason == "stop"
    # Stop string: the sequence ends at the token that completes the string.
    text = tok.decode(greedy.tokens)
    target = "today"
    assert target in text
    r = engine.sample(
        SampleRequest(
            prompt=prompt,
            max_tokens=20,
            model_id="a",
            temperature=0.0,
            stop_strings=[target],
            stop_at_eos=False,
        )
    ).sequences[0]
    assert r.stop_reason == "stop"
    assert target in tok.decode(r.tokens)
    assert target not in tok.decode(r.tokens[:-1])
    assert r.tokens == greedy.tokens[: len(r.tokens)]
    # EOS (the adapter learned to end its text with <|eos|> = 2).
    eos_run = engine.sample(
        SampleRequest(prompt=prompt, max_tokens=30, model_id="a", temperature=0.0)
    ).sequences[0]
    assert eos_run.stop_reason == "stop"
    assert eos_run.tokens[-1] == 2
    no_eos = engine.sample(
        SampleRequest(
            prompt=prompt, max_tokens=30, model_id="a", temperature=0.0, stop_at_eos=False
        )
    ).sequences[0]
    assert no_eos.stop_reason == "length"
    assert len(no_eos.tokens) == 30
    assert no_eos.tokens[: len(eos_run.tokens)] == eos_run.tokens


def test_top_k_one_and_tiny_top_p_are_greedy() -> None:
    engine = _LAZY.engine
    tok = _LAZY.tok
    prompt = [1, *tok.encode("one two")]
    greedy = (
        engine.sample(
            SampleRequest(
                prompt=prompt, max_tokens=6, model_id="b", temperature=0.0, stop_at_eos=False
            )
        )
        .sequences[0]
        .tokens
    )
    k1 = (
        engine.sample(
            SampleRequest(
                prompt=prompt,
                max_tokens=6,
                model_id="b",
                seed=3,
                temperature=2.0,
                top_k=1,
                stop_at_eos=False,
            )
        )
        .sequences[0]
        .tokens
    )
    p0 = (
        engine.sample(
            SampleRequest(
                prompt=prompt,
                max_tokens=6,
                model_id="b",
                seed=3,
                temperature=2.0,
                top_p=1e-9,
                stop_at_eos=False,
            )
        )
        .sequences[0]
        .tokens
    )
    assert greedy == k1 == p0


@settings(deadline=None, max_examples=25)
@given(
    seed=st.integers(0, 2**40),
    k=st.integers(1, 30),
    p=st.floats(0.05, 1.0),
    temperature=st.floats(0.1, 3.0),
)
def test_choose_token_respects_filters(seed: int, k: int, p: float, temperature: float) -> None:
    logits = torch.randn(200, generator=torch.Generator().manual_seed(seed % 1000)) * 3
    gen = torch.Generator().manual_seed(seed)
    top_k_set = set(torch.topk(logits, k).indices.tolist())
    probs = torch.softmax(logits.double() / temperature, -1)
    order = torch.sort(probs, descending=True, stable=True).indices.tolist()
    nucleus, mass = [], 0.0
    for idx in order:
        if mass >= p and nucleus:
            break
        nucleus.append(idx)
        mass += float(probs[idx])
    for _ in range(5):
        assert (
            choose_token(logits, temperature=temperature, top_k=k, top_p=1.0, generator=gen)
            in top_k_set
        )
        assert choose_token(
            logits, temperature=temperature, top_k=-1, top_p=p, generator=gen
        ) in set(nucleus)


def test_choose_token_frequencies_follow_softmax() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    for _ in range(4000):
        counts[choose_token(logits, temperature=1.0, top_k=-1, top_p=1.0, generator=gen)] += 1
    assert torch.allclose(counts / 4000, torch.softmax(logits, -1), atol=0.03)


def test_invalid_requests() -> None:
    engine = _LAZY.engine
    ok = SampleRequest(prompt=[1, 2], max_tokens=3, model_id="a", seed=0)
    bad = [
        (SampleRequest(prompt=[], max_tokens=3, model_id="a"), "prompt"),
        (SampleRequest(prompt=[1, 5000], max_tokens=3, model_id="a"), "prompt"),
        (SampleRequest(prompt=[1], max_tokens=0, model_id="a"), "max_tokens"),
        (SampleRequest(prompt=[1], max_tokens=3, model_id="a", temperature=-1), "temperature"),
        (SampleRequest(prompt=[1], max_tokens=3, model_id="a", top_p=0.0), "top_p"),
        (SampleRequest(prompt=[1], max_tokens=3, model_id="a", num_samples=0), "num_samples"),
        (SampleRequest(prompt=[1], max_tokens=5000, model_id="a"), "context length"),
        (SampleRequest(prompt=[1], max_tokens=3), "model_id"),
        (SampleRequest(prompt=[1], max_tokens=3, model_id="nope"), "no model 'nope'"),
        (SampleRequest(prompt=[1], max_tokens=3, base_model="no/such-model"), "neither a built-in"),
    ]
    for req, pattern in bad:
        with pytest.raises(EngineInputError, match=pattern):
            engine.sample(req)
    results = engine.sample_batch([ok, bad[0][0], ok], return_exceptions=True)
    assert isinstance(results[1], EngineInputError)
    assert not isinstance(results[0], Exception)
    assert not isinstance(results[2], Exception)
    assert results[0].sequences[0].tokens == results[2].sequences[0].tokens  # type: ignore[union-attr]


def test_a_mixed_batch_is_decoded_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from tinkex_server._engine import sampler as engine_module

    engine = _LAZY.engine
    calls: list[int] = []
    real = engine_module.generate

    def counting(model, rows, **kw):  # type: ignore[no-untyped-def]
        calls.append(len(rows))
        return real(model, rows, **kw)

    monkeypatch.setattr(engine_module, "generate", counting)
    results = engine.sample_batch(_mixed_requests())
    assert calls == [sum(r.num_samples for r in _mixed_requests())]
    assert len(results) == 6
