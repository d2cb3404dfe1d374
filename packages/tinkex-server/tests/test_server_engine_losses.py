"""The loss table drives the engine: names, required/optional inputs and config defaults come
from ``tinkex_types.LOSSES``; the engine only adds one implementation per name."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType

import pytest
import torch
from torch import Tensor

import tinkex_types._losses as loss_table
from tinkex_server._engine import Datum, Engine, EngineInputError, LoraConfig
from tinkex_server._engine.losses import LOSS_IMPLEMENTATIONS, implemented_losses
from tinkex_types import LOSSES, LossSpec

MODEL = "tinkex/tiny-llama-100k"
SEQS = [[1, 40, 41, 42, 43, 44, 2], [1, 300, 301, 302, 2], [1, 7, 8, 9, 10, 11, 12, 13, 2]]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _engine() -> Engine:
    engine = Engine(seed=0)
    engine.create_adapter("m", MODEL, LoraConfig(rank=4, seed=11))
    ce = [Datum(s[:-1], {"target_tokens": s[1:], "weights": [1.0] * (len(s) - 1)}) for s in SEQS]
    engine.forward_backward("m", ce)
    engine.optim_step("m", {"learning_rate": 1e-2})  # so that LoRA B != 0
    return engine


def _grads(engine: Engine) -> dict[str, Tensor]:
    out = {}
    for name, g in engine.adapter_grads("m").items():
        assert g is not None, name
        out[name] = g
    return out


def _close(got: Tensor, want: Tensor, rel: float = 1e-5) -> bool:
    scale = max(float(got.abs().max()), float(want.abs().max()), 1e-6)
    return float((got - want).abs().max()) <= rel * scale


def _rl_data(engine: Engine, shift: float, **extra: list[list[float]]) -> list[Datum]:
    gen = torch.Generator().manual_seed(3)
    out = []
    for i, s in enumerate(SEQS):
        lp = torch.tensor(engine.compute_logprobs(s, model_id="m")[1:])
        q = lp + (torch.rand(lp.shape, generator=gen) - 0.5) * 2 * shift
        inputs: dict[str, object] = {
            "target_tokens": s[1:],
            "logprobs": q.tolist(),
            "advantages": torch.randn(lp.shape, generator=gen).tolist(),
        }
        inputs.update({key: values[i] for key, values in extra.items()})
        out.append(Datum(s[:-1], inputs))
    return out


def _matches_cross_entropy_gradient(engine: Engine, data: list[Datum], dl: list[Tensor]) -> None:
    """The gradient in the adapter equals a cross-entropy one with weights -dloss/dlp."""
    got = _grads(engine)
    engine.zero_grad("m")
    ce = [
        Datum(
            d.tokens, {"target_tokens": d.loss_fn_inputs["target_tokens"], "weights": (-g).tolist()}
        )
        for d, g in zip(data, dl, strict=True)
    ]
    engine.forward_backward("m", ce)
    want = _grads(engine)
    for name in got:
        assert _close(got[name], want[name]), name


# -- the table and the implementations are one set of names ------------------------------


def test_every_table_loss_has_an_implementation_and_vice_versa() -> None:
    assert set(LOSS_IMPLEMENTATIONS) == set(LOSSES)
    assert implemented_losses() == list(LOSSES)


def test_a_loss_added_to_the_table_is_accepted_with_its_inputs_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = LossSpec(
        "scaled_ce",
        ("target_tokens", "weights", "scale"),
        optional_inputs=("offset",),
        config_defaults={"factor": 2.0},
        since="9.9",
    )
    monkeypatch.setattr(loss_table, "LOSSES", MappingProxyType({**LOSSES, spec.name: spec}))

    def scaled_ce(lp: Tensor, inputs: Mapping[str, Tensor], cfg: Mapping[str, float]) -> Tensor:
        offset = inputs.get("offset", torch.zeros_like(lp))
        return -cfg["factor"] * inputs["weights"] * inputs["scale"] * lp + offset

    monkeypatch.setitem(LOSS_IMPLEMENTATIONS, spec.name, scaled_ce)
    engine = _engine()
    s = SEQS[0]
    n = len(s) - 1
    base = {"target_tokens": s[1:], "weights": [1.0] * n}
    # A required input named by the table and missing from the datum is refused by name.
    with pytest.raises(EngineInputError, match="scaled_ce needs scale") as info:
        engine.forward_backward("m", [Datum(s[:-1], base)], "scaled_ce")
    assert info.value.field == "data[0].loss_fn_inputs"
    assert all(g is None for g in engine.adapter_grads("m").values())
    # Table inputs get the per-token shape check too (optional ones included).
    bad = {**base, "scale": [1.0] * n, "offset": [0.0]}
    with pytest.raises(EngineInputError, match="offset: has shape"):
        engine.forward_backward("m", [Datum(s[:-1], bad)], "scaled_ce")
    # Accepted with the table's config default, and overridable through loss_fn_config.
    lp = torch.tensor(engine.compute_logprobs(s, model_id="m")[1:])
    good = Datum(s[:-1], {**base, "scale": [0.5] * n, "offset": [0.25] * n})
    out = engine.forward("m", [good], "scaled_ce")
    want = -2.0 * 0.5 * lp + 0.25
    assert torch.allclose(torch.tensor(out.loss_fn_outputs[0]["elementwise_loss"].data), want)
    out = engine.forward_backward("m", [good], "scaled_ce", {"factor": 4.0})
    assert out.metrics["loss:sum"] == pytest.approx(float((-4.0 * 0.5 * lp + 0.25).sum()), abs=1e-4)
    assert all(g is not None for g in engine.adapter_grads("m").values())


def test_a_table_loss_without_an_implementation_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = LossSpec("future_loss", ("target_tokens", "weights"), since="9.9")
    monkeypatch.setattr(loss_table, "LOSSES", MappingProxyType({**LOSSES, spec.name: spec}))
    engine = _engine()
    s = SEQS[0]
    datum = Datum(s[:-1], {"target_tokens": s[1:], "weights": [1.0] * (len(s) - 1)})
    with pytest.raises(EngineInputError, match="'future_loss' is not implemented") as info:
        engine.forward_backward("m", [datum], "future_loss")
    assert info.value.field == "loss_fn"
    assert "gspo" in (info.value.fix or "")


def test_config_errors_come_from_the_table_as_engine_errors() -> None:
    engine = _engine()
    data = _rl_data(engine, shift=0.1)
    with pytest.raises(EngineInputError, match="above clip_high_threshold") as info:
        engine.forward("m", data, "gspo", {"clip_low_threshold": 1.5})
    assert info.value.field == "loss_fn_config.clip_low_threshold"
    # Numeric strings are numbers (0.38 may send config values as text).
    out = engine.forward("m", data, "ppo", {"clip_low_threshold": "0.5"})
    assert out.metrics["loss:sum"] == pytest.approx(
        engine.forward("m", data, "ppo", {"clip_low_threshold": 0.5}).metrics["loss:sum"]
    )


# -- gspo ----------------------------------------------------------------------------------


def _hand_gspo(
    lp: Tensor, q: Tensor, a: Tensor, mask: Tensor | None, lo: float, hi: float
) -> tuple[Tensor, Tensor]:
    """(elementwise loss, d loss / d lp), written out: one sequence ratio s for every token;
    the unclipped branch has gradient -s * A, the clipped one none unless s is inside."""
    sel = mask != 0 if mask is not None else torch.ones_like(lp, dtype=torch.bool)
    s = torch.exp((lp - q)[sel].mean())
    unclipped, clipped = s * a, s.clamp(lo, hi) * a
    el = -torch.minimum(unclipped, clipped)
    inside = bool(lo <= float(s) <= hi)
    use_unclipped = unclipped <= clipped
    grad = torch.where(use_unclipped | inside, -s * a, torch.zeros_like(a))
    return el, grad


@pytest.mark.parametrize(
    ("cfg", "with_mask"),
    [({}, False), ({}, True), ({"clip_low_threshold": 0.7, "clip_high_threshold": 1.4}, True)],
)
def test_gspo_matches_the_hand_written_formula(cfg: dict[str, float], with_mask: bool) -> None:
    engine = _engine()
    masks = [[float(i % 3 != 0) for i in range(len(s) - 1)] for s in SEQS]
    extra = {"sequence_ratio_mask": masks} if with_mask else {}
    data = _rl_data(engine, shift=0.6, **extra)
    out = engine.forward_backward("m", data, "gspo", cfg)
    defaults = LOSSES["gspo"].config_defaults
    lo = cfg.get("clip_low_threshold", defaults["clip_low_threshold"])
    hi = cfg.get("clip_high_threshold", defaults["clip_high_threshold"])
    total, dls = 0.0, []
    for d, o in zip(data, out.loss_fn_outputs, strict=True):
        lp = torch.tensor(o["logprobs"].data)
        q = torch.tensor(d.loss_fn_inputs["logprobs"])
        a = torch.tensor(d.loss_fn_inputs["advantages"])
        mask = torch.tensor(d.loss_fn_inputs["sequence_ratio_mask"]) if with_mask else None
        el, dl = _hand_gspo(lp, q, a, mask, lo, hi)
        assert torch.allclose(torch.tensor(o["elementwise_loss"].data), el, atol=1e-5)
        total += float(el.sum())
        dls.append(dl)
    assert out.metrics["loss:sum"] == pytest.approx(total, abs=1e-4)
    _matches_cross_entropy_gradient(engine, data, dls)


def test_gspo_mask_leaves_unmarked_tokens_out_of_the_ratio() -> None:
    engine = _engine()
    s = SEQS[0]
    n = len(s) - 1
    lp = torch.tensor(engine.compute_logprobs(s, model_id="m")[1:])
    adv = [1.0] * n
    mask = [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    q_marked = (lp - 0.1).tolist()
    # Only the sampler logprobs of unmarked tokens differ: the loss must not change.
    q_other = [*q_marked[:2], *(v - 3.0 for v in q_marked[2:])]
    cfg = {"clip_low_threshold": 0.0, "clip_high_threshold": 10.0}
    losses = []
    for q in (q_marked, q_other):
        datum = Datum(
            s[:-1],
            {"target_tokens": s[1:], "logprobs": q, "advantages": adv, "sequence_ratio_mask": mask},
        )
        losses.append(engine.forward("m", [datum], "gspo", cfg).loss_fn_outputs[0])
    first, second = (torch.tensor(o["elementwise_loss"].data) for o in losses)
    assert torch.allclose(first, second)
    assert torch.allclose(first, torch.full((n,), -float(torch.exp(torch.tensor(0.1)))), atol=1e-5)


def test_gspo_refuses_an_empty_mask_and_needs_the_rl_inputs() -> None:
    engine = _engine()
    s = SEQS[1]
    n = len(s) - 1
    inputs = {"target_tokens": s[1:], "logprobs": [0.0] * n, "advantages": [1.0] * n}
    empty = Datum(s[:-1], {**inputs, "sequence_ratio_mask": [0.0] * n})
    with pytest.raises(EngineInputError, match="marks no token") as info:
        engine.forward_backward("m", [empty], "gspo")
    assert info.value.field == "data[0].loss_fn_inputs.sequence_ratio_mask"
    missing = Datum(s[:-1], {"target_tokens": s[1:], "weights": [1.0] * n})
    with pytest.raises(EngineInputError, match="gspo needs logprobs, advantages"):
        engine.forward_backward("m", [missing], "gspo")
    assert all(g is None for g in engine.adapter_grads("m").values())
    assert LOSSES["gspo"].since == "0.38"
