"""The group, global options, help, exit codes, version, plugins and completion
(everything that needs no server)."""

from __future__ import annotations

import json
from importlib.metadata import version
from typing import Any

import click
import pytest
from click.testing import CliRunner

import tinkex_types
from tinkex_cli import EXIT_CODES_EPILOG, ExitCode, build_cli, classify, completion_script
from tinkex_types import Hooks, hookimpl, make_plugin_manager


def invoke(args: list[str], *, hooks: Hooks | None = None, **kwargs: Any) -> Any:
    return CliRunner().invoke(build_cli(hooks), args, prog_name="tinkex", **kwargs)


class HelloPlugin:
    """A third-party plugin adding a ``hello`` command."""

    @hookimpl
    def tinkex_register_commands(self, cli: click.Group) -> None:
        @click.command("hello")
        @click.argument("name")
        def hello(name: str) -> None:
            """Say hello."""
            click.echo(f"hello {name}")

        cli.add_command(hello)


class ClashingPlugin:
    @hookimpl
    def tinkex_register_commands(self, cli: click.Group) -> None:
        cli.add_command(click.Command("version", callback=lambda: None))


def listed_commands(help_text: str) -> list[str]:
    """The command names of the ``Commands:`` section of a help text."""
    section = help_text.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in section.splitlines() if line.startswith("  ")]


def only(*plugins: object) -> Hooks:
    return Hooks(make_plugin_manager(load_entrypoints=False, defaults=False, plugins=list(plugins)))


def test_help_lists_commands_options_and_exit_codes() -> None:
    result = invoke(["--help"])
    assert result.exit_code == 0
    names = listed_commands(result.output)
    for word in ("checkpoint", "run", "sample", "version", "plugins", "completion"):
        assert word in names
    for option in ("--base-url", "--api-key", "--format", "--limit", "--verbose", "--debug"):
        assert option in result.output
    assert "Exit codes:" in result.output
    for code in ExitCode:
        assert f"  {int(code)} " in result.output
    assert "authentication" in EXIT_CODES_EPILOG
    assert "not found" in EXIT_CODES_EPILOG


def test_short_help_flag_on_subcommands() -> None:
    result = invoke(["checkpoint", "-h"])
    assert result.exit_code == 0
    assert listed_commands(result.output) == [
        "delete",
        "download",
        "export-merged",
        "import-peft",
        "info",
        "list",
        "prune",
        "publish",
        "save",
        "set-ttl",
        "unpublish",
    ]


def test_version_flag() -> None:
    result = invoke(["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"tinkex {version('tinkex-cli')}"


def test_version_command_table_and_json() -> None:
    table = invoke(["version"])
    assert table.exit_code == 0, table.output
    assert "tinkex-cli" in table.stdout
    assert version("tinkex-cli") in table.stdout
    assert "tinkex-types" in table.stdout

    result = invoke(["-f", "json", "version"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)  # exactly one document
    names = {p["name"]: p["version"] for p in doc["packages"]}
    for dist in ("tinkex-cli", "tinkex-clients", "tinkex-http", "tinkex-types"):
        assert names[dist] == version(dist)
    assert doc["python"].count(".") == 2
    # the subcommand's -f works too and gives the same document
    again = invoke(["version", "-f", "json"])
    assert json.loads(again.stdout)["packages"] == doc["packages"]


def test_plugins_command_lists_entry_point_plugins_and_hooks() -> None:
    result = invoke(["-f", "json", "plugins"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    by_name = {p["name"]: p for p in doc["plugins"]}
    http = by_name["http"]
    assert http["package"] == "tinkex-http"
    assert http["version"] == version("tinkex-http")
    assert "tinkex_register_transports" in http["hooks"]
    assert doc["blocked"] == []

    table = invoke(["plugins"])
    assert table.exit_code == 0
    assert "tinkex-http" in table.stdout
    assert "tinkex_register_transports" in table.stdout


def test_plugins_command_shows_blocked_and_hand_registered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TINKEX_DISABLE_PLUGINS", "chaos")
    hooks = Hooks(make_plugin_manager(plugins=[HelloPlugin()]))
    doc = json.loads(invoke(["-f", "json", "plugins"], hooks=hooks).stdout)
    names = [p["name"] for p in doc["plugins"]]
    assert "chaos" not in names
    assert doc["blocked"] == ["chaos"]
    hand = [p for p in doc["plugins"] if p["package"] is None]
    assert len(hand) == 1
    assert hand[0]["hooks"] == ["tinkex_register_commands"]
    table = invoke(["plugins"], hooks=hooks)
    assert "(registered in code)" in table.stdout
    assert "Blocked: chaos" in table.stdout


def test_plugin_commands_are_added_through_the_hook() -> None:
    hooks = only(HelloPlugin())
    assert "hello" in listed_commands(invoke(["--help"], hooks=hooks).output)
    result = invoke(["hello", "world"], hooks=hooks)
    assert result.exit_code == 0
    assert result.stdout == "hello world\n"
    assert "hello" not in listed_commands(invoke(["--help"], hooks=only()).output)


def test_a_plugin_taking_a_builtin_name_is_reported_not_fatal() -> None:
    hooks = only(ClashingPlugin())
    result = invoke(["-f", "json", "version"], hooks=hooks)
    assert result.exit_code == 0
    assert "already exists" in result.stderr
    assert "'version'" in result.stderr
    assert json.loads(result.stdout)["packages"]  # the built-in version command still runs


def test_cli_works_without_tinkex_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI never imports tinkex_server: with that plugin blocked (or not loaded at all),
    `serve` is absent and the built-in commands work."""
    monkeypatch.setenv("TINKEX_DISABLE_PLUGINS", "server")
    blocked = Hooks(make_plugin_manager())
    names = listed_commands(invoke(["--help"], hooks=blocked).output)
    assert "serve" not in names
    assert "checkpoint" in names
    assert invoke(["version"], hooks=blocked).exit_code == 0
    doc = json.loads(invoke(["-f", "json", "plugins"], hooks=blocked).stdout)
    assert "server" not in [p["name"] for p in doc["plugins"]]
    assert doc["blocked"] == ["server"]

    import tinkex_http._plugin

    bare = only(tinkex_http._plugin)
    assert "serve" not in listed_commands(invoke(["--help"], hooks=bare).output)
    assert invoke(["completion", "bash"], hooks=bare).exit_code == 0


# -- usage errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["nope"],
        ["-f", "yaml", "version"],
        ["--limit", "-1", "version"],
        ["run", "list", "--limit", "-3"],
        ["run", "list", "--offset", "x"],
        ["checkpoint", "info", "not-a-path"],
        ["checkpoint", "info", "tinker://run/bogus/name"],
        ["checkpoint", "delete", "--yes", "tinker://r/weights/a", "http://x"],
        ["checkpoint", "set-ttl", "tinker://r/weights/a"],
        ["checkpoint", "set-ttl", "tinker://r/weights/a", "--ttl", "5", "--remove"],
        ["checkpoint", "set-ttl", "tinker://r/weights/a", "--ttl", "0"],
        ["checkpoint", "publish"],
        ["sample", "--prompt", "x"],
        ["sample", "--base-model", "m", "--model-path", "tinker://r/sampler_weights/a", "-p", "x"],
        ["sample", "--base-model", "m"],
        ["sample", "--base-model", "m", "-p", "x", "--prompt-tokens", "1"],
        ["sample", "--base-model", "m", "--prompt-tokens", "1,a"],
        ["sample", "--base-model", "m", "--prompt-tokens", "1", "--top-p", "0"],
        ["sample", "--base-model", "m", "-p", "x", "--stop", "a", "--stop-token", "3"],
        ["sample", "--model-path", "tinker://r/weights", "-p", "x"],
        ["completion", "tcsh"],
    ],
)
def test_usage_errors_exit_2_with_one_message(args: list[str]) -> None:
    result = invoke(["--base-url", "http://127.0.0.1:9", *args])
    assert result.exit_code == ExitCode.USAGE, (args, result.output)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert "Error" in result.stderr


def test_usage_error_in_json_mode_keeps_stdout_empty() -> None:
    result = invoke(["-f", "json", "checkpoint", "info", "tinker://only-two/parts"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "tinker://" in result.stderr


# -- error classification -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (tinkex_types.AuthenticationError("bad key", status_code=401), ExitCode.AUTH),
        (tinkex_types.PermissionDeniedError("no", status_code=403), ExitCode.AUTH),
        (tinkex_types.NotFoundError("gone", status_code=404), ExitCode.NOT_FOUND),
        (tinkex_types.InternalServerError("boom", status_code=500), ExitCode.SERVER),
        (tinkex_types.RateLimitError("slow", status_code=429), ExitCode.SERVER),
        (tinkex_types.BadRequestError("bad", status_code=400), ExitCode.ERROR),
        (tinkex_types.ConflictError("bad", status_code=409), ExitCode.ERROR),
        (tinkex_types.APIConnectionError("refused"), ExitCode.SERVER),
        (tinkex_types.APITimeoutError("slow"), ExitCode.SERVER),
        (tinkex_types.APIResponseValidationError("junk"), ExitCode.SERVER),
        (
            tinkex_types.RequestFailedError(
                "oops", category=tinkex_types.RequestErrorCategory.USER
            ),
            ExitCode.ERROR,
        ),
        (
            tinkex_types.RequestFailedError(
                "oops", category=tinkex_types.RequestErrorCategory.SERVER
            ),
            ExitCode.SERVER,
        ),
        (tinkex_types.TinkexValidationError("seed", "must be an int"), ExitCode.USAGE),
        (tinkex_types.TinkexValidationError("TINKER_API_KEY", "bad prefix"), ExitCode.AUTH),
        (tinkex_types.PluginError("dup"), ExitCode.ERROR),
        (PermissionError(13, "Permission denied"), ExitCode.ERROR),
        (RuntimeError("what"), ExitCode.ERROR),
    ],
)
def test_classify(exc: BaseException, code: ExitCode) -> None:
    got, message = classify(exc)
    assert got == code
    assert message
    assert "\n" not in message


class FailingPlugin:
    """Adds commands that raise the errors the real commands meet."""

    @hookimpl
    def tinkex_register_commands(self, cli: click.Group) -> None:
        @click.command("fail")
        @click.argument("kind")
        def fail(kind: str) -> None:
            if kind == "404":
                raise tinkex_types.NotFoundError("no such run\nsecond line", status_code=404)
            if kind == "401":
                raise tinkex_types.AuthenticationError("bad key", status_code=401)
            if kind == "conn":
                raise tinkex_types.APIConnectionError("connection refused")
            if kind == "int":
                raise KeyboardInterrupt
            raise RuntimeError("surprise")

        cli.add_command(fail)


@pytest.mark.parametrize(
    ("kind", "code", "text"),
    [
        ("404", 4, "not found (HTTP 404): no such run second line"),
        ("401", 3, "authentication failed"),
        ("conn", 5, "cannot reach the server"),
        ("other", 1, "unexpected error: RuntimeError: surprise"),
        ("int", 130, "Interrupted."),
    ],
)
def test_errors_are_one_line_with_exit_codes(kind: str, code: int, text: str) -> None:
    result = invoke(["fail", kind], hooks=only(FailingPlugin()))
    assert result.exit_code == code
    assert text in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_debug_shows_the_traceback() -> None:
    result = invoke(["--debug", "fail", "404"], hooks=only(FailingPlugin()))
    assert result.exit_code == 4
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("Error: not found")


def test_api_key_is_scrubbed_from_error_messages_and_tracebacks() -> None:
    key = "tml-SUPERSECRETKEY1234567890"

    class Leaky:
        @hookimpl
        def tinkex_register_commands(self, cli: click.Group) -> None:
            @click.command("leak")
            def leak() -> None:
                raise tinkex_types.BadRequestError(f"echo {key}", status_code=400)

            cli.add_command(leak)

    for args in (["--api-key", key, "leak"], ["--api-key", key, "--debug", "-vv", "leak"]):
        result = invoke(args, hooks=only(Leaky()))
        assert result.exit_code == 1
        assert key not in result.stdout
        assert key not in result.stderr
        assert "[REDACTED]" in result.stderr


# -- completion ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("bash", "complete -o nosort -F"), ("zsh", "#compdef tinkex"), ("fish", "complete")],
)
def test_completion_command_prints_the_script(shell: str, marker: str) -> None:
    result = invoke(["completion", shell])
    assert result.exit_code == 0
    assert marker in result.stdout
    assert "_TINKEX_COMPLETE" in result.stdout
    assert result.stdout == completion_script(build_cli(), shell)


def test_completion_defaults_to_the_login_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELL", "/usr/bin/zsh")
    assert "#compdef tinkex" in invoke(["completion"]).stdout
    monkeypatch.setenv("SHELL", "/bin/tcsh")
    assert "complete -o nosort -F" in invoke(["completion"]).stdout


def test_click_completion_env_var_mechanism() -> None:
    env = {"_TINKEX_COMPLETE": "bash_source"}
    source = invoke([], env=env)
    assert source.exit_code == 0
    assert "_TINKEX_COMPLETE=bash_complete" in source.stdout

    env = {"_TINKEX_COMPLETE": "bash_complete", "COMP_WORDS": "tinkex chec", "COMP_CWORD": "1"}
    result = invoke([], env=env)
    assert result.exit_code == 0
    assert result.stdout.split() == ["plain,checkpoint"]

    env = {
        "_TINKEX_COMPLETE": "bash_complete",
        "COMP_WORDS": "tinkex checkpoint set",
        "COMP_CWORD": "2",
    }
    assert invoke([], env=env).stdout.split() == ["plain,set-ttl"]

    env = {"_TINKEX_COMPLETE": "bash_complete", "COMP_WORDS": "tinkex -f ", "COMP_CWORD": "2"}
    assert invoke([], env=env).stdout.split() == ["plain,table", "plain,json"]


def test_missing_api_key_for_a_remote_url_is_an_auth_error() -> None:
    # Config validation fails before any connection is attempted.
    result = invoke(["--base-url", "https://tinker.example.invalid", "run", "list"])
    assert result.exit_code == ExitCode.AUTH
    assert result.stderr == (
        "Error: invalid api_key: no API key was given "
        "(pass --api-key tml-... or set TINKER_API_KEY)\n"
    )


def test_local_url_without_tinkex_server_says_what_to_install() -> None:
    import tinkex_http._plugin

    result = invoke(["--base-url", "local://", "run", "list"], hooks=only(tinkex_http._plugin))
    assert result.exit_code == ExitCode.USAGE
    assert "'local'" in result.stderr
    assert "tinkex-server" in result.stderr
    assert len(result.stderr.splitlines()) == 1
