"""The route of server-side custom losses: ``POST /api/v1/create_custom_loss`` (tinker 0.38,
see :mod:`tinkex_server._custom_losses`)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from tinkex_server._custom_losses import CustomLossService
from tinkex_server._routes import V1, carrier, errors, idempotency_key
from tinkex_server._runtime import Runtime
from tinkex_server._wire import body_doc, reply, wire_body
from tinkex_types import CreateCustomLossRequest, UntypedAPIFuture

__all__ = ["add_custom_loss_routes"]

_TRAINING: list[str | Enum] = ["training"]


def add_custom_loss_routes(router: APIRouter, runtime: Runtime) -> None:
    """``POST /api/v1/create_custom_loss``."""

    @router.post(
        f"{V1}/create_custom_loss",
        tags=_TRAINING,
        response_model=UntypedAPIFuture,
        responses=errors(400, 404, 410, 413, 422),
        openapi_extra=body_doc(CreateCustomLossRequest),
    )
    async def create_custom_loss(
        body: Annotated[CreateCustomLossRequest, Depends(wire_body(CreateCustomLossRequest))],
        request: Request,
    ) -> Response:
        service = CustomLossService(runtime.training.desk)
        return reply(
            service.create(body, idempotency_key(request), carrier(request, runtime.hooks))
        )
