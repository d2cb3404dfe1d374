"""Sessions, heartbeats, telemetry and future polls.

``create_session`` answers are cached per ``X-Idempotency-Key`` (for
``idempotency_ttl_s``). A poll (:meth:`SessionService.retrieve_future`) holds an unfinished
future for up to ``poll_hold_s``, then answers 408 ``try_again`` (with the request's place in
its model's queue when it waits in one: docs/queue.md); a finished one answers
200 with its stored result (or failure); an unknown one 404; one lost in a restart or
expired 410.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from tinkex_server._context import Desk, ServerParts
from tinkex_server._generations import FinishSessionRequest, SaveWeightsExternalResponse
from tinkex_server._problems import ApiProblem, bad_request, not_found
from tinkex_types import (
    CreateModelResponse,
    CreateSessionRequest,
    CreateSessionResponse,
    EmptyResponse,
    ForwardBackwardOutput,
    FutureRetrieveRequest,
    GetSessionResponse,
    LoadWeightsResponse,
    OptimStepResponse,
    RequestFailedResponse,
    SampleResponse,
    SaveWeightsForSamplerResponse,
    SaveWeightsResponse,
    SessionHeartbeatRequest,
    TelemetryResponse,
    TryAgainResponse,
    UnloadModelResponse,
    WireModel,
)
from tinkex_types._checkpoints import Cursor
from tinkex_types._responses import ListSessionsPage, SessionHeartbeatAck

__all__ = ["ACCESS_SCOPES", "RESULT_MODELS", "FutureAnswer", "SessionService", "check_scope"]

ACCESS_SCOPES = ("owned", "accessible")

#: The result model of each future kind (``request_type`` of the future row).
RESULT_MODELS: dict[str, type[WireModel]] = {
    "CreateModel": CreateModelResponse,
    "UnloadModel": UnloadModelResponse,
    "Forward": ForwardBackwardOutput,
    "ForwardBackward": ForwardBackwardOutput,
    "OptimStep": OptimStepResponse,
    "SaveWeights": SaveWeightsResponse,
    "SaveWeightsForSampler": SaveWeightsForSamplerResponse,
    "LoadWeights": LoadWeightsResponse,
    "Sample": SampleResponse,
    "SaveWeightsExternal": SaveWeightsExternalResponse,
}


def check_scope(access_scope: str) -> None:
    """400 unless ``access_scope`` is ``owned`` or ``accessible``."""
    if access_scope not in ACCESS_SCOPES:
        raise bad_request(
            "access_scope", f"unknown value {access_scope!r}", "use 'owned' or 'accessible'"
        )


@dataclass(frozen=True)
class FutureAnswer:
    """A poll's answer: ``status`` 200 with a stored ``result`` (JSON data) of
    ``model`` (the result model, or :class:`RequestFailedResponse`), or 408 ``try_again``."""

    status: int
    model: type[WireModel]
    result: dict[str, Any]


def _answer(status: str, request_type: str, result: dict[str, Any]) -> FutureAnswer:
    """The 200 answer of a finished future (``done``: its result model; ``failed``)."""
    if status == "failed":
        return FutureAnswer(200, RequestFailedResponse, result)
    return FutureAnswer(200, RESULT_MODELS.get(request_type, WireModel), result)


class SessionService:
    """create_session, session_heartbeat, telemetry, sessions and retrieve_future."""

    def __init__(self, parts: ServerParts, desk: Desk) -> None:
        self.parts = parts
        self.desk = desk
        self.store = parts.store

    def create_session(
        self, req: CreateSessionRequest, idempotency_key: str | None
    ) -> CreateSessionResponse:
        key = f"idem:create_session:{idempotency_key}" if idempotency_key else None
        if key is not None:
            _, cached = self.store.dedup_get(key)
            if cached is not None:
                return CreateSessionResponse.model_validate(cached)
        session_id = str(uuid.uuid4())
        self.store.create_session(
            session_id,
            tags=list(req.tags),
            user_metadata=req.user_metadata,
            sdk_version=req.sdk_version,
            project_id=req.project_id,
        )
        answer = CreateSessionResponse(session_id=session_id)
        if key is not None:
            self.store.dedup_put(key, response=answer.to_json_dict())
        return answer

    def heartbeat(self, req: SessionHeartbeatRequest) -> SessionHeartbeatAck:
        if not self.store.touch_session(req.session_id):
            raise not_found("session_id", req.session_id)
        self.refuse_finished(req.session_id)
        return SessionHeartbeatAck()

    def refuse_finished(self, session_id: str) -> None:
        """410 when the session was finished (0.38 stops its heartbeat loop on a 410)."""
        self.desk.live_session(session_id)

    def finish(self, session_id: str, req: FinishSessionRequest) -> EmptyResponse:
        """End a session (0.38 ``ServiceClient.close``): the first reason wins; later
        heartbeats and new models or samplers of the session get 410."""
        self.desk.session(session_id)
        self.store.dedup_put(
            f"finished:{session_id}",
            response={"reason": req.reason.type, "detail": req.detail},
        )
        return EmptyResponse()

    def telemetry(self, body: Any) -> TelemetryResponse:
        """Store a telemetry batch as it came (any JSON; its ``session_id`` if it has one)."""
        session_id = body.get("session_id") if isinstance(body, dict) else None
        self.store.insert_telemetry(
            body, session_id=session_id if isinstance(session_id, str) else None
        )
        return TelemetryResponse()

    def list_sessions(self, limit: int, offset: int, access_scope: str) -> ListSessionsPage:
        check_scope(access_scope)
        ids, total = self.store.list_sessions(limit=limit, offset=offset)
        return ListSessionsPage(
            sessions=ids, cursor=Cursor(offset=offset, limit=limit, total_count=total)
        )

    def get_session(self, session_id: str, access_scope: str) -> GetSessionResponse:
        check_scope(access_scope)
        self.desk.session(session_id)
        runs, samplers = self.store.session_children(session_id)
        return GetSessionResponse(training_run_ids=runs, sampler_ids=samplers)

    async def retrieve_future(self, req: FutureRetrieveRequest) -> FutureAnswer:
        """The poll of ``req.request_id`` (see the module docstring); 404/410 are raised.

        A future the hub holds is pending (its row says so): the poll waits at once, and
        when the result is stored meanwhile it is handed over, not read back."""
        hub = self.parts.hub
        if hub.is_pending(req.request_id):
            outcome = await hub.wait(req.request_id, self.parts.config.poll_hold_s)
            if outcome is not None:
                return _answer(*outcome)
            row = self.store.get_future(req.request_id)
            assert row is not None
            if row.status == "pending":
                place = self.parts.scheduler.queue_place(req.request_id)
                again = TryAgainResponse(
                    request_id=req.request_id,
                    queue_position=place.position if place else None,
                    estimated_wait_s=place.estimated_wait_s if place else None,
                )
                return FutureAnswer(408, TryAgainResponse, again.to_json_dict())
        else:
            row = self.store.get_future(req.request_id)
            if row is None:
                raise not_found("request_id", req.request_id)
            if row.status == "pending":
                raise ApiProblem(410, f"future {req.request_id!r} was lost (the server restarted)")
        if row.status in ("done", "failed"):
            return _answer(row.status, row.request_type, dict(row.result))
        reason = (
            "was lost when the server restarted"
            if row.status == "lost"
            else "expired (results are kept for a limited time)"
        )
        raise ApiProblem(410, f"future {req.request_id!r} {reason}; submit the request again")
