"""Per-invocation state shared by the commands: options, output, hooks and lazy clients."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import click

from tinkex_cli._errors import CLIError, ExitCode
from tinkex_cli._logging import Redactor
from tinkex_cli._output import Output, OutputFormat
from tinkex_types import Hooks, TinkexValidationError

if TYPE_CHECKING:
    from tinkex_clients import RestClient, ServiceClient
    from tinkex_http import Config

__all__ = ["CLIState", "format_option", "pass_state"]

DEFAULT_LIMIT = 20


@dataclass
class CLIState:
    """What the global options set up; built by the group callback, one per invocation."""

    hooks: Hooks
    redactor: Redactor
    base_url: str | None = None
    api_key: str | None = None
    timeout: float | None = None
    max_retries: int | None = None
    format: OutputFormat = "table"
    limit: int | None = None
    verbose: int = 0
    debug: bool = False
    _service: ServiceClient | None = field(default=None, repr=False)
    _rest: RestClient | None = field(default=None, repr=False)
    _closers: list[Callable[[], Any]] = field(default_factory=list, repr=False)

    def __repr__(self) -> str:  # never show the key
        return f"CLIState(base_url={self.base_url!r}, format={self.format!r})"

    @property
    def output(self) -> Output:
        return Output(self.format, self.redactor)

    def effective_limit(self, local: int | None) -> int:
        """The command's ``--limit``, else the global one, else 20 (0 means everything)."""
        for value in (local, self.limit):
            if value is not None:
                return value
        return DEFAULT_LIMIT

    # -- clients ----------------------------------------------------------------------
    def config(self) -> Config:
        """The client configuration: options first, then the environment, then defaults."""
        from tinkex_http import Config

        kwargs: dict[str, Any] = {}
        if self.base_url is not None:
            kwargs["base_url"] = self.base_url
        if self.api_key is not None:
            kwargs["api_key"] = self.api_key
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        if self.max_retries is not None:
            kwargs["max_retries"] = self.max_retries
        try:
            return Config(**kwargs)
        except TinkexValidationError as exc:
            if exc.field == "api_key" and self.api_key is None:  # say it in CLI terms
                raise TinkexValidationError(
                    "api_key", exc.problem, "pass --api-key tml-... or set TINKER_API_KEY"
                ) from None
            raise

    def service_client(self) -> ServiceClient:
        if self._service is None:
            from tinkex_clients import ServiceClient

            service = ServiceClient(config=self.config(), hooks=self.hooks)
            self._service = service
            self._closers.append(service.close)
        return self._service

    def rest_client(self) -> RestClient:
        if self._rest is None:
            self._rest = self.service_client().create_rest_client()
        return self._rest

    def close(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            with contextlib.suppress(Exception):
                closer()


P = ParamSpec("P")
R = TypeVar("R")


def pass_state(f: Callable[Concatenate[CLIState, P], R]) -> Callable[P, R]:
    """Decorator: pass the :class:`CLIState` as the first argument."""

    @functools.wraps(f)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        ctx = click.get_current_context()
        state = ctx.find_object(CLIState)
        if state is None:  # pragma: no cover - only when a command is used outside the group
            raise CLIError("internal error: the tinkex group was not set up", ExitCode.ERROR)
        fmt = kwargs.pop("output_format", None)
        if fmt is not None:
            state.format = fmt  # type: ignore[assignment]
        return f(state, *args, **kwargs)

    return wrapper


FC = TypeVar("FC", bound=Callable[..., Any])


def format_option(f: FC) -> FC:
    """``-f/--format`` on a subcommand too (``tinkex run list -f json``); overrides the global."""
    return click.option(
        "-f",
        "--format",
        "output_format",
        type=click.Choice(["table", "json"]),
        default=None,
        help="Output format (overrides the global -f).",
    )(f)
