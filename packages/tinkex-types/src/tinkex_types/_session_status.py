"""How a session ended, and the status filters of a session search (tinker 0.38).

A 0.38 client ends its session with ``POST /api/v1/sessions/{id}/finish`` and
``{"reason": ClientSessionFinishReason, "detail": ...}``; a server reports a session's
:data:`SessionStatus` (active, failed, cancelled, or finished by its client). Every union
here is told apart by ``type``, which is always written.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from tinkex_types._base import TaggedWireModel

__all__ = [
    "ActiveSessionStatusQuery",
    "CancelledSessionStatusQuery",
    "ClientFinishedSessionStatusQuery",
    "ClientSessionFinishErrored",
    "ClientSessionFinishInterrupted",
    "ClientSessionFinishReason",
    "ClientSessionFinishReasonType",
    "ClientSessionFinishSuccess",
    "ClientSessionFinished",
    "FailedSessionStatusQuery",
    "SessionActive",
    "SessionCancelled",
    "SessionFailed",
    "SessionFailedReason",
    "SessionFailedRequestReason",
    "SessionFailedSamplingSessionReason",
    "SessionFailedTrainingRunReason",
    "SessionStatus",
    "SessionStatusQuery",
]

#: Why a client finished its session.
ClientSessionFinishReasonType = Literal["success", "errored", "interrupted"]


class SessionFailedRequestReason(TaggedWireModel):
    """A request failed the session."""

    type: Literal["request"] = "request"
    request_id: str
    request_type: str


class SessionFailedTrainingRunReason(TaggedWireModel):
    """A training run failed the session."""

    type: Literal["training_run"] = "training_run"
    training_run_id: str


class SessionFailedSamplingSessionReason(TaggedWireModel):
    """A sampling session failed the session."""

    type: Literal["sampling_session"] = "sampling_session"
    sampling_session_id: str


SessionFailedReason = Annotated[
    SessionFailedRequestReason
    | SessionFailedTrainingRunReason
    | SessionFailedSamplingSessionReason,
    Field(discriminator="type"),
]


class SessionFailed(TaggedWireModel):
    """The session was failed by one of its requests, training runs or sampling sessions."""

    type: Literal["failed"] = "failed"
    category: Literal["user", "internal"]
    reason: SessionFailedReason
    message: str


class SessionCancelled(TaggedWireModel):
    """The session was cancelled (from the hosted service's console)."""

    type: Literal["cancelled"] = "cancelled"
    detail: str | None = None


class ClientSessionFinishSuccess(TaggedWireModel):
    type: Literal["success"] = "success"


class ClientSessionFinishErrored(TaggedWireModel):
    type: Literal["errored"] = "errored"


class ClientSessionFinishInterrupted(TaggedWireModel):
    type: Literal["interrupted"] = "interrupted"


#: ``{"type": "success" | "errored" | "interrupted"}``: why the client finished.
ClientSessionFinishReason = Annotated[
    ClientSessionFinishSuccess | ClientSessionFinishErrored | ClientSessionFinishInterrupted,
    Field(discriminator="type"),
]


class ClientSessionFinished(TaggedWireModel):
    """The session's client reported it was done."""

    type: Literal["client_finished"] = "client_finished"
    reason: ClientSessionFinishReason
    detail: str | None = None


class SessionActive(TaggedWireModel):
    type: Literal["active"] = "active"


SessionStatus = Annotated[
    SessionFailed | SessionCancelled | ClientSessionFinished | SessionActive,
    Field(discriminator="type"),
]


class ActiveSessionStatusQuery(TaggedWireModel):
    """Sessions still running."""

    type: Literal["active"] = "active"


class CancelledSessionStatusQuery(TaggedWireModel):
    """Sessions cancelled from the console."""

    type: Literal["cancelled"] = "cancelled"


class FailedSessionStatusQuery(TaggedWireModel):
    """Sessions failed by a request, training run or sampling session."""

    type: Literal["failed"] = "failed"


class ClientFinishedSessionStatusQuery(TaggedWireModel):
    """Sessions whose client reported it was done, for any of ``reasons`` (``None``: all)."""

    type: Literal["client_finished"] = "client_finished"
    reasons: list[ClientSessionFinishReasonType] | None = Field(default=None, min_length=1)


SessionStatusQuery = Annotated[
    ActiveSessionStatusQuery
    | CancelledSessionStatusQuery
    | FailedSessionStatusQuery
    | ClientFinishedSessionStatusQuery,
    Field(discriminator="type"),
]
