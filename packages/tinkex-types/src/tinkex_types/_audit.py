"""Account-level responses of the 0.38 REST interface: audit log and external weights URLs.

tinkex's local server does not serve these routes (``RestClient.get_audit_log`` answers
with its 404); the models let code written for tinker 0.38 type-check and parse the hosted
service's answers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from tinkex_types._base import WireModel

__all__ = ["AuditLogEntry", "AuditLogResponse", "ExternalWeightsUrlsResponse"]


class AuditLogEntry(WireModel):
    """One audit log event (``event`` is ``<resource>_<action>``, e.g. ``checkpoint_read``)."""

    timestamp: datetime
    event: str
    event_details: dict[str, Any] = Field(default_factory=dict)
    #: Deprecated by the service (read ``event_details``); set on checkpoint events.
    model_id: str | None = None
    tinker_path: str | None = None
    purpose: str | None = None


class AuditLogResponse(WireModel):
    """Audit log entries, sorted by timestamp."""

    entries: list[AuditLogEntry]


class ExternalWeightsUrlsResponse(WireModel):
    """A signed download URL per file of an external-weights checkpoint, and their expiry."""

    urls: dict[str, str]
    expires: datetime
