"""Backend telemetry: ``POST /api/v1/telemetry`` (protocol.md §2.10)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Union
from uuid import uuid4

from pydantic import Discriminator, Field, Tag, model_validator

from tinkex_types._base import Severity, WireModel

__all__ = [
    "GenericEvent",
    "SessionEndEvent",
    "SessionStartEvent",
    "TelemetryBatch",
    "TelemetryEvent",
    "TelemetryResponse",
    "TelemetrySendRequest",
    "UnhandledExceptionEvent",
]


def _event_id() -> str:
    return uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


class _EventBase(WireModel):
    event_id: str = Field(default_factory=_event_id)
    event_session_index: int = Field(default=0, ge=0)
    severity: Severity = "INFO"
    timestamp: datetime = Field(default_factory=_now)

    @model_validator(mode="before")
    @classmethod
    def _stamp(cls, data: Any) -> Any:
        """Fix the id, time and kind at construction, so that every dump writes them."""
        if isinstance(data, dict):
            data = dict(data)
            if data.get("event_id") is None:
                data["event_id"] = _event_id()
            if data.get("timestamp") is None:
                data["timestamp"] = _now()
            if data.get("event") is None:
                data["event"] = cls.model_fields["event"].default
        return data


class SessionStartEvent(_EventBase):
    event: Literal["SESSION_START"] = "SESSION_START"


class SessionEndEvent(_EventBase):
    event: Literal["SESSION_END"] = "SESSION_END"
    duration: str | None = None
    """Python ``timedelta`` text, e.g. ``0:00:26.449255``."""


class GenericEvent(_EventBase):
    event: Literal["GENERIC_EVENT"] = "GENERIC_EVENT"
    event_name: str
    event_data: dict[str, Any] = Field(default_factory=dict)


class UnhandledExceptionEvent(_EventBase):
    wire_nulls: ClassVar[frozenset[str]] = frozenset({"traceback"})

    event: Literal["UNHANDLED_EXCEPTION"] = "UNHANDLED_EXCEPTION"
    error_type: str
    error_message: str
    traceback: str | None = None


def _event_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("event")
        if isinstance(kind, str):
            return kind
        if "error_type" in value:
            return "UNHANDLED_EXCEPTION"
        if "event_name" in value:
            return "GENERIC_EVENT"
        if "duration" in value:
            return "SESSION_END"
        return "SESSION_START"
    kind = getattr(value, "event", None)
    return kind if isinstance(kind, str) else None


TelemetryEvent = Annotated[
    Union[  # noqa: UP007 - pydantic tagged union
        Annotated[SessionStartEvent, Tag("SESSION_START")],
        Annotated[SessionEndEvent, Tag("SESSION_END")],
        Annotated[GenericEvent, Tag("GENERIC_EVENT")],
        Annotated[UnhandledExceptionEvent, Tag("UNHANDLED_EXCEPTION")],
    ],
    Discriminator(_event_tag),
]


class TelemetrySendRequest(WireModel):
    """A batch of telemetry events (at most 100 per POST in 0.16.1)."""

    session_id: str
    platform: str
    sdk_version: str
    events: list[TelemetryEvent] = Field(default_factory=list)
    #: The client process (shared by its sessions); sent by tinker 0.38.
    process_uuid: str | None = None


class TelemetryBatch(TelemetrySendRequest):
    """tinker 0.38's name of a batch of events before it is sent (same fields)."""


class TelemetryResponse(WireModel):
    """Must be exactly ``{"status": "accepted"}``."""

    status: Literal["accepted"] = "accepted"
