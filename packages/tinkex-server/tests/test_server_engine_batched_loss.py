"""A chunk of datums is scored in one pass: the logprobs of every datum come from one call
over all rows (with or without an ``lm_head`` adapter), and an elementwise loss is computed
over the whole chunk at once. Every datum's outputs, the loss and the gradients are those of
the datum scored alone."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType

import pytest
import torch
from torch import Tensor

import tinkex_types._losses as loss_table
from tinkex_server._engine import Datum, Engine, LoraConfig
from tinkex_server._engine.losses import LOSS_IMPLEMENTATIONS, loss_is_elementwise, register_loss
from tinkex_types import LOSSES, LossSpec

MODEL = "tinkex/tiny-llama-100k"
LENGTHS = (9, 4, 9, 13)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(loss: str, lengths: tuple[int, ...]) -> list[Datum]:
    gen = torch.Generator().manual_seed(7)
    out = []
    for n in lengths:
        tokens = torch.randint(3, 200, (n + 1,), generator=gen).tolist()
        inputs: dict[str, object] = {"target_tokens": tokens[1:]}
        if loss == "cross_entropy":
            inputs["weights"] = (torch.rand(n, generator=gen) * 2 - 0.5).tolist()
        else:
            inputs["logprobs"] = (-torch.rand(n, generator=gen) * 4).tolist()
            inputs["advantages"] = torch.randn(n, generator=gen).tolist()
        out.append(Datum(tokens[:-1], inputs))
    return out


def _engine(unembed: bool) -> Engine:
    engine = Engine(seed=0)
    engine.create_adapter("m", MODEL, LoraConfig(rank=4, seed=3, train_unembed=unembed))
    warm = _data("cross_entropy", (6, 6))
    engine.forward_backward("m", warm)
    engine.optim_step("m", {"learning_rate": 1e-2})  # LoRA B != 0: the adapter matters
    return engine


def _close(got: Tensor, want: Tensor, rel: float = 1e-5) -> bool:
    scale = max(float(got.abs().max()), float(want.abs().max()), 1e-6)
    return float((got - want).abs().max()) <= rel * scale


def _one_by_one(
    engine: Engine, data: list[Datum], loss: str
) -> tuple[list[dict[str, list[float]]], float, dict[str, Tensor]]:
    outputs, total = [], 0.0
    for datum in data:
        out = engine.forward_backward("m", [datum], loss)
        outputs.append({k: list(v.data) for k, v in out.loss_fn_outputs[0].items()})
        total += out.metrics["loss:sum"]
    grads = {k: g.clone() for k, g in engine.adapter_grads("m").items() if g is not None}
    engine.zero_grad("m")
    return outputs, total, grads


@pytest.mark.parametrize("unembed", [True, False])
@pytest.mark.parametrize("loss", [*LOSSES])
@pytest.mark.parametrize("lengths", [LENGTHS, (9, 9, 9)])
def test_a_chunk_scores_every_datum_as_if_alone(
    unembed: bool, loss: str, lengths: tuple[int, ...]
) -> None:
    engine = _engine(unembed)
    data = _data(loss, lengths)
    alone, alone_total, alone_grads = _one_by_one(engine, data, loss)
    out = engine.forward_backward("m", data, loss)
    assert len(out.loss_fn_outputs) == len(data)
    for got, want, n in zip(out.loss_fn_outputs, alone, lengths, strict=True):
        for key in ("logprobs", "elementwise_loss"):
            assert got[key].shape == [n]
            assert _close(torch.tensor(got[key].data), torch.tensor(want[key])), key
    assert out.metrics["loss:sum"] == pytest.approx(alone_total, rel=1e-5, abs=1e-5)
    grads = engine.adapter_grads("m")
    assert set(grads) == set(alone_grads)
    for name, want in alone_grads.items():
        got = grads[name]
        assert got is not None, name
        assert _close(got, want, rel=1e-4), name


def test_two_dimensional_targets_in_one_chunk() -> None:
    engine = _engine(True)
    gen = torch.Generator().manual_seed(1)
    data = []
    for n in (5, 3):
        tokens = torch.randint(3, 200, (n,), generator=gen).tolist()
        targets = torch.randint(3, 200, (n, 2), generator=gen).tolist()
        weights = torch.rand(n, 2, generator=gen).tolist()
        data.append(Datum(tokens, {"target_tokens": targets, "weights": weights}))
    both = engine.forward("m", data)
    for datum, got in zip(data, both.loss_fn_outputs, strict=True):
        alone = engine.forward("m", [datum]).loss_fn_outputs[0]
        assert got["logprobs"].shape == [len(datum.tokens), 2]
        assert _close(torch.tensor(got["logprobs"].data), torch.tensor(alone["logprobs"].data))
        assert _close(
            torch.tensor(got["elementwise_loss"].data),
            torch.tensor(alone["elementwise_loss"].data),
        )


def test_only_per_token_losses_are_marked_elementwise() -> None:
    per_token = {"cross_entropy", "importance_sampling", "ppo", "cispo", "dro"}
    for name in LOSSES:
        assert loss_is_elementwise(name) == (name in per_token), name


def test_a_loss_not_marked_elementwise_runs_datum_by_datum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each term depends on its datum's mean: over a concatenation it would be another loss.
    spec = LossSpec("centered", ("target_tokens", "weights"), since="9.9")
    monkeypatch.setattr(loss_table, "LOSSES", MappingProxyType({**LOSSES, spec.name: spec}))
    monkeypatch.setitem(LOSS_IMPLEMENTATIONS, spec.name, LOSS_IMPLEMENTATIONS["cross_entropy"])

    @register_loss("centered")
    def centered(lp: Tensor, inputs: Mapping[str, Tensor], _: Mapping[str, float]) -> Tensor:
        return -inputs["weights"] * (lp - lp.detach().mean())

    assert not loss_is_elementwise("centered")
    engine = _engine(True)
    data = _data("cross_entropy", LENGTHS)
    alone, alone_total, _ = _one_by_one(engine, data, "centered")
    out = engine.forward("m", data, "centered")
    for got, want in zip(out.loss_fn_outputs, alone, strict=True):
        assert _close(
            torch.tensor(got["elementwise_loss"].data), torch.tensor(want["elementwise_loss"])
        )
    assert out.metrics["loss:sum"] == pytest.approx(alone_total, rel=1e-5, abs=1e-5)
    # Marking it elementwise is a promise the engine relies on: the chunk is one sequence.
    register_loss("centered", elementwise=True)(centered)
    try:
        joined = engine.forward("m", data, "centered").loss_fn_outputs[0]["elementwise_loss"]
        assert not _close(torch.tensor(joined.data), torch.tensor(alone[0]["elementwise_loss"]))
    finally:
        register_loss("centered")(centered)
    assert not loss_is_elementwise("centered")
