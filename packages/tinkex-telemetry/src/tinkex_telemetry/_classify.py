"""Is a failure the user's fault? (the reporter's exception classification, spec §7.1)."""

from __future__ import annotations

from tinkex_types import RequestErrorCategory, TinkexError, TinkexValidationError

__all__ = ["is_user_error"]

_LINK_ATTRS = ("__cause__", "__context__", "cause", "reason")
_STATUS_ATTRS = ("status_code", "status", "plug_status")


def _status_is_user(status: object, *, tinkex: bool) -> bool:
    if isinstance(status, bool) or not isinstance(status, int):
        return False
    if not 400 <= status <= 499:
        return False
    excluded = {408, 429, 410} if tinkex else {408, 429}
    return status not in excluded


def _own_verdict(exc: BaseException) -> bool:
    if isinstance(exc, TinkexValidationError):
        return True
    category = getattr(exc, "category", None)
    if category is not None:
        if isinstance(category, RequestErrorCategory):
            if category is RequestErrorCategory.USER:
                return True
        elif str(getattr(category, "value", category)).strip().lower() == "user":
            return True
    tinkex = isinstance(exc, TinkexError)
    return any(_status_is_user(getattr(exc, attr, None), tinkex=tinkex) for attr in _STATUS_ATTRS)


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything in its cause chain) is a user error.

    User errors: a ``status_code``/``status`` in 400–499 other than 408 and 429 (and, for
    tinkex errors, 410), a ``category`` of ``user`` (``RequestFailedError``), or a
    :class:`~tinkex_types.TinkexValidationError`. The chain is followed depth first through
    ``__cause__``, ``__context__``, ``cause`` and ``reason``, and is cycle safe.
    """
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        current = stack.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if _own_verdict(current):
            return True
        for attr in reversed(_LINK_ATTRS):
            stack.append(getattr(current, attr, None))
    return False
