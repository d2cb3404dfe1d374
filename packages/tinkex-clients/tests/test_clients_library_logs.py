"""The clients' own loggers print nothing on stdout while logging is unconfigured (issue 19):
they go through ``tinkex_http.get_logger``, not structlog's stdout default."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from tinkex_clients import combine_forward_backward_outputs
from tinkex_http import LibraryLogger
from tinkex_types import ForwardBackwardOutput


@pytest.fixture
def unconfigured() -> Iterator[None]:
    saved = structlog.get_config()
    structlog.reset_defaults()
    try:
        yield
    finally:
        structlog.configure(**saved)


def test_module_loggers_are_library_loggers() -> None:
    from tinkex_clients import _chunking, _loop, _recovery, _retention, _retention_ops

    for module in (_chunking, _loop, _recovery, _retention, _retention_ops):
        assert isinstance(module._log, LibraryLogger), module.__name__
        assert module._log.name.startswith("tinkex.clients.")


def test_a_warning_goes_to_logging_not_stdout(
    unconfigured: None, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    outputs = [
        ForwardBackwardOutput(loss_fn_output_type=kind, loss_fn_outputs=[], metrics={})
        for kind in ("a", "b")
    ]
    with caplog.at_level(logging.WARNING, logger="tinkex.clients.chunking"):
        combine_forward_backward_outputs(outputs)
    assert "chunk_output_types_differ" in caplog.text
    assert capsys.readouterr().out == ""
