"""The ``tinkex`` click group: global options, error handling, plugin commands."""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any

import click

from tinkex_cli._context import CLIState
from tinkex_cli._errors import EXIT_CODES_EPILOG, CLIError, ExitCode, classify
from tinkex_cli._logging import Redactor, configure_logging
from tinkex_cli._options import option_group
from tinkex_types import Hooks, PluginError, get_hooks

__all__ = ["TinkexGroup", "build_cli", "main"]

PROG_NAME = "tinkex"
COMPLETE_VAR = "_TINKEX_COMPLETE"

_HELP = """The tinkex command line: checkpoints, training runs and sampling on a Tinker
(or Tinker-compatible) service, including the local server (--base-url local://).

\b
Configuration comes from the options below, else the environment
(TINKER_API_KEY, TINKER_BASE_URL, TINKEX_TIMEOUT, ...), else the defaults.
The API key is never printed.
"""


class TinkexGroup(click.Group):
    """The root group: turns expected errors into one line on stderr and an exit code,
    and refuses a second command with a name already taken."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plugin_errors: list[str] = []
        self.builtin_names: set[str] = set()

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        name = name or cmd.name
        if name is not None and name in self.commands:
            raise PluginError(f"the tinkex command {name!r} already exists; pick another name")
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            raise click.exceptions.Exit(ExitCode.INTERRUPTED) from None
        except Exception as exc:
            state = ctx.find_object(CLIState)
            redactor = state.redactor if state is not None else _fallback_redactor()
            code, message = classify(exc)
            if state is not None and state.debug:
                text = "".join(traceback.format_exception(exc))
                sys.stderr.write(redactor(text))
            raise CLIError(redactor(message), code) from exc


def _fallback_redactor() -> Redactor:
    redactor = Redactor()
    redactor.add_from_env()
    return redactor


def _validate_limit(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value < 0:
        raise click.BadParameter("must be >= 0 (0 means everything)", ctx=ctx, param=param)
    return value


@dataclass(frozen=True)
class GlobalOptions:
    """The options of the ``tinkex`` group itself (before the command name)."""

    base_url: str | None
    api_key: str | None
    timeout: float | None
    max_retries: int | None
    output_format: str
    limit: int | None
    verbose: int
    debug: bool

    def state(self, hooks: Hooks) -> CLIState:
        """Set up logging (secrets redacted) and the per-invocation :class:`CLIState`."""
        redactor = Redactor()
        redactor.add(self.api_key)
        redactor.add_from_env()
        configure_logging(self.verbose, redactor, env_level=os.environ.get("TINKER_LOG"))
        return CLIState(
            hooks=hooks,
            redactor=redactor,
            base_url=self.base_url,
            api_key=self.api_key,
            timeout=self.timeout,
            max_retries=self.max_retries,
            format="json" if self.output_format == "json" else "table",
            limit=self.limit,
            verbose=self.verbose,
            debug=self.debug,
        )


global_options = option_group(
    "options",
    GlobalOptions,
    click.option(
        "--base-url",
        metavar="URL",
        default=None,
        help="Service URL: https://..., http://127.0.0.1:8000 or local:// "
        "(default: $TINKER_BASE_URL, else the Tinker cloud).",
    ),
    click.option(
        "--api-key",
        metavar="KEY",
        default=None,
        help="API key (default: $TINKER_API_KEY; not needed for local servers). Never printed.",
    ),
    click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        metavar="SECONDS",
        help="Per-request timeout (default: $TINKEX_TIMEOUT, else 60).",
    ),
    click.option(
        "--max-retries",
        type=click.IntRange(min=0),
        default=None,
        metavar="N",
        help="Retries of a failed request (default: $TINKEX_MAX_RETRIES, else 10).",
    ),
    click.option(
        "-f",
        "--format",
        "output_format",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="Output format; json prints exactly one JSON document on stdout.",
    ),
    click.option(
        "--limit",
        type=int,
        default=None,
        callback=_validate_limit,
        metavar="N",
        help="Show at most N items (default 20; 0 = everything).",
    ),
    click.option(
        "-v",
        "--verbose",
        count=True,
        help="Log to stderr (structlog): -v info, -vv debug.",
    ),
    click.option("--debug", is_flag=True, help="Show Python tracebacks of errors."),
)


def build_cli(hooks: Hooks | None = None) -> TinkexGroup:
    """Build the ``tinkex`` group with the built-in commands plus those of the plugins.

    ``hooks`` defaults to :func:`tinkex_types.get_hooks`; pass your own
    (``Hooks(make_plugin_manager(...))``) to choose which plugins contribute commands.
    """
    group_hooks = hooks if hooks is not None else get_hooks()

    @click.group(
        cls=TinkexGroup,
        name=PROG_NAME,
        help=_HELP,
        epilog=EXIT_CODES_EPILOG,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )
    @global_options
    @click.version_option(
        package_name="tinkex-cli", prog_name=PROG_NAME, message="%(prog)s %(version)s"
    )
    @click.pass_context
    def cli(ctx: click.Context, options: GlobalOptions) -> None:
        state = options.state(group_hooks)
        ctx.obj = state
        ctx.call_on_close(state.close)
        group = ctx.command
        if isinstance(group, TinkexGroup):
            for problem in group.plugin_errors:
                click.echo(f"Warning: {problem}", err=True)

    assert isinstance(cli, TinkexGroup)
    _add_commands(cli, group_hooks)
    return cli


def _add_commands(cli: TinkexGroup, hooks: Hooks) -> None:
    """The built-in commands, then those of the plugins (a failing plugin is a warning)."""
    from tinkex_cli._cmd_checkpoint import checkpoint_group
    from tinkex_cli._cmd_completion import completion_command
    from tinkex_cli._cmd_conformance import conformance_command
    from tinkex_cli._cmd_plugins import plugins_command
    from tinkex_cli._cmd_run import run_group
    from tinkex_cli._cmd_sample import sample_command
    from tinkex_cli._cmd_version import version_command

    for command in (
        checkpoint_group,
        run_group,
        sample_command,
        conformance_command,
        version_command,
        plugins_command,
        completion_command,
    ):
        cli.add_command(command)
    from tinkex_cli._cmd_checkpoint_peft import PEFT_COMMANDS

    for command in PEFT_COMMANDS:  # tinkex checkpoint import-peft / export-merged
        checkpoint_group.add_command(command)
    from tinkex_cli._cmd_run_usage import usage_command

    run_group.add_command(usage_command)  # tinkex run usage
    cli.builtin_names = set(cli.commands)
    try:
        hooks.register_commands(cli)
    except Exception as exc:
        cli.plugin_errors.append(f"a plugin failed to add its commands: {exc}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tinkex`` console script (also ``python -m tinkex_cli``)."""
    try:
        cli = build_cli()
    except Exception as exc:  # the plugin manager itself could not be built
        code, message = classify(exc)
        click.echo(f"Error: {message}", err=True)
        raise SystemExit(code) from None
    cli.main(args=argv, prog_name=PROG_NAME, complete_var=COMPLETE_VAR)
