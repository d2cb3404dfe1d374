"""Pagination (``--limit``/``--offset``) and resolving client futures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
import structlog

__all__ = ["fetch_pages", "offset_option", "paged_limit_option", "resolve"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_log = structlog.get_logger("tinkex.cli")


def resolve(value: Any) -> Any:
    """The result of a client call: ``.result()`` of an ``APIFuture``, else the value."""
    result = getattr(value, "result", None)
    if callable(result):
        return result()
    return value


def _non_negative(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value < 0:
        raise click.BadParameter("must be >= 0", ctx=ctx, param=param)
    return value


def paged_limit_option(f: F) -> F:
    """``--limit N`` on a list command (overrides the global one; 0 = everything)."""
    return click.option(
        "--limit",
        type=int,
        default=None,
        callback=_non_negative,
        metavar="N",
        help="Show at most N items (default: the global --limit, else 20; 0 = everything).",
    )(f)


def offset_option(f: F) -> F:
    """``--offset N``: skip the first N items."""
    return click.option(
        "--offset",
        type=int,
        default=0,
        callback=_non_negative,
        metavar="N",
        show_default=True,
        help="Skip the first N items.",
    )(f)


def fetch_pages(
    page: Callable[[int, int], tuple[list[T], int | None]],
    *,
    want: int,
    offset: int,
    page_size: int,
    what: str,
) -> tuple[list[T], int]:
    """Call ``page(limit, offset)`` until ``want`` items (0 = all) or the end.

    ``page`` returns the items and the total count the server reported (or ``None``).
    Returns the items and the total (the reported one, else what was seen).
    """
    items: list[T] = []
    total: int | None = None
    while True:
        size = page_size if want == 0 else min(page_size, want - len(items))
        if size <= 0:
            break
        batch, reported = page(size, offset + len(items))
        if reported is not None:
            total = reported
        items.extend(batch)
        _log.debug("fetched_page", what=what, got=len(items), total=total)
        if len(batch) < size:
            break
        if total is not None and offset + len(items) >= total:
            break
    if want:
        items = items[:want]
    if total is None:
        total = offset + len(items)
    return items, total
