"""Routes of sampling (protocol.md §2.7)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from tinkex_server._routes import V1, carrier, direct, errors, idempotency_key
from tinkex_server._runtime import Runtime
from tinkex_server._streaming import EVENT_STREAM, sample_events
from tinkex_server._usage import record_applied
from tinkex_server._wire import body_doc, decode_request, reply, wire_body
from tinkex_types import (
    CreateSamplingSessionRequest,
    CreateSamplingSessionResponse,
    GetSamplerResponse,
    SampleRequest,
    UntypedAPIFuture,
)

__all__ = ["add_sampling_routes"]

_SAMPLING: list[str | Enum] = ["sampling"]


def add_sampling_routes(router: APIRouter, runtime: Runtime) -> None:
    """create_sampling_session, asample, stream_sample and samplers/{id}."""

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
    @direct
    async def asample(request: Request) -> Response:
        body = await decode_request(request, SampleRequest)
        return reply(
            runtime.sampling.asample(
                body, idempotency_key(request), carrier(request, runtime.hooks)
            )
        )

    @router.post(
        f"{V1}/stream_sample",
        tags=_SAMPLING,
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "Server-sent events, each `data` a SampleStreamChunk: a token "
                "chunk per generated token (`index`, `token_id`, `token`, `logprob`), then "
                "per sample a final chunk (`index`, `finish_reason`, `total_tokens`); "
                "`event: error` with `{error}` if generation fails after the stream began. "
                "Closing the response stops generation.",
                "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
            },
            **errors(400, 404, 413, 422, 429),
        },
        openapi_extra=body_doc(SampleRequest),
    )
    async def stream_sample(
        body: Annotated[SampleRequest, Depends(wire_body(SampleRequest))],
        request: Request,
    ) -> Response:
        job = runtime.sampling.sample_job(
            body, carrier(request, runtime.hooks), request_type="SampleStream"
        )
        return StreamingResponse(
            sample_events(job, runtime.worker, lambda out: record_applied(runtime.store, job, out)),
            media_type=EVENT_STREAM,
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    @router.get(
        f"{V1}/samplers/{{sampler_id}}",
        tags=_SAMPLING,
        response_model=GetSamplerResponse,
        responses=errors(404),
    )
    async def get_sampler(sampler_id: str) -> Response:
        return reply(runtime.sampling.get_sampler(sampler_id))
