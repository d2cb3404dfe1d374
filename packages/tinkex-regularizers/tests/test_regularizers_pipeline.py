"""The pipeline: totals, gradient norms, threads, events, errors, the loss_fn adapter."""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import torch

from tinkex_regularizers import (
    KLDivergence,
    RegularizerError,
    RegularizerPipeline,
    RegularizerSpec,
    RegularizerTimeoutError,
    cross_entropy_loss,
)
from tinkex_types import Hooks, RegularizerEvent, TinkexValidationError, hookimpl

LENGTHS = [5, 1, 0, 3, 4, 2]


def make_batch(seed: int = 7) -> tuple[list[dict[str, Any]], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    data, lps = [], []
    for n in LENGTHS:
        lp = -3.0 * torch.rand(n, generator=g, dtype=torch.float64) - 0.05
        ref = -3.0 * torch.rand(n, generator=g, dtype=torch.float64) - 0.05
        weights = (torch.rand(n, generator=g, dtype=torch.float64) > 0.3).double()
        data.append(
            {
                "loss_fn_inputs": {
                    "weights": weights,
                    "reference_logprobs": ref,
                    "original_logprobs": ref + 0.1,
                }
            }
        )
        lps.append(lp.requires_grad_(True))
    return data, lps


def fresh(lps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [lp.detach().clone().requires_grad_(True) for lp in lps]


def square_loss(data: Any, lps: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    total = torch.zeros((), dtype=torch.float64)
    for lp in lps:
        total = total + 0.5 * (lp.square() * lp.exp()).sum()
    return total, {"base_metric": 3.0}


def all_specs() -> list[RegularizerSpec]:
    return [
        RegularizerSpec.from_name("l1", weight=0.01),
        RegularizerSpec.from_name("l2", weight=0.02, center="mean", clip=2.0),
        RegularizerSpec.from_name("elastic_net", weight=0.03, reduction="mean"),
        RegularizerSpec.from_name("entropy", weight=0.5, mode="maximize", mask_field="weights"),
        RegularizerSpec.from_name("kl_divergence", weight=0.7, symmetric=True),
        RegularizerSpec.from_name("consistency", weight=0.4, metric="kl"),
        RegularizerSpec.from_name("orthogonality", weight=0.05, mode="spectral"),
        RegularizerSpec.from_name("gradient_penalty", weight=0.2, mode="interpolated", seed=3),
        RegularizerSpec(lambda d, lp: (lp[0].sum() * 0.0 + 1.5, {"k": 2}), weight=1.0, name="fn"),
    ]


class Recorder:
    def __init__(self) -> None:
        self.events: list[RegularizerEvent] = []
        self.spans: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    @hookimpl
    def tinkex_on_regularizer(self, event: RegularizerEvent) -> None:
        with self._lock:
            self.events.append(event)

    @hookimpl
    def tinkex_operation_span(
        self, operation: str, attributes: dict[str, Any], carrier: Any
    ) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def span() -> Iterator[None]:
            self.spans.append((operation, dict(attributes)))
            yield

        return span()


def test_metrics_add_up_to_the_total(use_hooks: Callable[..., Hooks]) -> None:
    data, lps = make_batch()
    out = RegularizerPipeline(square_loss, all_specs()).compute(data, lps)
    metrics = out.metrics()
    contributions = [metrics[f"reg/{s.name}:contribution"] for s in all_specs()]
    assert metrics["loss:total"] == pytest.approx(
        metrics["loss:base"] + sum(contributions), rel=1e-12
    )
    assert metrics["loss:regularizers"] == pytest.approx(sum(contributions), rel=1e-12)
    for spec in all_specs():
        r = out.regularizers[spec.name]
        assert r.contribution == r.weight * r.value
        assert metrics[f"reg/{spec.name}:value"] == r.value
        assert metrics[f"reg/{spec.name}:weight"] == spec.weight
    assert metrics["base_metric"] == 3.0
    assert metrics["reg/fn/k"] == 2.0
    assert metrics["reg/fn:value"] == 1.5
    assert "grad_norm:total" not in metrics
    # the differentiable total is exactly base + Σ w·R of the separately computed terms
    base = square_loss(data, fresh(lps))[0]
    want = float(base.detach()) + sum(
        s.weight * float(s.compute(_batch(data, lps))[0].detach())
        for s in all_specs()
        if s.name != "gradient_penalty"
    )
    want += 0.2 * out.regularizers["gradient_penalty"].value
    assert out.loss_total == pytest.approx(want, rel=1e-12)
    assert list(out.regularizers) == [s.name for s in all_specs()]
    json.dumps(out.to_dict())


def _batch(data: Any, lps: Sequence[torch.Tensor]) -> Any:
    from tinkex_regularizers import RegularizerBatch

    return RegularizerBatch(data=data, logprobs=fresh(lps), base_loss=square_loss)


def test_gradient_norms_match_autograd(use_hooks: Callable[..., Hooks]) -> None:
    data, lps = make_batch()
    specs = all_specs()
    out = RegularizerPipeline(square_loss, specs, track_grad_norms=True).compute(data, lps)

    def norm(loss: torch.Tensor, xs: list[torch.Tensor]) -> float:
        grads = torch.autograd.grad(loss, xs, allow_unused=True)
        return math.sqrt(
            sum(float((g if g is not None else torch.zeros(0)).square().sum()) for g in grads)
        )

    xs = fresh(lps)
    assert out.base_loss.grad_norm == pytest.approx(norm(square_loss(data, xs)[0], xs), rel=1e-10)
    for spec in specs:
        if spec.name == "gradient_penalty":
            continue  # its ε stream advanced; checked below through the total
        xs = fresh(lps)
        from tinkex_regularizers import RegularizerBatch

        loss = spec.compute(RegularizerBatch(data=data, logprobs=xs, base_loss=square_loss))[0]
        r = out.regularizers[spec.name]
        want = norm(loss, xs) if loss.requires_grad else 0.0
        assert r.grad_norm == pytest.approx(want, rel=1e-10, abs=1e-12), spec.name
        assert r.grad_norm_weighted == pytest.approx(spec.weight * want, rel=1e-10, abs=1e-12)
        assert out.metrics()[f"reg/{spec.name}:grad_norm"] == r.grad_norm
    # total: the gradient of the returned loss tensor itself
    assert out.total_grad_norm == pytest.approx(norm(out.loss, lps), rel=1e-10)
    assert out.metrics()["grad_norm:total"] == out.total_grad_norm
    for name in ("kl_divergence", "consistency"):  # real gradients, no tracing guard
        got = out.regularizers[name].grad_norm
        assert got is not None
        assert got > 0


def test_threads_and_sequential_give_identical_results(use_hooks: Callable[..., Hooks]) -> None:
    data, lps = make_batch()
    results = []
    for parallel in (False, True, "auto"):
        xs = fresh(lps)
        pipe = RegularizerPipeline(
            square_loss, all_specs(), track_grad_norms=True, parallel=parallel, max_workers=4
        )
        out = pipe.compute(data, xs)
        grads = torch.autograd.grad(out.loss, xs)
        results.append((out.metrics(), grads))
    (m0, g0), *rest = results
    for m, g in rest:
        assert m == m0
        assert all(torch.equal(a, b) for a, b in zip(g, g0, strict=True))


def test_threads_used_for_large_batches_under_auto(use_hooks: Callable[..., Hooks]) -> None:
    seen: set[str] = set()

    def who(d: Any, lp: list[torch.Tensor]) -> torch.Tensor:
        seen.add(threading.current_thread().name)
        return lp[0].sum()

    specs = [RegularizerSpec(who, weight=1.0, name=f"w{i}") for i in range(3)]
    big = [torch.zeros(1 << 15, requires_grad=True)]
    RegularizerPipeline(None, specs).compute([{}], big)
    assert all(name.startswith("tinkex-regularizer") for name in seen)
    seen.clear()
    RegularizerPipeline(None, specs).compute([{}], [torch.zeros(4, requires_grad=True)])
    assert seen == {threading.current_thread().name}


@pytest.mark.parametrize("parallel", [False, True])
def test_events_are_emitted_per_regularizer(
    use_hooks: Callable[..., Hooks], parallel: bool
) -> None:
    recorder = Recorder()
    use_hooks(recorder)
    data, lps = make_batch()
    specs = all_specs()
    out = RegularizerPipeline(square_loss, specs, parallel=parallel, track_grad_norms=True).compute(
        data, lps
    )
    for spec in specs:
        mine = [e for e in recorder.events if e.name == spec.name]
        assert [e.phase for e in mine] == ["start", "stop"]
        start, stop = mine
        assert start.weight == stop.weight == spec.weight
        assert start.value is None
        assert stop.value == out.regularizers[spec.name].value
        assert stop.duration_s is not None
        assert stop.duration_s >= 0
    assert recorder.spans == [
        ("regularizer_pipeline", {"regularizer_count": len(specs), "track_grad_norms": True})
    ]


@pytest.mark.parametrize("parallel", [False, True])
def test_a_failing_regularizer_is_named_and_first_in_order_wins(
    use_hooks: Callable[..., Hooks], parallel: bool
) -> None:
    recorder = Recorder()
    use_hooks(recorder)

    def boom(d: Any, lp: Any) -> Any:
        raise ValueError("bad things")

    def crash(d: Any, lp: Any) -> Any:
        raise KeyError("other")

    specs = [
        RegularizerSpec.from_name("l2", weight=1.0),
        RegularizerSpec(boom, weight=1.0, name="boom"),
        RegularizerSpec(crash, weight=1.0, name="crash"),
    ]
    data, lps = make_batch()
    pipe = RegularizerPipeline(square_loss, specs, parallel=parallel)
    with pytest.raises(
        RegularizerError, match="regularizer 'boom' failed: ValueError: bad things"
    ) as info:
        pipe.compute(data, lps)
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.name == "boom"
    stops = [e for e in recorder.events if e.name == "boom" and e.phase == "stop"]
    assert len(stops) == 1
    assert stops[0].value is None
    assert pipe.last_output is None


def test_a_missing_reference_fails_with_the_field_and_the_fix(
    use_hooks: Callable[..., Hooks],
) -> None:
    pipe = RegularizerPipeline(square_loss, [RegularizerSpec(KLDivergence(), weight=1.0)])
    with pytest.raises(RegularizerError) as info:
        pipe.compute([{}], [torch.zeros(2, requires_grad=True)])
    cause = info.value.__cause__
    assert isinstance(cause, TinkexValidationError)
    assert cause.field == "data[0].loss_fn_inputs['reference_logprobs']"
    assert cause.fix is not None
    assert "compute_reference" in cause.fix


def test_a_slow_regularizer_times_out(use_hooks: Callable[..., Hooks]) -> None:
    release = threading.Event()

    def slow(d: Any, lp: list[torch.Tensor]) -> torch.Tensor:
        release.wait(10)
        return lp[0].sum()

    specs = [
        RegularizerSpec(slow, weight=1.0, name="slow"),
        RegularizerSpec.from_name("l1", weight=1.0),
    ]
    pipe = RegularizerPipeline(None, specs, parallel=True, timeout=0.2)
    try:
        with pytest.raises(RegularizerTimeoutError, match="'slow'"):
            pipe.compute([{}], [torch.zeros(3, requires_grad=True)])
    finally:
        release.set()


def test_as_loss_fn_gives_the_pipeline_gradient(use_hooks: Callable[..., Hooks]) -> None:
    data, lps = make_batch()
    specs = [
        RegularizerSpec.from_name("l2", weight=0.3),
        RegularizerSpec.from_name("kl_divergence", weight=0.5),
        RegularizerSpec.from_name("consistency", weight=0.25),
    ]
    pipeline = RegularizerPipeline(square_loss, specs, track_grad_norms=True)
    loss_fn = pipeline.as_loss_fn()
    loss, metrics = loss_fn(data, lps)
    assert pipeline.last_output is not None
    assert metrics == pipeline.last_output.metrics()
    assert all(isinstance(v, float) for v in metrics.values())
    got = torch.autograd.grad(loss, lps)

    xs = fresh(lps)
    want_loss = square_loss(data, xs)[0]
    from tinkex_regularizers import RegularizerBatch

    for spec in specs:
        want_loss = (
            want_loss + spec.weight * spec.compute(RegularizerBatch(data=data, logprobs=xs))[0]
        )
    want = torch.autograd.grad(want_loss, xs)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    # KL and consistency contribute a real gradient inside the custom-loss function
    xs = fresh(lps)
    plain = torch.autograd.grad(
        RegularizerPipeline(square_loss, specs[:1]).as_loss_fn()(data, xs)[0], xs
    )
    assert any(not torch.allclose(a, b) for a, b in zip(got, plain, strict=True) if a.numel())


def test_the_returned_loss_is_first_order_only_and_says_so(use_hooks: Callable[..., Hooks]) -> None:
    data, lps = make_batch()
    loss = (
        RegularizerPipeline(square_loss, [RegularizerSpec.from_name("l2", weight=1.0)])
        .compute(data, lps)
        .loss
    )
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(loss, lps, create_graph=True)
    assert all(
        g.shape == lp.shape for g, lp in zip(torch.autograd.grad(loss, lps), lps, strict=True)
    )


def test_pipeline_validation(use_hooks: Callable[..., Hooks]) -> None:
    l2 = RegularizerSpec.from_name("l2", weight=1.0)
    with pytest.raises(TinkexValidationError, match="'l2' is used twice"):
        RegularizerPipeline(square_loss, [l2, l2])
    with pytest.raises(TinkexValidationError, match="nothing to compute"):
        RegularizerPipeline(None, [])
    with pytest.raises(TinkexValidationError) as info:
        RegularizerPipeline(square_loss, [], parallel="yes")  # type: ignore[arg-type]
    assert info.value.field == "parallel"
    with pytest.raises(TinkexValidationError) as info:
        RegularizerPipeline(square_loss, [l2], timeout=0)
    assert info.value.field == "timeout"
    with pytest.raises(TinkexValidationError) as info:
        RegularizerPipeline(square_loss, [l2]).compute([{}, {}], [torch.zeros(1)])
    assert info.value.field == "logprobs"


def test_non_scalar_results_and_bad_metrics_are_errors(use_hooks: Callable[..., Hooks]) -> None:
    vec = RegularizerSpec(lambda d, lp: lp[0] * 2, weight=1.0, name="vec")
    pipe = RegularizerPipeline(square_loss, [vec])
    with pytest.raises(RegularizerError, match=r"shape \(3,\).*scalar"):
        pipe.compute([{}], [torch.zeros(3, requires_grad=True)])
    words = RegularizerSpec(lambda d, lp: (lp[0].sum(), {"mode": "max"}), weight=1.0, name="words")
    with pytest.raises(RegularizerError, match=r"metric 'mode'.*not a number"):
        RegularizerPipeline(square_loss, [words]).compute(
            [{}], [torch.zeros(3, requires_grad=True)]
        )
    with pytest.raises(TinkexValidationError, match="base_loss"):
        RegularizerPipeline(lambda d, lp: (lp[0], {}), [vec]).compute(
            [{}], [torch.zeros(3, requires_grad=True)]
        )


def test_inputs_without_grad_and_the_pipeline_reference(use_hooks: Callable[..., Hooks]) -> None:
    data: list[dict[str, Any]] = [{}, {}]
    lps = [
        torch.tensor([-1.0, -2.0], dtype=torch.float64),
        torch.tensor([-0.5], dtype=torch.float64),
    ]
    refs = [
        torch.tensor([-1.5, -1.0], dtype=torch.float64),
        torch.tensor([-0.5], dtype=torch.float64),
    ]
    pipe = RegularizerPipeline(
        square_loss,
        [
            RegularizerSpec.from_name("kl_divergence", weight=1.0, reduction="sum"),
            RegularizerSpec.from_name("gradient_penalty", weight=1.0),
        ],
        track_grad_norms=True,
        reference=lambda d: refs,
    )
    out = pipe.compute(data, lps)
    want_kl = sum(
        math.exp(p) * (p - q)
        for row, ref in zip(lps, refs, strict=True)
        for p, q in zip(row.tolist(), ref.tolist(), strict=True)
    )
    assert out.regularizers["kl_divergence"].value == pytest.approx(want_kl)
    assert out.regularizers["gradient_penalty"].value > 0
    assert out.total_grad_norm is not None
    assert out.total_grad_norm > 0


def test_no_grad_mode_is_respected_in_worker_threads(use_hooks: Callable[..., Hooks]) -> None:
    data, lps = make_batch()
    specs = [
        RegularizerSpec.from_name("l2", weight=1.0),
        RegularizerSpec.from_name("entropy", weight=1.0),
    ]
    with torch.no_grad():
        a = RegularizerPipeline(square_loss, specs, parallel=True).compute(data, fresh(lps))
        b = RegularizerPipeline(square_loss, specs, parallel=False).compute(data, fresh(lps))
    assert not a.loss.requires_grad
    assert a.metrics() == b.metrics()


def test_cross_entropy_base_loss_matches_the_server_loss(
    use_hooks: Callable[..., Hooks], make_datum: Callable[..., Any]
) -> None:
    data = [make_datum(weights=[0.0, 1.0, 1.0]), make_datum(target_tokens=[1.0])]
    lps = [
        torch.tensor([-1.0, -2.0, -0.5], requires_grad=True),
        torch.tensor([-3.0], requires_grad=True),
    ]
    loss, metrics = cross_entropy_loss(data, lps)
    assert float(loss.detach()) == pytest.approx(2.5 + 3.0)
    assert metrics == {"nll": pytest.approx(5.5), "tokens": 3.0}
    grads = torch.autograd.grad(loss, lps)
    assert grads[0].tolist() == [-0.0, -1.0, -1.0]
    assert grads[1].tolist() == [-1.0]
    # the pipeline with only the base loss reproduces it
    out = RegularizerPipeline(cross_entropy_loss).compute(data, lps)
    assert out.metrics()["loss:total"] == pytest.approx(5.5)
    assert out.metrics()["nll"] == pytest.approx(5.5)


def test_base_loss_and_reference_failures_are_named(use_hooks: Callable[..., Hooks]) -> None:
    def bad_base(d: Any, lp: Any) -> Any:
        raise ZeroDivisionError("base broke")

    l2 = RegularizerSpec.from_name("l2", weight=1.0)
    with pytest.raises(RegularizerError, match="'base_loss' failed: ZeroDivisionError") as info:
        RegularizerPipeline(bad_base, [l2]).compute([{}], [torch.zeros(2, requires_grad=True)])
    assert isinstance(info.value.__cause__, ZeroDivisionError)

    def bad_reference(d: Any) -> Any:
        raise OSError("no file")

    pipe = RegularizerPipeline(square_loss, [l2], reference=bad_reference)
    with pytest.raises(RegularizerError, match="'reference' failed: OSError: no file"):
        pipe.compute([{}], [torch.zeros(2, requires_grad=True)])


def test_field_values_are_read_in_every_form(
    use_hooks: Callable[..., Hooks], make_datum: Callable[..., Any]
) -> None:
    import numpy as np

    from tinkex_regularizers import RegularizerBatch

    class Holder:
        def __init__(self, inputs: dict[str, Any]) -> None:
            self.loss_fn_inputs = inputs

    want = [-1.0, -0.5, -0.25]
    forms: list[Any] = [
        make_datum(ref=want),  # a real Datum (TensorData inside)
        {"loss_fn_inputs": {"ref": {"data": want, "shape": [3]}}},  # wire mapping
        {"loss_fn_inputs": {"ref": want}},  # list
        {"loss_fn_inputs": {"ref": np.array(want)}},  # numpy
        Holder({"ref": torch.tensor(want)}),  # attribute + tensor
    ]
    lps = [torch.zeros(3, dtype=torch.float64) for _ in forms]
    batch = RegularizerBatch(data=forms, logprobs=lps)
    for i in range(len(forms)):
        got = batch.field("ref", i)
        assert got.dtype == torch.float64
        assert got.tolist() == want
    with pytest.raises(TinkexValidationError) as info:
        RegularizerBatch(
            data=[{"loss_fn_inputs": {"ref": [1.0]}}], logprobs=[torch.zeros(2)]
        ).field("ref", 0)
    assert info.value.field == "data[0].loss_fn_inputs['ref']"
    assert "1 elements" in str(info.value)
    with pytest.raises(TinkexValidationError) as info:
        RegularizerBatch(
            data=[{"loss_fn_inputs": {"ref": ["a", object()]}}], logprobs=[torch.zeros(2)]
        ).field("ref", 0)
    assert "cannot be turned into a tensor" in str(info.value)
