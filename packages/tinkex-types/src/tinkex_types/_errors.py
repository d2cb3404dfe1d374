"""The tinkex error hierarchy (one tree for the client, the server and the plugins)."""

from __future__ import annotations

import functools
from enum import StrEnum
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "PluginError",
    "RateLimitError",
    "RequestErrorCategory",
    "RequestFailedError",
    "TinkexError",
    "TinkexValidationError",
    "UnprocessableEntityError",
    "status_error_class",
]


class TinkexError(Exception):
    """Base class of every error raised by tinkex."""


class TinkexValidationError(TinkexError, ValueError):
    """Bad input caught before anything was sent: names the field and the fix."""

    def __init__(self, field: str, problem: str, fix: str | None = None) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        text = f"{field}: {problem}"
        if fix:
            text += f" ({fix})"
        super().__init__(text)


class PluginError(TinkexError):
    """A plugin misbehaved or a registry was used wrongly (e.g. a duplicate name)."""


class RequestErrorCategory(StrEnum):
    """Who is to blame for a failed request, as the server classifies it.

    The members carry tinker's names (``Unknown``, ``Server``, ``User``); ``UNKNOWN``,
    ``SERVER`` and ``USER`` are the same members under tinkex's names.
    """

    Unknown = "unknown"
    Server = "server"
    User = "user"
    UNKNOWN = "unknown"
    SERVER = "server"
    USER = "user"

    @classmethod
    def parse(cls, value: object) -> RequestErrorCategory:
        """Parse a category tolerantly (case-insensitive; anything else is ``UNKNOWN``)."""
        text = str(value).strip().lower() if value is not None else ""
        for member in cls:
            if member.value == text:
                return member
        return cls.UNKNOWN


class APIError(TinkexError):
    """An error that concerns one API request.

    ``request`` (tinker's second parameter, an ``httpx.Request``) is read for its method and
    path and not kept: request objects carry the ``X-API-Key`` header.
    """

    def __init__(
        self,
        message: str,
        request: Any = None,
        *,
        body: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.body = body
        self.method, self.path = _method_and_path(request)


def _method_and_path(request: Any) -> tuple[str | None, str | None]:
    """``(method, path)`` of an ``httpx.Request``-like object (no host, no query)."""
    if request is None:
        return None, None
    method = getattr(request, "method", None)
    url = getattr(request, "url", None)
    path = getattr(url, "path", None)
    return (str(method) if method else None), (str(path) if path else None)


def _response_request(response: Any) -> Any:
    try:
        return getattr(response, "request", None)
    except RuntimeError:  # an httpx.Response built without a request
        return None


class APIConnectionError(APIError):
    """The request never got an HTTP answer (connection refused, reset, DNS, TLS...)."""

    def __init__(self, message: str = "Connection error.", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class APITimeoutError(APIConnectionError):
    """A request or a future took longer than its timeout."""

    def __init__(self, message: str = "Request timed out.", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class APIResponseValidationError(APIError):
    """The server answered with a body that does not match the protocol.

    Takes tinker's form ``(response, body, message=None)`` as well as tinkex's
    ``(message, *, body=..., request_id=...)``: a string first is the message. The response
    is read for its status, method and path and not kept.
    """

    def __init__(
        self,
        response: Any = None,
        body: Any = None,
        message: str | None = None,
        *,
        request_id: str | None = None,
    ) -> None:
        if isinstance(response, str):
            response, message = None, response if message is None else message
        super().__init__(
            message or "Data returned by API invalid for expected schema.",
            _response_request(response),
            body=body,
            request_id=request_id,
        )
        self.status_code: int | None = getattr(response, "status_code", None)


class APIStatusError(APIError):
    """The server answered with a 4xx or 5xx status.

    ``method`` and ``path`` name the request (``POST /api/v1/forward``; no query, no host),
    so the message reads ``POST /api/v1/forward → 404: Not Found``.
    """

    def __init__(
        self,
        message: str,
        response: Any = None,
        body: Any = None,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        if response is not None:  # tinker's form: (message, response, body)
            status_code = status_code if status_code is not None else response.status_code
            headers = getattr(response, "headers", None) or {}
            request_id = request_id or headers.get("x-request-id")
            req_method, req_path = _method_and_path(_response_request(response))
            method, path = method or req_method, path or req_path
        if status_code is None:
            raise TypeError(f"{type(self).__name__} needs status_code= (or tinker's response)")
        super().__init__(message, request_id=request_id, body=body)
        self.status_code: int = status_code
        self.method = method
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        fields = ("status_code", "request_id", "body", "method", "path")
        rebuild = functools.partial(type(self), **{f: getattr(self, f) for f in fields})
        return rebuild, (self.message,)

    def __str__(self) -> str:
        if self.method and self.path:
            return f"{self.method} {self.path} → {self.status_code}: {self.message}"
        return f"{self.status_code}: {self.message}"


class BadRequestError(APIStatusError):
    """400."""


class AuthenticationError(APIStatusError):
    """401: missing or wrong API key."""


class PermissionDeniedError(APIStatusError):
    """403."""


class NotFoundError(APIStatusError):
    """404."""


class ConflictError(APIStatusError):
    """409."""


class UnprocessableEntityError(APIStatusError):
    """422: the request body failed validation on the server."""


class RateLimitError(APIStatusError):
    """429."""


class InternalServerError(APIStatusError):
    """5xx."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_class(status_code: int) -> type[APIStatusError]:
    """The most specific :class:`APIStatusError` subclass for an HTTP status."""
    if status_code >= 500:
        return InternalServerError
    return _BY_STATUS.get(status_code, APIStatusError)


class RequestFailedError(APIError):
    """A future resolved to ``request_failed``: the server ran the request and it failed."""

    def __init__(
        self,
        message: str,
        request_id: str | None = None,
        category: RequestErrorCategory = RequestErrorCategory.UNKNOWN,
        *,
        body: Any = None,
    ) -> None:
        super().__init__(message, request_id=request_id, body=body)
        self.category = category

    def __str__(self) -> str:
        rid = f" [request {self.request_id}]" if self.request_id else ""
        return f"{self.message} (category: {self.category.value}){rid}"
