"""tinkex-cli: the ``tinkex`` command.

``main()`` is the console script; ``build_cli(hooks)`` builds the click group (built-in
commands plus those plugins add through ``tinkex_register_commands``), e.g. for tests::

    from click.testing import CliRunner
    from tinkex_cli import build_cli

    result = CliRunner().invoke(build_cli(), ["--base-url", "local://", "run", "list"])
"""

from __future__ import annotations

from tinkex_cli._app import COMPLETE_VAR, PROG_NAME, TinkexGroup, build_cli, main
from tinkex_cli._cmd_completion import completion_script
from tinkex_cli._cmd_plugins import describe_plugins
from tinkex_cli._cmd_version import installed_packages
from tinkex_cli._errors import EXIT_CODES_EPILOG, CLIError, ExitCode, classify

__all__ = [
    "COMPLETE_VAR",
    "EXIT_CODES_EPILOG",
    "PROG_NAME",
    "CLIError",
    "ExitCode",
    "TinkexGroup",
    "build_cli",
    "classify",
    "completion_script",
    "describe_plugins",
    "installed_packages",
    "main",
]
