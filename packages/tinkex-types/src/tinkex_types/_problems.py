"""The one error body of the server: ``{"detail": "<what is wrong, naming the field>"}``.

Every refusal of the local server (400, 401, 403, 404, 405, 409, 410, 413, 422, 429, 500,
503) answers this shape; 429 adds the queue state the official clients read.
"""

from __future__ import annotations

from tinkex_types._base import WireModel

__all__ = ["ErrorResponse"]


class ErrorResponse(WireModel):
    """A refused request: ``detail`` names the field, the problem and the fix."""

    detail: str
    queue_state: str | None = None
    """Only on 429: why the queue does not take more work (``paused_capacity``...)."""
    queue_state_reason: str | None = None
    """Only on 429: a sentence for humans."""
