"""Routes of training runs and weights (protocol.md §2.5-§2.9)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel

from tinkex_server._generations import LoadWeightsCreateRequest
from tinkex_server._problems import ApiProblem
from tinkex_server._routes import V1, carrier, errors, idempotency_key
from tinkex_server._runtime import Runtime
from tinkex_server._wire import body_doc, decode_request, ordered_ids, reply, wire_body
from tinkex_types import (
    CreateModelRequest,
    ForwardBackwardRequest,
    ForwardRequest,
    GetInfoRequest,
    GetInfoResponse,
    OptimStepRequest,
    SaveWeightsForSamplerRequest,
    SaveWeightsRequest,
    UnloadModelRequest,
    UntypedAPIFuture,
    WeightsInfoRequest,
    WeightsInfoResponse,
)

__all__ = ["add_training_routes", "ordered_body"]

_B = TypeVar("_B", bound=BaseModel)

_SUBMIT = errors(400, 404, 413, 422)
_TRAINING: list[str | Enum] = ["training"]
_WEIGHTS: list[str | Enum] = ["weights"]


def add_training_routes(router: APIRouter, runtime: Runtime) -> None:
    """create_model, get_info, unload_model, the ordered steps and weights_info."""

    @router.post(
        f"{V1}/create_model",
        tags=_TRAINING,
        response_model=UntypedAPIFuture,
        responses=_SUBMIT,
        openapi_extra=body_doc(CreateModelRequest),
    )
    async def create_model(
        body: Annotated[CreateModelRequest, Depends(wire_body(CreateModelRequest))],
        request: Request,
    ) -> Response:
        return reply(
            runtime.training.create_model(
                body, idempotency_key(request), carrier(request, runtime.hooks)
            )
        )

    @router.post(
        f"{V1}/get_info",
        tags=_TRAINING,
        response_model=GetInfoResponse,
        responses=_SUBMIT,
        openapi_extra=body_doc(GetInfoRequest),
    )
    async def get_info(
        body: Annotated[GetInfoRequest, Depends(wire_body(GetInfoRequest))],
    ) -> Response:
        return reply(runtime.training.get_info(body))

    @router.post(
        f"{V1}/unload_model",
        tags=_TRAINING,
        response_model=UntypedAPIFuture,
        responses=_SUBMIT,
        openapi_extra=body_doc(UnloadModelRequest),
    )
    async def unload_model(
        body: Annotated[UnloadModelRequest, Depends(wire_body(UnloadModelRequest))],
        request: Request,
    ) -> Response:
        return reply(
            runtime.training.unload_model(
                body, idempotency_key(request), carrier(request, runtime.hooks)
            )
        )

    _step_routes(router, runtime)
    _weights_routes(router, runtime)


def ordered_body(model: type[_B]) -> Callable[[Request], Awaitable[_B]]:
    """A dependency decoding an ordered request's body; a refused body frees its ``seq_id``
    (the next step of the model then need not wait the gap grace for it)."""

    async def dependency(request: Request) -> _B:
        try:
            return await decode_request(request, model)
        except ApiProblem as exc:
            model_id, seq_id = await ordered_ids(request)
            runtime = request.app.state.tinkex
            runtime.training.void_refused(model_id, seq_id, exc.status)
            raise

    dependency.__name__ = f"decode_{model.__name__}"
    return dependency


def _step_routes(router: APIRouter, runtime: Runtime) -> None:
    @router.post(
        f"{V1}/forward",
        tags=_TRAINING,
        response_model=UntypedAPIFuture,
        responses=_SUBMIT,
        openapi_extra=body_doc(ForwardRequest),
    )
    async def forward(
        body: Annotated[ForwardRequest, Depends(ordered_body(ForwardRequest))],
        request: Request,
    ) -> Response:
        return reply(
            runtime.training.forward(
                body, idempotency_key(request), carrier(request, runtime.hooks)
            )
        )

    @router.post(
        f"{V1}/forward_backward",
        tags=_TRAINING,
        response_model=UntypedAPIFuture,
        responses=_SUBMIT,
        openapi_extra=body_doc(ForwardBackwardRequest),
    )
    async def forward_backward(
        body: Annotated[ForwardBackwardRequest, Depends(ordered_body(ForwardBackwardRequest))],
        request: Request,
    ) -> Response:
        return reply(
            runtime.training.forward(
                body, idempotency_key(request), carrier(request, runtime.hooks)
            )
        )

    @router.post(
        f"{V1}/optim_step",
        tags=_TRAINING,
        response_model=UntypedAPIFuture,
        responses=_SUBMIT,
        openapi_extra=body_doc(OptimStepRequest),
    )
    async def optim_step(
        body: Annotated[OptimStepRequest, Depends(ordered_body(OptimStepRequest))],
        request: Request,
    ) -> Response:
        return reply(
            runtime.training.optim_step(
                body, idempotency_key(request), carrier(request, runtime.hooks)
            )
        )


def _weights_routes(router: APIRouter, runtime: Runtime) -> None:

    @router.post(
        f"{V1}/save_weights",
        tags=_WEIGHTS,
        response_model=UntypedAPIFuture,
        responses=_SUBMIT,
        openapi_extra=body_doc(SaveWeightsRequest),
    )
    async def save_weights(
        body: Annotated[SaveWeightsRequest, Depends(ordered_body(SaveWeightsRequest))],
        request: Request,
    ) -> Response:
        return reply(
            runtime.training.save_weights(
                body, idempotency_key(request), carrier(request, runtime.hooks)
            )
        )

    @router.post(
        f"{V1}/save_weights_for_sampler",
        tags=_WEIGHTS,
        response_model=UntypedAPIFuture,
        responses=_SUBMIT,
        openapi_extra=body_doc(SaveWeightsForSamplerRequest),
    )
    async def save_weights_for_sampler(
        body: Annotated[
            SaveWeightsForSamplerRequest,
            Depends(ordered_body(SaveWeightsForSamplerRequest)),
        ],
        request: Request,
    ) -> Response:
        return reply(
            runtime.training.save_weights_for_sampler(
                body, idempotency_key(request), carrier(request, runtime.hooks)
            )
        )

    @router.post(
        f"{V1}/load_weights",
        tags=_WEIGHTS,
        response_model=UntypedAPIFuture,
        responses=_SUBMIT,
        openapi_extra=body_doc(LoadWeightsCreateRequest),
    )
    async def load_weights(
        body: Annotated[LoadWeightsCreateRequest, Depends(ordered_body(LoadWeightsCreateRequest))],
        request: Request,
    ) -> Response:
        return reply(
            runtime.training.load_weights(
                body, idempotency_key(request), carrier(request, runtime.hooks)
            )
        )

    @router.post(
        f"{V1}/weights_info",
        tags=_WEIGHTS,
        response_model=WeightsInfoResponse,
        responses=_SUBMIT,
        openapi_extra=body_doc(WeightsInfoRequest),
    )
    async def weights_info(
        body: Annotated[WeightsInfoRequest, Depends(wire_body(WeightsInfoRequest))],
    ) -> Response:
        return reply(runtime.rest.weights_info(body))
