"""configure_logging reads levels with tinkex_http.parse_log_level (the parser Config and the
CLI use), so TINKEX_LOG / TINKER_LOG mean the same thing everywhere."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import structlog

import tinkex_http
import tinkex_telemetry
from tinkex_telemetry import configure_logging
from tinkex_types import TinkexValidationError

LEVELS = ("debug", "info", "warning", "error", "critical")


@pytest.fixture(autouse=True)
def _restore_structlog(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("TINKEX_LOG", "TINKER_LOG", "TINKEX_LOG_FORMAT"):
        monkeypatch.delenv(var, raising=False)
    saved = structlog.get_config()
    try:
        yield
    finally:
        structlog.configure(**saved)


def emitted() -> set[str]:
    """Which of debug/info/warning/error/critical come out after configure_logging."""
    stream = io.StringIO()
    configure_logging(stream=stream)
    log = structlog.get_logger("tinkex.test")
    for name in LEVELS:
        getattr(log, name)(f"event-{name}")
    text = stream.getvalue()
    return {name for name in LEVELS if f"event-{name}" in text}


def test_the_parser_is_the_one_in_tinkex_http() -> None:
    assert tinkex_telemetry.parse_log_level is tinkex_http.parse_log_level


def test_blank_tinkex_log_falls_through_to_tinker_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKEX_LOG", "  ")
    monkeypatch.setenv("TINKER_LOG", "Error")
    assert emitted() == {"error", "critical"}


def test_unset_means_info_and_critical_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    assert emitted() == {"info", "warning", "error", "critical"}
    monkeypatch.setenv("TINKER_LOG", "CRITICAL")
    assert emitted() == {"critical"}


def test_bad_tinker_log_fails_like_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKER_LOG", "loud")
    with pytest.raises(TinkexValidationError) as info:
        configure_logging(stream=io.StringIO())
    assert info.value.field == "TINKER_LOG"
    with pytest.raises(TinkexValidationError) as config_info:
        tinkex_http.Config(base_url="local://")
    assert config_info.value.field == "TINKER_LOG"
    with pytest.raises(TinkexValidationError) as arg_info:
        configure_logging(level="loud", stream=io.StringIO())
    assert arg_info.value.field == "level"
    assert tinkex_http.parse_log_level("warn") == logging.WARNING
