"""examples/sft.py: training lowers the loss on the held-out rows, not only on the batch."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from rich.console import Console

from tinkex_types import get_hooks

#: The ``load_example`` fixture of tests/conftest.py.
ExampleLoader = Callable[[str], ModuleType]


def test_sft_eval_loss_falls(
    load_example: ExampleLoader, local_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sft = load_example("sft")
    out = io.StringIO()
    result = sft.run(steps=20, eval_every=10, console=Console(file=out, width=120))

    assert [step for step, _ in result.eval_losses] == [0, 10, 20]
    assert len(result.train_losses) == 20
    first_eval, last_eval = result.eval_losses[0][1], result.eval_losses[-1][1]
    # Untrained, the tiny model is close to uniform over its 1024 tokens (ln 1024 = 6.93).
    assert first_eval > 5.0
    assert last_eval < 0.6 * first_eval, result.eval_losses
    assert result.train_losses[-1] < 0.6 * result.train_losses[0]
    assert "eval loss" in out.getvalue()

    # The command line drives the same run (same server, since the data dir is shared).
    assert sft.main(["--steps", "2", "--eval-every", "1"]) == 0
    assert "Finished 2 steps" in capsys.readouterr().out


def test_sft_dataset_and_datums(load_example: ExampleLoader) -> None:
    sft = load_example("sft")
    train, held_out = sft.load_rows(sft.DEFAULT_DATA)
    assert (len(train), len(held_out)) == (32, 8)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held_out}

    tokenizer = get_hooks().resolve_tokenizer(sft.DEFAULT_MODEL)
    assert tokenizer is not None
    datum = sft.to_datum(tokenizer, "Q: What color is snow?\nA:", " It is white.")
    targets = datum.loss_fn_inputs["target_tokens"].tolist()
    weights = datum.loss_fn_inputs["weights"].tolist()
    assert len(targets) == len(weights) == datum.model_input.length
    completion = tokenizer.encode(" It is white.", add_special_tokens=False)
    learned = [t for t, w in zip(targets, weights, strict=True) if w == 1.0]
    assert learned == [*completion, tokenizer.eos_token_id]
