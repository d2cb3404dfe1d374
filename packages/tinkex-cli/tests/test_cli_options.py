"""Option groups: related click options reach a command as one checked dataclass."""

from __future__ import annotations

from dataclasses import dataclass

import click
import pytest
from click.testing import CliRunner

from tinkex_cli._options import option_group
from tinkex_cli._sample_options import ModelOptions, PromptOptions, SamplingOptions


@dataclass(frozen=True)
class Span:
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise click.UsageError("--end must not be before --start")


def make_command() -> click.Command:
    @click.command()
    @option_group(
        "span",
        Span,
        click.option("--start", type=int, default=0, help="First."),
        click.option("--end", type=int, default=10, help="Last."),
    )
    @click.option("--name", default="x")
    def show(span: Span, name: str) -> None:
        click.echo(f"{name} {span.start}..{span.end}")

    return show


def test_group_arrives_as_one_dataclass_and_keeps_the_help_order() -> None:
    command = make_command()
    result = CliRunner().invoke(command, ["--start", "3", "--name", "y"])
    assert result.exit_code == 0, result.output
    assert result.output == "y 3..10\n"
    names = [p.name for p in command.params]
    assert names == ["start", "end", "name"]


def test_group_checks_its_combination_as_a_usage_error() -> None:
    result = CliRunner().invoke(make_command(), ["--start", "5", "--end", "1"])
    assert result.exit_code == 2
    assert "--end must not be before --start" in result.output


def test_sample_groups_check_their_combinations() -> None:
    with pytest.raises(click.UsageError, match="exactly one of --base-model"):
        ModelOptions(base_model=None, model_path=None)
    with pytest.raises(click.UsageError, match="exactly one of --prompt"):
        PromptOptions(prompt="a", prompt_tokens="1", prompt_file=None)
    assert PromptOptions(prompt=None, prompt_tokens="[1, 2,3]", prompt_file=None).read() == (
        None,
        [1, 2, 3],
    )
    with pytest.raises(click.UsageError, match="either --stop or --stop-token"):
        SamplingOptions(32, 1.0, -1, 1.0, None, ("x",), (1,), 1)
    params = SamplingOptions(8, 0.5, 4, 0.9, 7, (), (3, 4), 2).params()
    assert (params.max_tokens, params.stop, params.seed) == (8, [3, 4], 7)
