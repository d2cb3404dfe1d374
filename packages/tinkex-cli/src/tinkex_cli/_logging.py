"""structlog set-up for the CLI (always on stderr) and secret scrubbing of everything printed."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

import structlog

from tinkex_http import parse_log_level

__all__ = ["Redactor", "configure_logging"]

REDACTED = "[REDACTED]"


class Redactor:
    """Replaces known secret values (the API key...) by ``[REDACTED]`` in text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str | None) -> None:
        # Very short values would blank out ordinary text; real keys are long.
        if secret and len(secret.strip()) >= 6:
            with self._lock:
                self._secrets.add(secret.strip())

    def add_from_env(self) -> None:
        for var in ("TINKER_API_KEY", "CLOUDFLARE_ACCESS_CLIENT_SECRET"):
            self.add(os.environ.get(var))

    def __call__(self, text: str) -> str:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


class _StderrLogger:
    """A structlog logger writing rendered lines to the *current* ``sys.stderr``."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor

    def msg(self, message: str) -> None:
        stream = sys.stderr
        stream.write(self._redactor(message) + "\n")
        stream.flush()

    log = debug = info = warn = warning = error = err = critical = exception = fatal = msg


class _StderrLoggerFactory:
    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor

    def __call__(self, *args: Any) -> _StderrLogger:
        return _StderrLogger(self._redactor)


_LEVELS = {0: logging.WARNING, 1: logging.INFO}


def configure_logging(verbose: int, redactor: Redactor, *, env_level: str | None = None) -> int:
    """Send structlog output to stderr: warnings by default, ``-v`` info, ``-vv`` debug.

    Without ``-v``, ``env_level`` (the value of ``TINKER_LOG``) picks the level. It is
    parsed by :func:`tinkex_http.parse_log_level` like ``Config.log_level``: blank means
    unset, and an unknown name raises :class:`~tinkex_types.TinkexValidationError` naming
    ``TINKER_LOG`` (also with ``-v``). Returns the level.
    """
    from_env = parse_log_level(env_level, "TINKER_LOG")
    if verbose > 0:
        level = _LEVELS.get(verbose, logging.DEBUG)
    elif from_env is not None:
        level = from_env
    else:
        level = logging.WARNING
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_StderrLoggerFactory(redactor),
        cache_logger_on_first_use=False,
    )
    return level
