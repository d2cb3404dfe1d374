"""Training: loss semantics (sums, any weights), gradients, RL losses, AdamW, LoRA targets."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinkex_server._engine import (
    AdamParams,
    Datum,
    Engine,
    EngineInputError,
    LoraConfig,
    UnknownModelError,
    bare_training_loop,
)
from tinkex_server._engine.lora import Adapter, LoraSpec, SingleLora
from tinkex_server._engine.optim import AdamW
from tinkex_server._engine.registry import load_base_model

MODEL = "tinkex/tiny-llama-100k"


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sft(tokens: list[int], weights: list[float] | None = None) -> Datum:
    n = len(tokens) - 1
    return Datum(
        tokens=tokens[:-1],
        loss_fn_inputs={
            "target_tokens": tokens[1:],
            "weights": weights if weights is not None else [1.0] * n,
        },
    )


SEQS = [[1, 40, 41, 42, 43, 44, 2], [1, 300, 301, 302, 2], [1, 7, 8, 9, 10, 11, 12, 13, 2]]


def trained_engine(steps: int = 1, **lora: object) -> Engine:
    """An engine with adapter "m" after ``steps`` SFT steps (so that B != 0)."""
    engine = Engine(seed=0)
    engine.create_adapter("m", MODEL, LoraConfig(rank=4, seed=11, **lora))  # type: ignore[arg-type]
    for _ in range(steps):
        engine.forward_backward("m", [sft(s) for s in SEQS])
        engine.optim_step("m", {"learning_rate": 1e-2})
    return engine


def close(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-5) -> bool:
    """Equal up to ``rel`` times the larger tensor's largest magnitude (float32 sums)."""
    scale = max(float(got.abs().max()), float(want.abs().max()), 1e-6)
    return float((got - want).abs().max()) <= rel * scale


def grads(engine: Engine) -> dict[str, torch.Tensor]:
    out = {}
    for name, g in engine.adapter_grads("m").items():
        assert g is not None, name
        out[name] = g
    return out


def test_gradients_scale_linearly_with_weights() -> None:
    engine = trained_engine()
    w = [0.5, -1.0, 2.0, 0.0, 1.5, 3.0]
    engine.forward_backward("m", [sft(SEQS[0], w)])
    g1 = grads(engine)
    engine.zero_grad("m")
    engine.forward_backward("m", [sft(SEQS[0], [2 * x for x in w])])
    g2 = grads(engine)
    assert any(float(g.abs().max()) > 0 for name, g in g1.items() if "lora_A" in name)
    for name in g1:
        assert close(g2[name], 2 * g1[name], 1e-6), name


def test_custom_loss_contract_weights_are_minus_dloss_dlogprobs() -> None:
    engine = trained_engine()
    data = [sft(s) for s in SEQS]
    fwd = engine.forward("m", data)
    lps = [torch.tensor(o["logprobs"].data, requires_grad=True) for o in fwd.loss_fn_outputs]

    def user_loss(values: list[torch.Tensor]) -> torch.Tensor:
        # Nonlinear in the logprobs, mixes datums, gives weights of both signs.
        flat = torch.cat(values)
        return (flat**2 * torch.linspace(-1, 2, flat.numel())).sum() / 10 + flat.exp().sum()

    user_loss(lps).backward()
    weighted = [
        Datum(
            tokens=d.tokens,
            loss_fn_inputs={
                "target_tokens": d.loss_fn_inputs["target_tokens"],
                "weights": (-lp.grad).tolist(),  # type: ignore[union-attr]
            },
        )
        for d, lp in zip(data, lps, strict=True)
    ]
    assert any(x < 0 for d in weighted for x in d.loss_fn_inputs["weights"])
    engine.forward_backward("m", weighted)
    got = grads(engine)

    # Reference: autograd of the user loss straight through the model.
    base = load_base_model(MODEL)
    info = engine.adapter_info("m")
    ref = Adapter(MODEL, base.module, LoraSpec(rank=info.rank, alpha=info.alpha, seed=info.seed))
    ref.load_state_dict(engine.adapter_state("m"), source="test")
    values = []
    for s in SEQS:
        logits = base.module(torch.tensor([s[:-1]]), SingleLora(ref))[0]
        values.append(torch.log_softmax(logits, -1).gather(-1, torch.tensor(s[1:])[:, None])[:, 0])
    user_loss(values).backward()
    for name, p in ref.named_parameters():
        assert p.grad is not None
        assert close(got[name], p.grad), name


def test_gradients_accumulate_until_optim_step_and_forward_is_side_effect_free() -> None:
    engine = trained_engine()
    before = engine.adapter_state("m")
    engine.forward("m", [sft(s) for s in SEQS])
    assert all(g is None for g in engine.adapter_grads("m").values())
    assert all(torch.equal(before[k], v) for k, v in engine.adapter_state("m").items())
    assert engine.adapter_info("m").step == 1

    engine.forward_backward("m", [sft(SEQS[0])])
    engine.forward_backward("m", [sft(SEQS[1]), sft(SEQS[2])])
    separate = grads(engine)
    engine.zero_grad("m")
    r = engine.forward_backward("m", [sft(s) for s in SEQS])
    together = grads(engine)
    for name in separate:
        assert close(separate[name], together[name]), name
    metrics = engine.optim_step("m", {"learning_rate": 1e-3})
    assert metrics["step:max"] == 2
    assert metrics["grad_norm:mean"] > 0
    assert all(g is None for g in engine.adapter_grads("m").values())
    assert r.metrics["loss:sum"] > 0


def test_sft_memorises_tiny_set() -> None:
    engine = Engine(seed=0)
    engine.create_adapter("m", "tinkex/tiny-llama-1m", LoraConfig(rank=16, seed=0))
    tok = engine.tokenizer("tinkex/tiny-llama-1m")
    assert tok is not None
    data = [sft([1, *tok.encode(t)]) for t in ["The cat sat on the mat.", "Two plus two is 4."]]
    start = engine.forward("m", data).metrics["loss:sum"]
    for _ in range(30):
        engine.forward_backward("m", data)
        engine.optim_step("m", {"learning_rate": 5e-3})
    end = engine.forward("m", data).metrics["loss:sum"]
    assert end < 0.1 * start, (start, end)


def _run(seed: int) -> tuple[list[float], dict[str, torch.Tensor], list[int]]:
    from tinkex_server._engine import SampleRequest

    engine = Engine(seed=seed)
    engine.create_adapter("m", MODEL, LoraConfig(rank=4))  # seed drawn from the engine seed
    losses = []
    for _ in range(3):
        losses.append(engine.forward_backward("m", [sft(s) for s in SEQS]).metrics["loss:sum"])
        engine.optim_step("m", {"learning_rate": 1e-2, "weight_decay": 0.1})
    sample = engine.sample(SampleRequest(prompt=[1, 40], max_tokens=8, model_id="m"))
    return losses, engine.adapter_state("m"), sample.sequences[0].tokens


def test_seeded_runs_are_bit_identical() -> None:
    a, b = _run(123), _run(123)
    assert a[0] == b[0]
    assert all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    assert a[2] == b[2]
    c = _run(124)
    assert not all(torch.equal(a[1][k], c[1][k]) for k in a[1])


def _rl_data(engine: Engine, shift: float) -> tuple[list[Datum], list[torch.Tensor]]:
    lps = [
        torch.tensor(o["logprobs"].data)
        for o in engine.forward("m", [sft(s) for s in SEQS]).loss_fn_outputs
    ]
    gen = torch.Generator().manual_seed(5)
    data, qs = [], []
    for s, lp in zip(SEQS, lps, strict=True):
        q = lp + (torch.rand(lp.shape, generator=gen) - 0.5) * 2 * shift
        adv = torch.randn(lp.shape, generator=gen)
        qs.append(q)
        data.append(
            Datum(
                tokens=s[:-1],
                loss_fn_inputs={
                    "target_tokens": s[1:],
                    "logprobs": q.tolist(),
                    "advantages": adv.tolist(),
                },
            )
        )
    return data, lps


def _hand_loss(
    loss: str, lp: torch.Tensor, q: torch.Tensor, a: torch.Tensor, cfg: dict[str, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(elementwise loss, d loss / d lp) written out by hand."""
    r = torch.exp(lp - q)
    if loss == "importance_sampling":
        return -r * a, -r * a
    if loss == "ppo":
        lo, hi = cfg.get("clip_low_threshold", 0.8), cfg.get("clip_high_threshold", 1.2)
        unclipped, clipped = r * a, r.clamp(lo, hi) * a
        use_unclipped = unclipped <= clipped
        el = -torch.where(use_unclipped, unclipped, clipped)
        inside = (r >= lo) & (r <= hi)
        grad = torch.where(use_unclipped | inside, -r * a, torch.zeros_like(r))
        return el, grad
    if loss == "cispo":
        lo, hi = cfg.get("clip_low_threshold", 0.0), cfg.get("clip_high_threshold", 4.0)
        c = r.clamp(lo, hi)
        return -c * a * lp, -c * a
    if loss == "dro":
        beta = cfg.get("beta", 0.05)
        return -(lp * a - 0.5 * beta * (lp - q) ** 2), -a + beta * (lp - q)
    raise AssertionError(loss)


@pytest.mark.parametrize(
    ("loss", "cfg"),
    [
        ("importance_sampling", {}),
        ("ppo", {}),
        ("ppo", {"clip_low_threshold": 0.9, "clip_high_threshold": 1.05, "ignored": 1.0}),
        ("cispo", {}),
        ("cispo", {"clip_low_threshold": 0.95, "clip_high_threshold": 1.1}),
        ("dro", {}),
        ("dro", {"beta": 0.7}),
    ],
)
def test_rl_losses_match_hand_written_formulas(loss: str, cfg: dict[str, float]) -> None:
    engine = trained_engine()
    data, lps = _rl_data(engine, shift=0.6)
    out = engine.forward_backward("m", data, loss, cfg)
    got = grads(engine)
    total = 0.0
    ce_data = []
    clipped_somewhere = False
    for d, lp, o in zip(data, lps, out.loss_fn_outputs, strict=True):
        q = torch.tensor(d.loss_fn_inputs["logprobs"])
        a = torch.tensor(d.loss_fn_inputs["advantages"])
        el, dl = _hand_loss(loss, lp, q, a, cfg)
        r = torch.exp(lp - q)
        clipped_somewhere |= bool(((r < 0.8) | (r > 1.2)).any())
        assert torch.allclose(torch.tensor(o["logprobs"].data), lp, atol=1e-6)
        assert torch.allclose(torch.tensor(o["elementwise_loss"].data), el, atol=1e-5)
        total += float(el.sum())
        ce_data.append(
            Datum(
                tokens=d.tokens,
                loss_fn_inputs={
                    "target_tokens": d.loss_fn_inputs["target_tokens"],
                    "weights": (-dl).tolist(),
                },
            )
        )
    assert clipped_somewhere
    assert out.metrics["loss:sum"] == pytest.approx(total, abs=1e-4)
    # The RL gradient equals a cross-entropy gradient with weights -dloss/dlp.
    engine.zero_grad("m")
    engine.forward_backward("m", ce_data)
    want = grads(engine)
    for name in got:
        assert close(got[name], want[name]), name


def test_adamw_matches_torch_adamw_with_decay_and_clipping() -> None:
    gen = torch.Generator().manual_seed(0)
    ours = [("a", torch.nn.Parameter(torch.randn(3, 4, generator=gen)))]
    theirs = [torch.nn.Parameter(ours[0][1].detach().clone())]
    opt = AdamW(ours)
    hp = AdamParams(
        learning_rate=0.05, beta1=0.8, beta2=0.9, eps=1e-8, weight_decay=0.1, grad_clip_norm=0.5
    )
    ref = torch.optim.AdamW(theirs, lr=0.05, betas=(0.8, 0.9), eps=1e-8, weight_decay=0.1)
    for _ in range(4):
        g = torch.randn(3, 4, generator=gen) * 3
        ours[0][1].grad = g.clone()
        theirs[0].grad = g.clone()
        norm = torch.nn.utils.clip_grad_norm_(theirs, 0.5)
        metrics = opt.step(hp)
        ref.step()
        assert metrics["grad_norm:mean"] == pytest.approx(float(norm), rel=1e-6)
        assert torch.allclose(ours[0][1], theirs[0], atol=1e-6)
    assert opt.step_count == 4


def test_lora_targets_follow_config() -> None:
    engine = Engine(seed=0)
    engine.create_adapter("all", MODEL, LoraConfig(rank=2, seed=0))
    engine.create_adapter(
        "attn", MODEL, LoraConfig(rank=2, seed=0, train_mlp=False, train_unembed=False)
    )
    engine.create_adapter("mlp", MODEL, LoraConfig(rank=2, seed=0, train_attn=False))
    keys = {m: set(engine.adapter_state(m)) for m in ("all", "attn", "mlp")}
    assert any(".mlp." in k for k in keys["all"])
    assert any("lm_head" in k for k in keys["all"])
    assert not any(".mlp." in k for k in keys["attn"])
    assert not any("lm_head" in k for k in keys["attn"])
    assert not any("self_attn" in k for k in keys["mlp"])
    assert any("lm_head" in k for k in keys["mlp"])
    assert engine.adapter_info("attn").target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert engine.adapter_info("mlp").num_parameters < engine.adapter_info("all").num_parameters
    state = engine.adapter_state("all")
    a = state["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    b = state["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    assert a.shape == (2, 48)
    assert b.shape == (48, 2)
    assert float(a.abs().max()) <= 1 / math.sqrt(48)
    assert float(b.abs().max()) == 0
    with pytest.raises(EngineInputError, match="nothing to train"):
        engine.create_adapter(
            "none", MODEL, LoraConfig(train_attn=False, train_mlp=False, train_unembed=False)
        )
    with pytest.raises(EngineInputError, match="rank"):
        engine.create_adapter("bad", MODEL, LoraConfig(rank=0))


def test_adapters_are_independent_and_seeded() -> None:
    engine = Engine(seed=0)
    engine.create_adapter("a", MODEL, {"rank": 4, "seed": 1})
    engine.create_adapter("b", MODEL, {"rank": 4, "seed": 1})
    engine.create_adapter("c", MODEL, {"rank": 4, "seed": 2})
    sa, sb, sc = (engine.adapter_state(m) for m in "abc")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    before = engine.forward("b", [sft(SEQS[0])]).loss_fn_outputs[0]["logprobs"].data
    engine.forward_backward("a", [sft(SEQS[0])])
    engine.optim_step("a", {"learning_rate": 1e-2})
    assert engine.forward("b", [sft(SEQS[0])]).loss_fn_outputs[0]["logprobs"].data == before
    assert engine.forward("a", [sft(SEQS[0])]).loss_fn_outputs[0]["logprobs"].data != before
    engine.remove_adapter("a")
    assert engine.list_adapters() == ["b", "c"]
    with pytest.raises(UnknownModelError):
        engine.forward("a", [sft(SEQS[0])])


def test_two_dimensional_targets() -> None:
    engine = trained_engine()
    tokens = SEQS[0][:-1]
    targets = [[t, (t * 7) % 1000] for t in SEQS[0][1:]]
    weights = [[1.0, -0.5]] * len(targets)
    out = engine.forward("m", [Datum(tokens, {"target_tokens": targets, "weights": weights})])
    lp = out.loss_fn_outputs[0]["logprobs"]
    assert lp.shape == [len(tokens), 2]
    first = engine.forward("m", [sft(SEQS[0])]).loss_fn_outputs[0]["logprobs"].data
    assert torch.allclose(torch.tensor(lp.tolist())[:, 0], torch.tensor(first), atol=1e-6)


def test_bad_inputs_raise_clear_errors_and_leave_no_gradient() -> None:
    engine = trained_engine()
    good = sft(SEQS[0])
    cases: list[tuple[list[Datum], str, dict[str, object] | None, str]] = [
        (
            [good, Datum([1, 2, 3], {"target_tokens": [2, 3, 4]})],
            "cross_entropy",
            None,
            r"data\[1\].loss_fn_inputs: cross_entropy needs weights",
        ),
        (
            [Datum([1, 2, 3], {"target_tokens": [2, 3], "weights": [1, 1]})],
            "cross_entropy",
            None,
            r"target_tokens: has shape \[2\], but the model input has 3",
        ),
        (
            [Datum([1, 2], {"target_tokens": [2, 3], "weights": [1.0]})],
            "cross_entropy",
            None,
            "weights: has shape",
        ),
        (
            [Datum([1, 2], {"target_tokens": [2, 5000], "weights": [1, 1]})],
            "cross_entropy",
            None,
            "out of range",
        ),
        (
            [Datum([1, 2], {"target_tokens": [2, 3], "weights": [1, float("nan")]})],
            "cross_entropy",
            None,
            "NaN",
        ),
        ([Datum([], {"target_tokens": [], "weights": []})], "cross_entropy", None, "non-empty"),
        (
            [Datum([1] * 2049, {"target_tokens": [1] * 2049, "weights": [1.0] * 2049})],
            "cross_entropy",
            None,
            "more than the context length 2048",
        ),
        ([good], "hinge", None, "unknown loss 'hinge'"),
        (
            [Datum([1, 2], {"target_tokens": [2, 3], "logprobs": [0, 0], "advantages": [1, 1]})],
            "ppo",
            {"clip_low_threshold": 1.5},
            "above clip_high_threshold",
        ),
        (
            [Datum([1, 2], {"target_tokens": [2, 3], "logprobs": [0, 0], "advantages": [1, 1]})],
            "dro",
            {"beta": "x"},
            "beta: must be a number",
        ),
        (
            [Datum([1, 2], {"target_tokens": [2, 3], "weights": [1, 1]})],
            "importance_sampling",
            None,
            "needs logprobs, advantages",
        ),
    ]
    for data, loss, cfg, pattern in cases:
        with pytest.raises(EngineInputError, match=pattern) as info:
            engine.forward_backward("m", data, loss, cfg)
        assert info.value.field
        assert all(g is None for g in engine.adapter_grads("m").values())
    with pytest.raises(EngineInputError, match="learning_rate"):
        engine.optim_step("m", {"learning_rate": -1.0})
    with pytest.raises(EngineInputError, match="beta2"):
        engine.optim_step("m", AdamParams(beta2=1.0))
    assert engine.adapter_info("m").step == 1


@settings(deadline=None, max_examples=15)
@given(
    weights=st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=4, max_size=4),
)
def test_cross_entropy_loss_is_weighted_sum(weights: list[float]) -> None:
    engine = _shared()
    tokens = [1, 40, 41, 42, 43]
    out = engine.forward("m", [sft(tokens, weights)])
    lp = out.loss_fn_outputs[0]["logprobs"].data
    expected = -sum(w * x for w, x in zip(weights, lp, strict=True))
    assert out.metrics["loss:sum"] == pytest.approx(expected, rel=1e-5, abs=1e-5)


@functools.cache
def _shared() -> Engine:
    return trained_engine()


def test_bare_training_loop_reports_timings_and_learns() -> None:
    result = bare_training_loop(
        MODEL, batch_size=2, seq_len=16, steps=3, warmup=1, learning_rate=1e-2
    )
    assert len(result.step_seconds) == 3
    assert len(result.losses) == 4
    assert result.losses[-1] < result.losses[0]
    assert result.tokens_per_second > 0


def test_wire_models_are_accepted_as_they_are() -> None:
    import tinkex_types as tt

    engine = Engine(seed=0)
    engine.create_adapter("w", MODEL, tt.LoraConfig(rank=4, seed=11))
    engine.create_adapter("e", MODEL, LoraConfig(rank=4, seed=11))
    seq = SEQS[0]
    wire = tt.Datum(
        model_input=tt.ModelInput.from_ints(seq[:-1]),
        loss_fn_inputs={"target_tokens": seq[1:], "weights": [1.0] * (len(seq) - 1)},
    )
    assert isinstance(wire.loss_fn_inputs["weights"], tt.TensorData)
    a = engine.forward_backward("w", [wire])
    b = engine.forward_backward("e", [sft(seq)])
    assert a.metrics == b.metrics
    as_tensor = Datum(torch.tensor(seq[:-1]), sft(seq).loss_fn_inputs)
    assert engine.forward("e", [as_tensor]).metrics == engine.forward("e", [sft(seq)]).metrics
    ma = engine.optim_step("w", tt.AdamParams(learning_rate=1e-2, grad_clip_norm=1.0))
    mb = engine.optim_step("e", AdamParams(learning_rate=1e-2, grad_clip_norm=1.0))
    assert ma == mb
    sa, sb = engine.adapter_state("w"), engine.adapter_state("e")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    image = tt.Datum(
        model_input=tt.ModelInput(
            chunks=[
                tt.EncodedTextChunk(tokens=[1, 2]),
                tt.ImageChunk(data=b"\x89PNG", format="png"),
            ]
        ),
        loss_fn_inputs={"target_tokens": [2, 3], "weights": [1.0, 1.0]},
    )
    with pytest.raises(EngineInputError, match="image"):
        engine.forward("w", [image])
