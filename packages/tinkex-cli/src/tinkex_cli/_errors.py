"""Exit codes and the mapping from exceptions to one-line error messages."""

from __future__ import annotations

import enum
from typing import IO, Any

import click

from tinkex_types import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    PluginError,
    RateLimitError,
    RequestErrorCategory,
    RequestFailedError,
    TinkexError,
    TinkexValidationError,
)

__all__ = ["EXIT_CODES_EPILOG", "CLIError", "ExitCode", "classify"]


class ExitCode(enum.IntEnum):
    """Exit status of the ``tinkex`` command (documented in ``tinkex --help``)."""

    OK = 0
    #: Anything else that failed: the server refused a request (400, 409, 422...), a
    #: partial failure (``checkpoint delete`` of several paths), an unsafe archive...
    ERROR = 1
    #: Bad usage or bad input: unknown option, missing argument, malformed ``tinker://``
    #: path, an existing download destination without ``--force``.
    USAGE = 2
    #: Missing or rejected API key (401), or not allowed (403).
    AUTH = 3
    #: The run, checkpoint or model does not exist (404).
    NOT_FOUND = 4
    #: The server failed (5xx, 429 after retries, malformed answer) or could not be reached
    #: (connection refused, DNS, TLS, timeout).
    SERVER = 5
    #: Interrupted (Ctrl-C).
    INTERRUPTED = 130


EXIT_CODES_EPILOG = """\b
Exit codes:
  0    success
  1    failed (request refused by the server, partial failure, unsafe archive...)
  2    usage error or invalid input (bad option, malformed tinker:// path...)
  3    authentication or permission error (missing/rejected API key, 401/403)
  4    not found (404: unknown run, checkpoint or model)
  5    server or connection error (5xx, 429, unreachable server, timeout)
  130  interrupted
"""


class CLIError(click.ClickException):
    """An expected failure: printed as one line on stderr, exits with :attr:`exit_code`."""

    def __init__(self, message: str, exit_code: int = ExitCode.ERROR) -> None:
        super().__init__(_one_line(message))
        setattr(self, "exit_code", int(exit_code))  # noqa: B010 - a ClassVar in click's stubs

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Error: {self.format_message()}", file=file, err=file is None)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


_API_KEY_FIELDS = {"api_key", "tinker_api_key", "--api-key"}


def classify(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message for an exception raised by a command."""
    if isinstance(exc, TinkexValidationError):
        code = ExitCode.AUTH if exc.field.lower() in _API_KEY_FIELDS else ExitCode.USAGE
        return code, f"invalid {exc}"
    if isinstance(exc, AuthenticationError):
        return ExitCode.AUTH, f"authentication failed (HTTP {exc.status_code}): {exc.message}"
    if isinstance(exc, PermissionDeniedError):
        return ExitCode.AUTH, f"permission denied (HTTP {exc.status_code}): {exc.message}"
    if isinstance(exc, NotFoundError):
        return ExitCode.NOT_FOUND, f"not found (HTTP {exc.status_code}): {exc.message}"
    if isinstance(exc, RateLimitError):
        return ExitCode.SERVER, f"rate limited (HTTP {exc.status_code}): {exc.message}"
    if isinstance(exc, InternalServerError):
        return ExitCode.SERVER, f"server error (HTTP {exc.status_code}): {exc.message}"
    if isinstance(exc, APIStatusError):
        return ExitCode.ERROR, f"request refused (HTTP {exc.status_code}): {exc.message}"
    if isinstance(exc, APITimeoutError):
        return ExitCode.SERVER, f"timed out: {exc.message}"
    if isinstance(exc, APIConnectionError):
        return ExitCode.SERVER, f"cannot reach the server: {exc.message}"
    if isinstance(exc, APIResponseValidationError):
        return ExitCode.SERVER, f"unexpected answer from the server: {exc.message}"
    if isinstance(exc, RequestFailedError):
        code = ExitCode.ERROR if exc.category is RequestErrorCategory.USER else ExitCode.SERVER
        return code, f"request failed: {exc}"
    if isinstance(exc, PluginError):
        return ExitCode.ERROR, f"plugin error: {exc}"
    if isinstance(exc, TinkexError):
        return ExitCode.ERROR, str(exc) or type(exc).__name__
    if isinstance(exc, OSError):
        return ExitCode.ERROR, f"{type(exc).__name__}: {exc}"
    return (
        ExitCode.ERROR,
        f"unexpected error: {type(exc).__name__}: {exc} (use --debug for details)",
    )
