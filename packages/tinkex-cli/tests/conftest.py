"""Fixtures of the tinkex-cli tests (local to this directory)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

import tinkex_types


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test: no inherited Tinker settings, and the structlog configuration and the
    process-wide hooks restored afterwards (the CLI configures structlog on every run)."""
    for var in (
        "TINKER_API_KEY",
        "TINKER_BASE_URL",
        "TINKER_LOG",
        "TINKEX_DISABLE_PLUGINS",
        "TINKEX_LOAD_PLUGINS",
        "TINKEX_TIMEOUT",
        "_TINKEX_COMPLETE",
    ):
        monkeypatch.delenv(var, raising=False)
    saved = structlog.get_config()
    old_hooks = tinkex_types.set_hooks(None)
    tinkex_types.set_hooks(old_hooks)
    try:
        yield
    finally:
        structlog.configure(**saved)
        tinkex_types.set_hooks(old_hooks)
