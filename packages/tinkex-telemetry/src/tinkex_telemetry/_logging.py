"""structlog configuration for applications, the CLI and the server (never for libraries)."""

from __future__ import annotations

import io
import logging
import os
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import ExcInfo, Processor

from tinkex_telemetry._redact import redact_secrets, redact_text
from tinkex_types import TinkexValidationError

__all__ = ["configure_logging", "parse_log_level"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_FORMATS = {"json": True, "console": False, "text": False}


def parse_log_level(value: str | int, field: str = "level") -> int:
    """``debug``/``info``/``warn``/``warning``/``error``/``critical`` (any case) or a
    :mod:`logging` number; anything else is a :class:`~tinkex_types.TinkexValidationError`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _LEVELS:
        return _LEVELS[value.strip().lower()]
    raise TinkexValidationError(
        field,
        f"unknown log level {value!r}",
        "use one of debug, info, warning, error, critical",
    )


def _redacting_exception_formatter(sio: TextIO, exc_info: ExcInfo) -> None:
    buffer = io.StringIO()
    structlog.dev.plain_traceback(buffer, exc_info)
    sio.write(redact_text(buffer.getvalue()))


def configure_logging(
    level: str | int | None = None,
    json: bool | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for an application: one line per event, secrets redacted.

    * ``level``: a name or number; default from ``TINKEX_LOG``, then ``TINKER_LOG``, then
      ``info``.
    * ``json``: JSON lines (``True``) or the human console renderer (``False``); default
      from ``TINKEX_LOG_FORMAT`` (``json`` or ``console``), else console.
    * ``stream``: where lines go (default ``sys.stderr``).

    Every event goes through :func:`~tinkex_telemetry.redact_secrets` after exceptions are
    formatted, so API keys, tokens and passwords never reach the output. Call it again to
    reconfigure (loggers are not cached).
    """
    if level is None:
        env_name = "TINKEX_LOG" if os.environ.get("TINKEX_LOG") else "TINKER_LOG"
        raw = os.environ.get(env_name)
        numeric = parse_log_level(raw, env_name) if raw else logging.INFO
    else:
        numeric = parse_log_level(level)
    if json is None:
        fmt = os.environ.get("TINKEX_LOG_FORMAT", "").strip().lower()
        if fmt and fmt not in _FORMATS:
            raise TinkexValidationError(
                "TINKEX_LOG_FORMAT", f"unknown log format {fmt!r}", "use json or console"
            )
        json = _FORMATS.get(fmt, False)
    out = stream if stream is not None else sys.stderr

    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if json:
        processors += [
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.processors.JSONRenderer(default=_json_default),
        ]
    else:
        colors = bool(getattr(out, "isatty", lambda: False)())
        processors += [
            redact_secrets,
            structlog.dev.ConsoleRenderer(
                colors=colors, exception_formatter=_redacting_exception_formatter
            ),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def _json_default(value: Any) -> Any:
    return redact_text(repr(value))
