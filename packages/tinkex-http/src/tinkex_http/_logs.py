"""Library loggers that print nothing unless asked, and ``TINKER_LOG``.

A library must not print: structlog left unconfigured writes every level to *stdout*.
:func:`get_logger` returns a logger that goes through structlog when the application (or
the CLI, the server, a test) configured it, and otherwise through the standard
:mod:`logging` logger of the same name, where nothing is shown unless a handler is set up
(Python's last-resort handler shows warnings and errors on stderr; never stdout).

:func:`apply_log_level` is ``TINKER_LOG`` (``Config.log_level``) applied, as the official
SDK does: the ``tinkex`` logger gets that level and, if nothing handles it yet, one handler
on stderr.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import structlog

__all__ = ["LibraryLogger", "apply_log_level", "get_logger"]

_ROOT = "tinkex"
_handler_lock = threading.Lock()
_handler: logging.Handler | None = None


def _render(event: str, fields: dict[str, Any]) -> str:
    if not fields:
        return event
    return event + " " + " ".join(f"{key}={value!r}" for key, value in fields.items())


class LibraryLogger:
    """``debug``/``info``/``warning``/``error``/``exception`` with structlog's calling
    convention (``log.info("event", key=value)``); see the module docstring."""

    __slots__ = ("_name", "_std")

    def __init__(self, name: str) -> None:
        self._name = name
        self._std = logging.getLogger(name)

    @property
    def name(self) -> str:
        return self._name

    def _log(self, level: int, event: str, fields: dict[str, Any], exc_info: bool) -> None:
        if structlog.is_configured():
            method = logging.getLevelName(level).lower()
            if exc_info:
                method = "exception"
            getattr(structlog.get_logger(self._name), method)(event, **fields)
            return
        if self._std.isEnabledFor(level):
            self._std.log(level, "%s", _render(event, fields), exc_info=exc_info)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields, False)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields, False)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields, False)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields, False)

    def exception(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields, True)

    def __repr__(self) -> str:
        return f"<tinkex LibraryLogger {self._name!r}>"


def get_logger(name: str) -> LibraryLogger:
    """The logger ``name`` (``tinkex.http``, ``tinkex.clients`` ...) for library code."""
    return LibraryLogger(name)


def apply_log_level(level: int | None) -> None:
    """Apply ``TINKER_LOG`` (a :mod:`logging` level, ``None``: leave logging alone).

    The ``tinkex`` logger gets ``level``; when neither it nor the root logger has a
    handler, one stderr handler is added to it (once per process). With structlog
    configured by the application, its own filtering still decides what is shown.
    """
    global _handler
    if level is None:
        return
    logger = logging.getLogger(_ROOT)
    logger.setLevel(level)
    with _handler_lock:
        if _handler is None and not logger.handlers and not logging.getLogger().handlers:
            _handler = logging.StreamHandler(sys.stderr)
            _handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            logger.addHandler(_handler)
