"""The HTTP error the service layer raises for a request it refuses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ApiProblem", "bad_request", "not_found"]


class ApiProblem(Exception):
    """Answer ``status`` with ``{"detail": detail, **extra}`` (and ``headers``)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, **self.extra}


def bad_request(field: str, problem: str, fix: str | None = None) -> ApiProblem:
    """400 naming the field, the problem and (optionally) the fix."""
    text = f"{field}: {problem}"
    if fix:
        text += f" ({fix})"
    return ApiProblem(400, text)


def not_found(what: str, value: str, fix: str | None = None) -> ApiProblem:
    """404 for an unknown id."""
    text = f"unknown {what} {value!r}"
    if fix:
        text += f" ({fix})"
    return ApiProblem(404, text)
