"""``RetryConfig`` with the official ``tinker`` field names (``tinker.lib.retry_handler``).

tinkex's retry loop is :class:`tinkex_http.RetryConfig`; this subclass takes tinker's
arguments in tinker's order and maps them onto it:

=====================  ======================  =========================================
tinker                 tinkex                  meaning
=====================  ======================  =========================================
retry_delay_base       base_delay              first delay (s)
retry_delay_max        max_delay               largest delay (s)
jitter_factor          jitter                  ± fraction of each delay
progress_timeout       total_timeout           give up after this many seconds
enable_retry_logic     enabled                 retry at all
enable_stuck_detection total_timeout is None   (false: no time limit)
retryable_exceptions   is_retryable            extra exception types that are retried
max_connections        max_connections         kept; dispatch limits come from Config
=====================  ======================  =========================================

Either name may be given, not both. An official ``tinker`` ``RetryConfig`` object is
accepted where tinkex takes one (:func:`as_retry_config` converts it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tinkex_http import RetryConfig as _HttpRetryConfig
from tinkex_types import TinkexValidationError

__all__ = ["RetryConfig", "as_retry_config"]

_PAIRS = (
    ("retry_delay_base", "base_delay"),
    ("retry_delay_max", "max_delay"),
    ("jitter_factor", "jitter"),
    ("progress_timeout", "total_timeout"),
    ("enable_retry_logic", "enabled"),
)
_UNSET: Any = object()


def _pick(tinker_name: str, tinker_value: Any, own_name: str, own_value: Any, default: Any) -> Any:
    if tinker_value is not _UNSET and own_value is not _UNSET:
        raise TinkexValidationError(
            tinker_name,
            f"given together with {own_name}, which means the same",
            f"pass only one of {tinker_name} (tinker's name) and {own_name}",
        )
    if tinker_value is not _UNSET:
        return tinker_value
    return default if own_value is _UNSET else own_value


@dataclass(frozen=True, slots=True, init=False)
class RetryConfig(_HttpRetryConfig):
    """A retry loop, configured with tinker's field names or tinkex's (see module doc)."""

    max_connections: int | None = 1000
    enable_stuck_detection: bool = True
    retryable_exceptions: tuple[type[BaseException], ...] = field(default=(), compare=False)

    def __init__(
        self,
        max_connections: int | None = 1000,
        progress_timeout: float = _UNSET,
        retry_delay_base: float = _UNSET,
        retry_delay_max: float = _UNSET,
        jitter_factor: float = _UNSET,
        enable_retry_logic: bool = _UNSET,
        enable_stuck_detection: bool = True,
        retryable_exceptions: tuple[type[BaseException], ...] = (),
        *,
        max_retries: int | None = None,
        base_delay: float = _UNSET,
        max_delay: float = _UNSET,
        jitter: float = _UNSET,
        total_timeout: float | None = _UNSET,
        retry_gone: bool = True,
        enabled: bool = _UNSET,
        is_retryable: Callable[[BaseException], bool] | None = None,
    ) -> None:
        if max_connections is not None and (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or max_connections <= 0
        ):
            raise TinkexValidationError(
                "max_connections", f"must be a positive int or None, got {max_connections!r}"
            )
        exceptions = _exception_types(retryable_exceptions)
        timeout = _pick(
            "progress_timeout", progress_timeout, "total_timeout", total_timeout, 7200.0
        )
        if timeout is not None and not math.isfinite(timeout):
            timeout = None
        _HttpRetryConfig.__init__(
            self,
            max_retries=max_retries,
            base_delay=_pick("retry_delay_base", retry_delay_base, "base_delay", base_delay, 0.5),
            max_delay=_pick("retry_delay_max", retry_delay_max, "max_delay", max_delay, 10.0),
            jitter=_pick("jitter_factor", jitter_factor, "jitter", jitter, 0.25),
            total_timeout=timeout if enable_stuck_detection else None,
            retry_gone=retry_gone,
            enabled=_pick("enable_retry_logic", enable_retry_logic, "enabled", enabled, True),
            is_retryable=_combine(is_retryable, exceptions),
        )
        object.__setattr__(self, "max_connections", max_connections)
        object.__setattr__(self, "enable_stuck_detection", bool(enable_stuck_detection))
        object.__setattr__(self, "retryable_exceptions", exceptions)

    @property
    def retry_delay_base(self) -> float:
        """tinker's name of :attr:`base_delay`."""
        return self.base_delay

    @property
    def retry_delay_max(self) -> float:
        """tinker's name of :attr:`max_delay`."""
        return self.max_delay

    @property
    def jitter_factor(self) -> float:
        """tinker's name of :attr:`jitter`."""
        return self.jitter

    @property
    def progress_timeout(self) -> float:
        """tinker's name of :attr:`total_timeout` (``inf`` when there is none)."""
        return math.inf if self.total_timeout is None else self.total_timeout

    @property
    def enable_retry_logic(self) -> bool:
        """tinker's name of :attr:`enabled`."""
        return self.enabled


def _exception_types(value: Any) -> tuple[type[BaseException], ...]:
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TinkexValidationError(
                "retryable_exceptions",
                f"must be a tuple of exception classes, got {item!r}",
                "pass e.g. (httpx.TimeoutException,)",
            )
    return items


def _combine(
    is_retryable: Callable[[BaseException], bool] | None,
    exceptions: tuple[type[BaseException], ...],
) -> Callable[[BaseException], bool] | None:
    if not exceptions:
        return is_retryable

    def check(exc: BaseException) -> bool:
        if isinstance(exc, exceptions):
            return True
        return bool(is_retryable(exc)) if is_retryable is not None else False

    return check


def as_retry_config(value: Any, field_name: str = "retry_config") -> _HttpRetryConfig | None:
    """``None``, a tinkex ``RetryConfig``, or an official tinker one (converted)."""
    if value is None or isinstance(value, _HttpRetryConfig):
        return value
    names = ("retry_delay_base", "retry_delay_max", "jitter_factor", "progress_timeout")
    if all(hasattr(value, n) for n in names):
        return RetryConfig(
            max_connections=getattr(value, "max_connections", 1000),
            progress_timeout=value.progress_timeout,
            retry_delay_base=value.retry_delay_base,
            retry_delay_max=value.retry_delay_max,
            jitter_factor=value.jitter_factor,
            enable_retry_logic=getattr(value, "enable_retry_logic", True),
            enable_stuck_detection=getattr(value, "enable_stuck_detection", True),
        )
    raise TinkexValidationError(
        field_name,
        f"must be a RetryConfig or None, got {type(value).__name__}",
        "use tinkex.RetryConfig(...) (tinker's or tinkex's field names) or None for the default",
    )
