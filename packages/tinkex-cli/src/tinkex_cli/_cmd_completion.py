"""``tinkex completion [bash|zsh|fish]``: print the shell completion script."""

from __future__ import annotations

import os

import click
from click.shell_completion import get_completion_class

from tinkex_cli._errors import CLIError, ExitCode

__all__ = ["SHELLS", "completion_command", "completion_script"]

SHELLS = ("bash", "zsh", "fish")


def completion_script(cli: click.Command, shell: str, *, prog_name: str = "tinkex") -> str:
    """The completion script click generates for ``shell`` (``_TINKEX_COMPLETE`` mechanism)."""
    cls = get_completion_class(shell)
    if cls is None:
        raise CLIError(
            f"unsupported shell {shell!r}; use one of {', '.join(SHELLS)}", ExitCode.USAGE
        )
    complete_var = f"_{prog_name.replace('-', '_').upper()}_COMPLETE"
    return cls(cli, {}, prog_name, complete_var).source()


def _default_shell() -> str:
    name = os.path.basename(os.environ.get("SHELL", ""))
    return name if name in SHELLS else "bash"


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS), required=False)
@click.pass_context
def completion_command(ctx: click.Context, shell: str | None) -> None:
    """Print the completion script for SHELL (default: from $SHELL, else bash).

    \b
    bash:  eval "$(tinkex completion bash)"     (e.g. in ~/.bashrc)
    zsh:   eval "$(tinkex completion zsh)"      (e.g. in ~/.zshrc)
    fish:  tinkex completion fish > ~/.config/fish/completions/tinkex.fish

    Same as click's mechanism: _TINKEX_COMPLETE=bash_source tinkex.
    """
    root = ctx.find_root()
    click.echo(completion_script(root.command, shell or _default_shell()), nl=False)
