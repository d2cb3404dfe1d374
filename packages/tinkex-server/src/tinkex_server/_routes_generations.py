"""Routes of the later protocol generations (official SDK 0.18 - 0.38, protocol.md §4):
``client/config``, ``client/dynamic_config``, ``sessions/{id}/finish``,
``save_weights_external``, ``…/external_weights_urls`` and the signed external-weight files.

With ``ServerConfig.protobuf`` off (``tinkex serve --json-only``) the two configuration
routes answer 404 naming the route, as a server of the JSON generation does.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response

from tinkex_server._external import ExternalWeightsService
from tinkex_server._generations import (
    ClientConfigRequest,
    ClientConfigResponse,
    DynamicConfigResponse,
    FinishSessionRequest,
    SaveWeightsExternalRequest,
    client_flags,
)
from tinkex_server._problems import ApiProblem
from tinkex_server._routes import V1, carrier, errors, idempotency_key
from tinkex_server._routes_training import ordered_body
from tinkex_server._runtime import Runtime
from tinkex_server._wire import body_doc, reply, wire_body
from tinkex_types import EmptyResponse, ExternalWeightsUrlsResponse, UntypedAPIFuture

__all__ = ["add_generation_routes"]

_CLIENT: list[str | Enum] = ["client"]
_SESSION: list[str | Enum] = ["session"]
_WEIGHTS: list[str | Enum] = ["weights"]
_LOCAL_HOST = "tinkex.local"


def _json_only(runtime: Runtime, route: str) -> None:
    if not runtime.config.protobuf:
        raise ApiProblem(
            404,
            f"POST {V1}/{route} is not served: this server speaks the JSON generation only "
            "(started with --json-only)",
        )


def add_generation_routes(router: APIRouter, runtime: Runtime) -> None:
    """client/config, client/dynamic_config and sessions/{id}/finish; external weights."""

    @router.post(
        f"{V1}/client/config",
        tags=_CLIENT,
        response_model=ClientConfigResponse,
        responses=errors(400, 404, 413),
        openapi_extra=body_doc(ClientConfigRequest),
    )
    async def client_config(
        body: Annotated[ClientConfigRequest, Depends(wire_body(ClientConfigRequest))],
    ) -> Response:
        _json_only(runtime, "client/config")
        return reply(client_flags(runtime.config))

    @router.post(
        f"{V1}/client/dynamic_config",
        tags=_CLIENT,
        response_model=DynamicConfigResponse,
        responses=errors(400, 404, 413),
        openapi_extra=body_doc(ClientConfigRequest),
    )
    async def dynamic_config(
        body: Annotated[ClientConfigRequest, Depends(wire_body(ClientConfigRequest))],
    ) -> Response:
        _json_only(runtime, "client/dynamic_config")
        return reply(DynamicConfigResponse())

    @router.post(
        f"{V1}/sessions/{{session_id}}/finish",
        tags=_SESSION,
        response_model=EmptyResponse,
        responses=errors(400, 404, 413),
        openapi_extra=body_doc(FinishSessionRequest),
    )
    async def finish_session(
        session_id: str,
        body: Annotated[FinishSessionRequest, Depends(wire_body(FinishSessionRequest))],
    ) -> Response:
        return reply(runtime.sessions.finish(session_id, body))

    _external_routes(router, runtime)


def _external_routes(router: APIRouter, runtime: Runtime) -> None:
    def service() -> ExternalWeightsService:
        return runtime.external

    @router.post(
        f"{V1}/save_weights_external",
        tags=_WEIGHTS,
        response_model=UntypedAPIFuture,
        responses=errors(400, 404, 413),
        openapi_extra=body_doc(SaveWeightsExternalRequest),
    )
    async def save_weights_external(
        body: Annotated[
            SaveWeightsExternalRequest,
            Depends(ordered_body(SaveWeightsExternalRequest)),
        ],
        request: Request,
    ) -> Response:
        return reply(
            service().save(body, idempotency_key(request), carrier(request, runtime.hooks))
        )

    @router.get(
        f"{V1}/training_runs/{{run_id}}/checkpoints/{{kind}}/{{name}}/external_weights_urls",
        tags=_WEIGHTS,
        response_model=ExternalWeightsUrlsResponse,
        responses=errors(400, 404),
    )
    async def external_weights_urls(
        run_id: str, kind: str, name: str, request: Request
    ) -> Response:
        base = str(request.base_url)
        if request.headers.get("host") == _LOCAL_HOST:
            base = "local:///"
        return reply(service().urls(run_id, kind, name, base))

    @router.get(
        f"{V1}/external_weights/{{run_id}}/{{name}}/{{file}}",
        tags=_WEIGHTS,
        response_class=FileResponse,
        responses={
            200: {
                "description": "One exported file",
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            },
            **errors(403, 404),
        },
    )
    async def external_weights_file(
        run_id: str, name: str, file: str, expires: int = 0, signature: str = ""
    ) -> Response:
        path = service().file(run_id, name, file, expires, signature)
        return FileResponse(path, media_type="application/octet-stream", filename=file)
