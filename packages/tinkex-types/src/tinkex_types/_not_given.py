"""The ``NOT_GIVEN`` sentinel: an argument the caller did not pass (distinct from ``None``)."""

from __future__ import annotations

from typing import Final, Literal, TypeVar, Union

__all__ = ["NOT_GIVEN", "NotGiven", "NotGivenOr"]

_T = TypeVar("_T")


class NotGiven:
    """Marks an argument that was not given; falsy and distinct from ``None``."""

    _instance: NotGiven | None = None

    def __new__(cls) -> NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __reduce__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven()

NotGivenOr = Union[_T, NotGiven]  # noqa: UP007 - a generic alias needs Union
