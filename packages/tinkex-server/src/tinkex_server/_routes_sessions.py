"""Routes of sessions, heartbeats, telemetry and future polls (protocol.md §2.3, §2.4,
§2.10)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from tinkex_server._generations import SaveWeightsExternalResponse
from tinkex_server._routes import V1, direct, errors, idempotency_key
from tinkex_server._runtime import Runtime
from tinkex_server._wire import (
    body_doc,
    decode_request,
    raw_json,
    reply,
    reply_result,
    wire_body,
)
from tinkex_types import (
    CreateModelResponse,
    CreateSessionRequest,
    CreateSessionResponse,
    ForwardBackwardOutput,
    FutureRetrieveRequest,
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
)
from tinkex_types._responses import SessionHeartbeatAck

__all__ = ["FutureResult", "add_session_routes"]

_SESSION: list[str | Enum] = ["session"]
_FUTURES: list[str | Enum] = ["futures"]

#: What a finished future answers (200): the result of its operation or its failure.
FutureResult = (
    ForwardBackwardOutput
    | OptimStepResponse
    | SaveWeightsResponse
    | SaveWeightsForSamplerResponse
    | LoadWeightsResponse
    | CreateModelResponse
    | UnloadModelResponse
    | SampleResponse
    | SaveWeightsExternalResponse
    | RequestFailedResponse
)


def add_session_routes(router: APIRouter, runtime: Runtime) -> None:
    """create_session, session_heartbeat, telemetry and retrieve_future."""

    @router.post(
        tags=_SESSION,
        path=f"{V1}/create_session",
        response_model=CreateSessionResponse,
        responses=errors(400, 413, 422),
        openapi_extra=body_doc(CreateSessionRequest),
    )
    async def create_session(
        body: Annotated[CreateSessionRequest, Depends(wire_body(CreateSessionRequest))],
        request: Request,
    ) -> Response:
        return reply(runtime.sessions.create_session(body, idempotency_key(request)))

    @router.post(
        tags=_SESSION,
        path=f"{V1}/session_heartbeat",
        response_model=SessionHeartbeatAck,
        responses=errors(400, 404, 410, 413, 422),
        openapi_extra=body_doc(SessionHeartbeatRequest),
    )
    async def session_heartbeat(
        body: Annotated[SessionHeartbeatRequest, Depends(wire_body(SessionHeartbeatRequest))],
    ) -> Response:
        return reply(runtime.sessions.heartbeat(body))

    @router.post(
        tags=_SESSION,
        path=f"{V1}/telemetry",
        response_model=TelemetryResponse,
        responses=errors(400, 413),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def telemetry(request: Request) -> Response:
        return reply(runtime.sessions.telemetry(await raw_json(request)))

    @router.post(
        f"{V1}/retrieve_future",
        tags=_FUTURES,
        response_model=FutureResult,
        responses={
            408: {
                "model": TryAgainResponse,
                "description": "Not finished yet: poll again",
            },
            **errors(400, 404, 410, 413, 422),
        },
        openapi_extra=body_doc(FutureRetrieveRequest),
    )
    @direct
    async def retrieve_future(request: Request) -> Response:
        body = await decode_request(request, FutureRetrieveRequest)
        answer = await runtime.sessions.retrieve_future(body)
        return reply_result(request, answer.status, answer.model, answer.result)
