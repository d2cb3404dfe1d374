"""Routes of sampling and future polls (protocol.md §2.7, §2.10)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from tinkex_server._routes import V1, carrier, errors, idempotency_key
from tinkex_server._runtime import Runtime
from tinkex_server._wire import body_doc, reply, reply_result, wire_body
from tinkex_types import (
    CreateModelResponse,
    CreateSamplingSessionRequest,
    CreateSamplingSessionResponse,
    ForwardBackwardOutput,
    FutureRetrieveRequest,
    GetSamplerResponse,
    LoadWeightsResponse,
    OptimStepResponse,
    RequestFailedResponse,
    SampleRequest,
    SampleResponse,
    SaveWeightsForSamplerResponse,
    SaveWeightsResponse,
    TryAgainResponse,
    UnloadModelResponse,
    UntypedAPIFuture,
)

__all__ = ["FutureResult", "add_sampling_routes"]

_SAMPLING: list[str | Enum] = ["sampling"]
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
    | RequestFailedResponse
)


def add_sampling_routes(router: APIRouter, runtime: Runtime) -> None:
    """create_sampling_session, asample, samplers/{id} and retrieve_future."""

    @router.post(
        f"{V1}/create_sampling_session",
        tags=_SAMPLING,
        response_model=CreateSamplingSessionResponse,
        responses=errors(400, 404, 413, 422),
        openapi_extra=body_doc(CreateSamplingSessionRequest),
    )
    async def create_sampling_session(
        body: Annotated[
            CreateSamplingSessionRequest, Depends(wire_body(CreateSamplingSessionRequest))
        ],
    ) -> Response:
        return reply(runtime.sampling.create_sampling_session(body))

    @router.post(
        f"{V1}/asample",
        tags=_SAMPLING,
        response_model=UntypedAPIFuture,
        responses=errors(400, 404, 413, 422, 429),
        openapi_extra=body_doc(SampleRequest),
    )
    async def asample(
        body: Annotated[SampleRequest, Depends(wire_body(SampleRequest))],
        request: Request,
    ) -> Response:
        return reply(
            runtime.sampling.asample(
                body, idempotency_key(request), carrier(request, runtime.hooks)
            )
        )

    @router.get(
        f"{V1}/samplers/{{sampler_id}}",
        tags=_SAMPLING,
        response_model=GetSamplerResponse,
        responses=errors(404),
    )
    async def get_sampler(sampler_id: str) -> Response:
        return reply(runtime.sampling.get_sampler(sampler_id))

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
    async def retrieve_future(
        body: Annotated[FutureRetrieveRequest, Depends(wire_body(FutureRetrieveRequest))],
        request: Request,
    ) -> Response:
        answer = await runtime.sessions.retrieve_future(body)
        return reply_result(request, answer.status, answer.model, answer.result)
