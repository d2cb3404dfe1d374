"""Secret headers out of objects that outlive a request (issue 17, finding 7).

An ``httpx`` error keeps the request it failed on (``exc.request``), and a response keeps
its request (``response.request``); both hold the headers as sent, ``x-api-key`` and
``cf-access-client-secret`` included. An error reporter that walks an exception chain
(``__cause__``/``__context__``) or prints locals would show them. The transport layer
calls :func:`scrub_request` on every request an exception can reach before the exception
leaves it, and :func:`scrub_exception` walks a chain and scrubs every request and response
it finds.
"""

from __future__ import annotations

from typing import Any

import httpx

from tinkex_http._secret import REDACTED
from tinkex_http._settings import is_sensitive_header

__all__ = ["scrub_exception", "scrub_request"]


def scrub_request(request: httpx.Request | None) -> None:
    """Replace the values of secret headers of ``request`` by ``[REDACTED]`` (in place)."""
    if request is None:
        return
    items = request.headers.multi_items()
    if not any(is_sensitive_header(k) for k, _ in items):
        return
    request.headers = httpx.Headers(
        [(k, REDACTED if is_sensitive_header(k) else v) for k, v in items]
    )


def _request_of(obj: Any) -> httpx.Request | None:
    # httpx.RequestError.request raises RuntimeError when unset: read the slot itself.
    request = getattr(obj, "_request", None)
    return request if isinstance(request, httpx.Request) else None


def scrub_exception(exc: BaseException | None) -> None:
    """Scrub every request and response reachable from ``exc`` through ``__cause__``,
    ``__context__`` and exception groups (each exception visited once)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc] if exc is not None else []
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        scrub_request(_request_of(current))
        for name in ("response", "_response"):
            response = current.__dict__.get(name) if hasattr(current, "__dict__") else None
            if isinstance(response, httpx.Response):
                scrub_request(_request_of(response))
        for nxt in (current.__cause__, current.__context__):
            if nxt is not None:
                todo.append(nxt)
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
