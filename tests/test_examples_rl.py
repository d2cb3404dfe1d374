"""examples/rl.py: sample → reward → importance_sampling makes the rewarded behaviour common."""

from __future__ import annotations

import io
import statistics
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from rich.console import Console

from tinkex import types

#: The ``load_example`` fixture of tests/conftest.py.
ExampleLoader = Callable[[str], ModuleType]


def test_rl_reward_rises(
    load_example: ExampleLoader, local_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rl = load_example("rl")
    out = io.StringIO()
    result = rl.run(iterations=8, console=Console(file=out, width=120))

    assert len(result.mean_rewards) == 8
    assert all(0.0 <= r <= 1.0 for r in result.mean_rewards)
    # Some random completions contain a digit from the start, so there is a signal...
    assert 0.0 < result.mean_rewards[0] < 0.5
    # ...and the policy learns from it: most completions end up with a digit.
    assert result.mean_rewards[-1] >= result.mean_rewards[0] + 0.3, result.mean_rewards
    assert result.mean_rewards[-1] > 0.5
    assert len(result.last_completions) == 16
    assert statistics.fmean(rl.reward(t) for t in result.last_completions) > 0.5
    assert "Share of completions with a digit" in out.getvalue()

    assert rl.main(["--iterations", "1", "--group-size", "2", "--max-tokens", "4"]) == 0
    assert "iteration  0" in capsys.readouterr().out


def test_reward_and_advantages(load_example: ExampleLoader) -> None:
    rl = load_example("rl")
    assert rl.reward("call 911") == 1.0
    assert rl.reward("no digits here") == 0.0
    advantages = rl.group_advantages([1.0, 0.0, 0.0, 0.0])
    assert advantages[0] > 0 > advantages[1]
    assert sum(advantages) == pytest.approx(0.0, abs=1e-12)
    assert statistics.pstdev(advantages) == pytest.approx(1.0)
    assert rl.group_advantages([1.0, 1.0]) == [0.0, 0.0]


def test_rl_datum_uses_the_sampler_logprobs(load_example: ExampleLoader) -> None:
    rl = load_example("rl")
    sample = types.SampledSequence(
        stop_reason="length", tokens=[7, 8, 9], logprobs=[-1.0, -2.0, -3.0]
    )
    datum = rl.rl_datum([1, 5, 6], sample, 0.5)
    assert datum.model_input.to_ints() == [1, 5, 6, 7, 8]
    inputs = {k: v.tolist() for k, v in datum.loss_fn_inputs.items()}
    assert inputs["target_tokens"] == [5, 6, 7, 8, 9]
    assert inputs["logprobs"] == [0.0, 0.0, -1.0, -2.0, -3.0]
    assert inputs["advantages"] == [0.0, 0.0, 0.5, 0.5, 0.5]
