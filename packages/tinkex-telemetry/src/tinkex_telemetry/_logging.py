"""structlog configuration for applications, the CLI and the server (never for libraries)."""

from __future__ import annotations

import io
import logging
import os
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import ExcInfo, Processor

from tinkex_http import parse_log_level
from tinkex_telemetry._redact import redact_secrets, redact_text
from tinkex_types import TinkexValidationError

# ``parse_log_level`` is tinkex_http's (one parser for Config, the CLI and this module),
# re-exported here for compatibility.
__all__ = ["configure_logging", "parse_log_level"]

_FORMATS = {"json": True, "console": False, "text": False}


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

    * ``level``: a name or number (see :func:`tinkex_http.parse_log_level`); default from
      ``TINKEX_LOG``, then ``TINKER_LOG`` (the first that is set and not blank), then
      ``info``. A bad value raises :class:`~tinkex_types.TinkexValidationError` naming the
      argument or the variable.
    * ``json``: JSON lines (``True``) or the human console renderer (``False``); default
      from ``TINKEX_LOG_FORMAT`` (``json`` or ``console``), else console.
    * ``stream``: where lines go (default ``sys.stderr``).

    Every event goes through :func:`~tinkex_telemetry.redact_secrets` after exceptions are
    formatted, so API keys, tokens and passwords never reach the output. Call it again to
    reconfigure (loggers are not cached).
    """
    numeric: int | None
    if level is None:
        env_name = "TINKEX_LOG" if (os.environ.get("TINKEX_LOG") or "").strip() else "TINKER_LOG"
        numeric = parse_log_level(os.environ.get(env_name), env_name)
    else:
        numeric = parse_log_level(level, "level")
    if numeric is None:
        numeric = logging.INFO
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
