"""End to end: a regularizer pipeline as the custom loss of ``forward_backward_custom``
against the real in-process local server (``local://``), tiniest built-in model.

* The plain pipeline (``RegularizerPipeline(cross_entropy_loss)``) trains exactly like the
  server's ``forward_backward(data, "cross_entropy")``.
* An L2 + entropy pipeline trains a different adapter, and exactly the adapter that plain
  ``forward_backward`` reaches when it is given, step by step, the weights
  ``-∂total/∂logprobs`` computed here from the pipeline on the server's logprobs (an
  independent check of the client's custom-loss gradient plumbing).
* The reported per-term metrics add up: ``loss:total == loss:base + Σ contributions``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import tinkex_clients._plugin as clients_plugin
import tinkex_http._plugin as http_plugin
import tinkex_regularizers._plugin as regularizers_plugin
import tinkex_server._plugin as server_plugin
from tinkex_clients import ServiceClient, TrainingClient
from tinkex_regularizers import RegularizerPipeline, RegularizerSpec, cross_entropy_loss
from tinkex_server import ServerConfig, get_local_server
from tinkex_types import (
    AdamParams,
    Datum,
    Hooks,
    ModelInput,
    TensorData,
    make_plugin_manager,
    set_hooks,
)

MODEL = "tinkex/tiny-llama-100k"
API_KEY = "tml-regularizers-e2e-0123456789"
STEPS = 3
ADAM = AdamParams(learning_rate=2e-2)
SEED = 5


def _datum(tokens: list[int], prompt_len: int = 2) -> Datum:
    n = len(tokens) - 1
    inputs: dict[str, Any] = {
        "target_tokens": tokens[1:],
        "weights": [0.0 if i < prompt_len else 1.0 for i in range(n)],
    }
    return Datum(model_input=ModelInput.from_ints(tokens[:-1]), loss_fn_inputs=inputs)


DATA = [_datum([20 + (3 * i + 5 * j) % 17 for j in range(10 + i)]) for i in range(4)]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceClient]:
    """A ServiceClient on a fresh in-process local server (closed afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-reproducible engine runs
    old = set_hooks(
        Hooks(
            make_plugin_manager(
                load_entrypoints=False,
                plugins=[http_plugin, server_plugin, clients_plugin, regularizers_plugin],
            )
        )
    )
    data = tmp_path / "data"
    server = get_local_server(config=ServerConfig(data_dir=data, poll_hold_s=5.0))
    try:
        with ServiceClient(base_url=f"local://{data}", api_key=API_KEY) as client:
            yield client
    finally:
        server.close()
        set_hooks(old)
        torch.set_num_threads(before)


def regularized() -> RegularizerPipeline:
    return RegularizerPipeline(
        cross_entropy_loss,
        [
            RegularizerSpec.from_name("l2", weight=0.02),
            RegularizerSpec.from_name("entropy", weight=0.5, mode="maximize"),
        ],
    )


def train(
    service: ServiceClient, step: Callable[[TrainingClient], Any], steps: int = STEPS
) -> tuple[TrainingClient, list[Any]]:
    tc = service.create_lora_training_client(MODEL, rank=8, seed=SEED)
    results = []
    for _ in range(steps):
        results.append(step(tc))
        tc.optim_step(ADAM).result(60)
    return tc, results


def logprobs_after(tc: TrainingClient) -> torch.Tensor:
    out = tc.forward(DATA, "cross_entropy").result(60)
    return torch.cat([o["logprobs"].to_torch().reshape(-1) for o in out.loss_fn_outputs])


def test_plain_pipeline_matches_cross_entropy_and_regularizers_change_the_adapter(
    service: ServiceClient,
) -> None:
    initial = logprobs_after(service.create_lora_training_client(MODEL, rank=8, seed=SEED))

    plain_tc, plain_out = train(
        service, lambda tc: tc.forward_backward(DATA, "cross_entropy").result(60)
    )
    plain = logprobs_after(plain_tc)

    ce_pipeline = RegularizerPipeline(cross_entropy_loss)
    ce_tc, ce_out = train(
        service, lambda tc: tc.forward_backward_custom(DATA, ce_pipeline.as_loss_fn()).result(60)
    )
    via_pipeline = logprobs_after(ce_tc)

    reg_pipeline = regularized()
    reg_tc, reg_out = train(
        service, lambda tc: tc.forward_backward_custom(DATA, reg_pipeline.as_loss_fn()).result(60)
    )
    with_regularizers = logprobs_after(reg_tc)

    # Training moved the adapter at all.
    assert (plain - initial).abs().max().item() > 1e-2
    # Same seed, same data, gradient -∂(-Σw·lp)/∂lp = w: the very same training.
    torch.testing.assert_close(via_pipeline, plain, rtol=0, atol=1e-5)
    for fb, custom in zip(plain_out, ce_out, strict=True):
        # The pipeline's base loss is the server's cross-entropy on the same logprobs.
        assert custom.metrics["loss:base"] == pytest.approx(fb.metrics["loss:sum"], rel=1e-5)
        assert custom.metrics["loss:total"] == pytest.approx(fb.metrics["loss:sum"], rel=1e-5)
    # The regularizers changed what was learned.
    difference = (with_regularizers - plain).abs().max().item()
    assert difference > 1e-3, difference
    # ... and the first step's losses agree before training diverged them.
    assert reg_out[0].metrics["loss:base"] == pytest.approx(
        plain_out[0].metrics["loss:sum"], rel=1e-5
    )


def test_custom_gradients_equal_manual_weights(service: ServiceClient) -> None:
    """Train with the regularized pipeline through ``forward_backward_custom``, and once
    more by hand: forward, the pipeline's gradient computed here, ``forward_backward``
    with weights ``-∂total/∂lp``. Both must reach the same adapter."""
    pipeline = regularized()
    custom_tc, custom_out = train(
        service, lambda tc: tc.forward_backward_custom(DATA, pipeline.as_loss_fn()).result(60)
    )

    manual_pipeline = regularized()
    totals: list[float] = []

    def manual_step(tc: TrainingClient) -> Any:
        forward = tc.forward(DATA, "cross_entropy").result(60)
        lps = [
            o["logprobs"].to_torch().to(torch.float32).detach().requires_grad_(True)
            for o in forward.loss_fn_outputs
        ]
        out = manual_pipeline.compute(DATA, lps)
        grads = torch.autograd.grad(out.loss, lps)
        totals.append(out.loss_total)
        weighted = [
            Datum(
                model_input=d.model_input,
                loss_fn_inputs={
                    "target_tokens": d.loss_fn_inputs["target_tokens"],
                    "weights": TensorData.from_torch(-grad.detach()),
                },
            )
            for d, grad in zip(DATA, grads, strict=True)
        ]
        return tc.forward_backward(weighted, "cross_entropy").result(60)

    manual_tc, _ = train(service, manual_step)
    torch.testing.assert_close(
        logprobs_after(custom_tc), logprobs_after(manual_tc), rtol=0, atol=1e-5
    )
    for custom, total in zip(custom_out, totals, strict=True):
        assert custom.metrics["loss:total"] == pytest.approx(total, rel=1e-5)


def test_reported_terms_add_up(service: ServiceClient) -> None:
    pipeline = RegularizerPipeline(
        cross_entropy_loss,
        [
            RegularizerSpec.from_name("l2", weight=0.02),
            RegularizerSpec.from_name("entropy", weight=0.5, mode="maximize"),
        ],
        track_grad_norms=True,
    )
    _, results = train(
        service,
        lambda tc: tc.forward_backward_custom(DATA, pipeline.as_loss_fn()).result(60),
        steps=2,
    )
    out = pipeline.last_output
    assert out is not None
    metrics = out.metrics()
    contributions = [metrics[f"reg/{name}:contribution"] for name in ("l2", "entropy")]
    assert all(c != 0 for c in contributions), contributions
    assert metrics["loss:total"] == pytest.approx(
        metrics["loss:base"] + sum(contributions), rel=1e-6, abs=1e-6
    )
    assert metrics["loss:regularizers"] == pytest.approx(sum(contributions), rel=1e-6, abs=1e-6)
    for name in ("l2", "entropy"):
        value, weight = metrics[f"reg/{name}:value"], metrics[f"reg/{name}:weight"]
        assert metrics[f"reg/{name}:contribution"] == pytest.approx(weight * value, rel=1e-6)
    assert out.loss_total == pytest.approx(float(out.loss.detach()), rel=1e-6)
    # Maximizing entropy: its term is -H <= 0; l2 of negative logprobs is > 0.
    assert metrics["reg/entropy:value"] < 0 < metrics["reg/l2:value"]
    assert metrics["reg/entropy/entropy"] == pytest.approx(-metrics["reg/entropy:value"], rel=1e-6)
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["grad_norm:total"] > 0
    # The metrics of the last call reach the caller in the result, unchanged.
    last = results[-1].metrics
    for key in ("loss:total", "loss:base", "loss:regularizers", "reg/l2:contribution"):
        assert last[key] == pytest.approx(metrics[key], rel=1e-9), key
