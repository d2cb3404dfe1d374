"""Errors raised by the engine.

Every user mistake is a :class:`tinkex_types.TinkexValidationError` (``field``, ``problem``,
``fix``), so the server can answer it as a ``user``-category failure without parsing text.
"""

from __future__ import annotations

from tinkex_types import TinkexError, TinkexValidationError

__all__ = ["EngineError", "EngineInputError", "UnknownModelError"]


class EngineError(TinkexError):
    """The engine failed for a reason that is not the caller's fault."""


class EngineInputError(TinkexValidationError):
    """Bad input to the engine: names the field, the problem and the fix."""


class UnknownModelError(EngineInputError, LookupError):
    """A model id (adapter) or a base model name that the engine does not know."""
