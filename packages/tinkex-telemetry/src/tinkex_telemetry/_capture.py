"""``capture_exceptions``: report exceptions to a sink and re-raise them (spec §7.3)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, TypeVar, cast

from tinkex_telemetry._records import Severity

__all__ = ["capture_exceptions"]

_F = TypeVar("_F", bound=Callable[..., Any])


class capture_exceptions:
    """Report an exception raised in a block or function to ``sink``, then re-raise it.

    Use as ``with capture_exceptions(reporter): ...``, ``async with ...`` or as a
    decorator of sync and async functions. ``fatal=True`` calls the sink's
    ``log_fatal_exception`` (the backend reporter then ends the session and flushes);
    otherwise ``log_exception(exc, severity)``. ``sink=None`` does nothing. Reporting
    failures are swallowed: the original exception always propagates unchanged.
    """

    def __init__(self, sink: Any, *, fatal: bool = False, severity: Severity = "ERROR") -> None:
        self.sink = sink
        self.fatal = fatal
        self.severity = severity

    def _report(self, exc: BaseException) -> None:
        if self.sink is None or not isinstance(exc, Exception):
            return
        try:
            fatal = getattr(self.sink, "log_fatal_exception", None)
            if self.fatal and callable(fatal):
                fatal(exc)
            else:
                self.sink.log_exception(exc, self.severity)
        except Exception:  # reporting must never mask the real error
            pass

    def __enter__(self) -> capture_exceptions:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if exc is not None:
            self._report(exc)
        return False

    async def __aenter__(self) -> capture_exceptions:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        return self.__exit__(exc_type, exc, tb)

    def __call__(self, func: _F) -> _F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await func(*args, **kwargs)
                except BaseException as exc:
                    self._report(exc)
                    raise

            return cast(_F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except BaseException as exc:
                self._report(exc)
                raise

        return cast(_F, wrapper)
