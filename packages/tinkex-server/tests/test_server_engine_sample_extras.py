"""The engine's 0.38 sampling extras against a full-vocabulary computation of the same model:
prompt_logprobs_last_n, topk_sample_logprobs, target_prompt_logprobs, prompt_alt_tokens_k."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from tinkex_server._engine import Engine, EngineInputError, LoraConfig, SampleRequest

MODEL = "tinkex/tiny-llama-100k"
PROMPT = [1, 17, 93, 4, 250, 31, 8, 77]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine = Engine(seed=0)
    engine.create_adapter("a", MODEL, LoraConfig(rank=4, seed=1))
    return engine


def _full_logp(engine: Engine, tokens: list[int]) -> torch.Tensor:
    """``[len(tokens), vocab]`` next-token logprobs, one forward of the base model."""
    slot = engine._slot("a")
    with torch.no_grad():
        hidden = slot.base.module.hidden_states(
            torch.tensor([tokens]), torch.arange(len(tokens))[None], lora=None
        )
        logits = slot.base.module.logits(hidden, None)[0]
    return torch.log_softmax(logits.float(), dim=-1)


def test_prompt_logprobs_last_n_scores_only_the_suffix(engine: Engine) -> None:
    full = engine.sample(
        SampleRequest(prompt=PROMPT, max_tokens=1, base_model=MODEL, prompt_logprobs=True, seed=1)
    )
    last = engine.sample(
        SampleRequest(
            prompt=PROMPT,
            max_tokens=1,
            base_model=MODEL,
            prompt_logprobs=True,
            topk_prompt_logprobs=3,
            prompt_logprobs_last_n=3,
            seed=1,
        )
    )
    assert full.prompt_logprobs is not None
    assert last.prompt_logprobs is not None
    assert len(last.prompt_logprobs) == len(PROMPT)
    assert last.prompt_logprobs[:-3] == [None] * (len(PROMPT) - 3)
    assert last.prompt_logprobs[-3:] == pytest.approx(full.prompt_logprobs[-3:], abs=1e-5)
    assert last.topk_prompt_logprobs is not None
    assert last.topk_prompt_logprobs[:-3] == [None] * (len(PROMPT) - 3)
    assert all(row is not None and len(row) == 3 for row in last.topk_prompt_logprobs[-3:])


def test_topk_sample_logprobs_match_the_full_vocabulary(engine: Engine) -> None:
    result = engine.sample(
        SampleRequest(
            prompt=PROMPT,
            max_tokens=4,
            base_model=MODEL,
            temperature=0.0,
            topk_sample_logprobs=5,
            stop_at_eos=False,
        )
    )
    seq = result.sequences[0]
    assert seq.topk_logprobs is not None
    assert len(seq.topk_logprobs) == len(seq.tokens)
    logp = _full_logp(engine, PROMPT + seq.tokens)
    for i, row in enumerate(seq.topk_logprobs):
        values, ids = torch.topk(logp[len(PROMPT) - 1 + i], 5)
        assert [t for t, _ in row] == ids.tolist()
        assert [v for _, v in row] == pytest.approx(values.tolist(), abs=1e-4)
        # Greedy: the chosen token is the top-1, with the same logprob.
        assert row[0][0] == seq.tokens[i]
        assert row[0][1] == pytest.approx(seq.logprobs[i], abs=1e-5)


def test_target_prompt_logprobs_score_chosen_ids(engine: Engine) -> None:
    ids = [[5, -1], [PROMPT[2], 9], [-1, -1], [0, 300], [7, 7], [PROMPT[6], 1], [2, 3]]
    result = engine.sample(
        SampleRequest(
            prompt=PROMPT, max_tokens=1, base_model=MODEL, target_prompt_logprobs=ids, seed=3
        )
    )
    got = result.target_prompt_logprobs
    assert got is not None
    assert len(got) == len(PROMPT) - 1
    logp = _full_logp(engine, PROMPT)
    for i, row in enumerate(ids):
        for j, token in enumerate(row):
            want = 0.0 if token < 0 else float(logp[i, token])
            assert got[i][j] == pytest.approx(want, abs=1e-5)


def test_prompt_alt_tokens_are_drawn_per_position(engine: Engine) -> None:
    greedy = engine.sample(
        SampleRequest(
            prompt=PROMPT, max_tokens=1, base_model=MODEL, temperature=0.0, prompt_alt_tokens_k=2
        )
    )
    assert greedy.prompt_alt_tokens is not None
    tokens, logprobs = greedy.prompt_alt_tokens
    logp = _full_logp(engine, PROMPT)
    assert tokens == [[int(torch.argmax(logp[i]))] * 2 for i in range(len(PROMPT) - 1)]
    assert logprobs[0][0] == pytest.approx(float(logp[0].max()), abs=1e-5)

    def drawn(seed: int) -> list[list[int]]:
        req = SampleRequest(
            prompt=PROMPT, max_tokens=1, base_model=MODEL, prompt_alt_tokens_k=4, seed=seed
        )
        out = engine.sample(req).prompt_alt_tokens
        assert out is not None
        for i, row in enumerate(out[0]):
            assert out[1][i] == pytest.approx([float(logp[i, t]) for t in row], abs=1e-5)
        return out[0]

    assert drawn(11) == drawn(11)
    assert drawn(11) != drawn(12)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"prompt_logprobs_last_n": 0}, "prompt_logprobs_last_n"),
        ({"prompt_logprobs_last_n": len(PROMPT)}, "prompt_logprobs_last_n"),
        ({"topk_sample_logprobs": -1}, "topk_sample_logprobs"),
        ({"prompt_alt_tokens_k": -2}, "prompt_alt_tokens_k"),
        ({"target_prompt_logprobs": [[1]] * 3}, "target_prompt_logprobs"),
        ({"target_prompt_logprobs": [[10**6]] * (len(PROMPT) - 1)}, "target_prompt_logprobs"),
    ],
)
def test_bad_extras_name_the_field(engine: Engine, extra: dict[str, object], field: str) -> None:
    with pytest.raises(EngineInputError) as info:
        engine.sample(
            SampleRequest(prompt=PROMPT, max_tokens=1, base_model=MODEL, **extra)  # type: ignore[arg-type]
        )
    assert info.value.field == field
