"""TINKER_LOG in the CLI: parsed by tinkex_http.parse_log_level, like Config.log_level and
tinkex_telemetry.configure_logging (unknown names are an error, not a quiet fallback)."""

from __future__ import annotations

import logging

import pytest
from click.testing import CliRunner

from tinkex_cli import ExitCode, build_cli
from tinkex_cli._logging import Redactor, configure_logging
from tinkex_http import Config
from tinkex_types import TinkexValidationError


@pytest.mark.parametrize(
    ("verbose", "env_level", "expected"),
    [
        (0, None, logging.WARNING),
        (0, "  ", logging.WARNING),
        (0, "debug", logging.DEBUG),
        (0, "WARN", logging.WARNING),
        (0, "Critical", logging.CRITICAL),
        (1, "error", logging.INFO),
        (2, None, logging.DEBUG),
    ],
)
def test_level_from_verbosity_then_tinker_log(
    verbose: int, env_level: str | None, expected: int
) -> None:
    assert configure_logging(verbose, Redactor(), env_level=env_level) == expected


@pytest.mark.parametrize("verbose", [0, 1])
def test_unknown_tinker_log_is_an_error_naming_the_variable(verbose: int) -> None:
    with pytest.raises(TinkexValidationError) as info:
        configure_logging(verbose, Redactor(), env_level="loud")
    assert info.value.field == "TINKER_LOG"
    # Config rejects the same value with the same field.
    with pytest.raises(TinkexValidationError) as config_info:
        Config(base_url="local://", env={"TINKER_LOG": "loud"})
    assert config_info.value.field == info.value.field


def test_cli_reports_a_bad_tinker_log_as_a_usage_error() -> None:
    result = CliRunner().invoke(build_cli(), ["version"], env={"TINKER_LOG": "loud"})
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr.startswith("Error: invalid TINKER_LOG: unknown log level 'loud'")
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ""


def test_cli_accepts_a_good_tinker_log() -> None:
    result = CliRunner().invoke(build_cli(), ["version"], env={"TINKER_LOG": "critical"})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip()
