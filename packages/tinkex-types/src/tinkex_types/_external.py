"""Export of a training model's adapter in PEFT format (tinker 0.38 ``save_weights_external``).

The result path is ``tinker://<run>/external_weights/<name>``; its files are listed with
signed URLs by ``ExternalWeightsUrlsResponse``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tinkex_types._base import WireModel
from tinkex_types._numbers import Int64

__all__ = [
    "SaveWeightsExternalRequest",
    "SaveWeightsExternalResponse",
    "SaveWeightsExternalResponseInternal",
]


class SaveWeightsExternalRequest(WireModel):
    """``POST /api/v1/save_weights_external``: ``path`` is the export's name."""

    model_id: str
    path: str
    seq_id: Int64 | None = None
    ttl_seconds: Int64 | None = None
    #: age recipients (``age1...`` keys or SSH public keys) to encrypt every file to.
    age_encryption_recipients: list[str] | None = None
    type: Literal["save_weights_external"] = "save_weights_external"


class SaveWeightsExternalResponse(WireModel):
    """The result: ``tinker://<run>/external_weights/<name>`` (and its size, when known)."""

    path: str
    size_bytes: int | None = Field(default=None, ge=0)
    type: Literal["save_weights_external"] | None = None


class SaveWeightsExternalResponseInternal(SaveWeightsExternalResponse):
    """tinker's name of the result as the future answers it (``path`` may be absent)."""

    path: str | None = None  # type: ignore[assignment]
