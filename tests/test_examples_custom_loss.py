"""examples/custom_loss.py: the user's torch loss is what gets reported and trained."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from rich.console import Console

import tinkex as tinker

#: The ``load_example`` fixture of tests/conftest.py.
ExampleLoader = Callable[[str], ModuleType]


def test_custom_loss_trains_and_matches_a_by_hand_value(
    load_example: ExampleLoader, local_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_example("custom_loss")
    out = io.StringIO()
    result = example.run(steps=10, regularized_steps=1, console=Console(file=out, width=120))

    assert len(result.losses) == 10
    assert result.losses[-1] < 0.7 * result.losses[0], result.losses

    # By hand: the first step saw the untrained model (a fresh LoRA adapter is a no-op), so
    # its loss is the per-example mean of -logprob over the completion tokens, averaged, of
    # the logprobs a plain forward pass of a new adapter returns.
    with tinker.ServiceClient(base_url="local://") as service:
        training = service.create_lora_training_client(base_model=example.DEFAULT_MODEL, rank=8)
        data = example.build_data(training.get_tokenizer())
        forward = training.forward(data, "cross_entropy").result()
    per_example = []
    for datum, output in zip(data, forward.loss_fn_outputs, strict=True):
        logprobs = output["logprobs"].tolist()
        weights = datum.loss_fn_inputs["weights"].tolist()
        nll = -sum(w * lp for w, lp in zip(weights, logprobs, strict=True))
        per_example.append(nll / sum(weights))
    by_hand = sum(per_example) / len(per_example)
    assert result.losses[0] == pytest.approx(by_hand, rel=1e-5)
    # ...and it is not the server's summed cross_entropy (the reason to write a custom loss).
    assert forward.metrics["loss:sum"] > 5 * by_hand

    # tinkex-regularizers is part of the workspace: the pipeline part ran.
    metrics = result.regularized
    assert metrics is not None
    assert metrics["reg/entropy:contribution"] < 0  # an entropy bonus lowers the total
    assert metrics["loss:total"] == pytest.approx(
        metrics["loss:base"] + metrics["loss:regularizers"], rel=1e-5
    )
    assert "with an entropy bonus" in out.getvalue()

    assert example.main(["--steps", "1", "--regularized-steps", "1"]) == 0
    assert "mean_token_nll" in capsys.readouterr().out


def test_mean_token_nll_weighs_examples_equally(load_example: ExampleLoader) -> None:
    import torch

    from tinkex import types

    example = load_example("custom_loss")
    short = types.Datum(
        model_input=types.ModelInput.from_ints([1, 2]),
        loss_fn_inputs={"target_tokens": [2, 3], "weights": [0.0, 1.0]},
    )
    long = types.Datum(
        model_input=types.ModelInput.from_ints([1, 2, 3, 4]),
        loss_fn_inputs={"target_tokens": [2, 3, 4, 5], "weights": [0.0, 1.0, 1.0, 1.0]},
    )
    logprobs = [
        torch.tensor([-9.0, -1.0], requires_grad=True),
        torch.tensor([-9.0, -3.0, -3.0, -3.0], requires_grad=True),
    ]
    loss, metrics = example.mean_token_nll([short, long], logprobs)
    assert loss.item() == pytest.approx((1.0 + 3.0) / 2)
    assert metrics == {"mean_nll": pytest.approx(2.0)}
    loss.backward()
    assert logprobs[0].grad is not None
    assert logprobs[1].grad is not None
    assert logprobs[0].grad.tolist() == pytest.approx([0.0, -0.5])
    assert logprobs[1].grad.tolist() == pytest.approx([0.0, -1 / 6, -1 / 6, -1 / 6])
