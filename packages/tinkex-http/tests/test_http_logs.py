"""Library logging: nothing on stdout unless asked; ``TINKER_LOG`` applied (stderr)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from tinkex_http import apply_log_level, get_logger

# A client that retries twice (503, 503, 200) against a mock transport, in a fresh process
# whose structlog is not configured.
SCRIPT = textwrap.dedent(
    """
    import asyncio, httpx
    from tinkex_http import Config, HTTPClient

    answers = [503, 503, 200]

    def handler(request):
        return httpx.Response(answers.pop(0), json={})

    async def main():
        config = Config(api_key="tml-logtest0000000000000", base_url="http://tinker.test",
                        retry_backoff=(0.001, 0.002))
        async with HTTPClient(config, transport=httpx.MockTransport(handler)) as http:
            await http.get("/api/v1/healthz")

    asyncio.run(main())
    print("done")
    """
)


def _run(**env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TINKEX_", "TINKER_"))}
    env.update(TINKEX_LOAD_PLUGINS="none", **env_extra)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )


def test_unconfigured_logging_prints_nothing() -> None:
    proc = _run()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n"
    assert "http_retry" not in proc.stderr


def test_tinker_log_debug_shows_retries_on_stderr_only() -> None:
    proc = _run(TINKER_LOG="debug")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n"
    assert proc.stderr.count("http_retry") == 2
    assert "tinkex.http" in proc.stderr
    assert "tml-logtest" not in proc.stderr


def test_library_logger_uses_structlog_once_configured(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import structlog

    log = get_logger("tinkex.test")
    saved = structlog.get_config()
    structlog.reset_defaults()
    try:
        with caplog.at_level(logging.INFO, logger="tinkex.test"):
            log.info("unconfigured_event", n=1)  # not configured: the stdlib logger
        assert "unconfigured_event n=1" in caplog.text
        events: list[dict[str, object]] = []

        def capture(_logger: object, _name: str, event: dict[str, object]) -> str:
            events.append(dict(event))
            raise structlog.DropEvent

        structlog.configure(processors=[capture])
        log.warning("configured_event", n=2)
        assert events == [{"event": "configured_event", "n": 2}]
    finally:
        structlog.configure(**saved)


def test_apply_log_level_sets_the_tinkex_logger() -> None:
    logger = logging.getLogger("tinkex")
    before = logger.level
    try:
        apply_log_level(None)
        assert logger.level == before
        apply_log_level(logging.INFO)
        assert logger.level == logging.INFO
    finally:
        logger.setLevel(before)
