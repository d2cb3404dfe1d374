"""Routes of PEFT imports and merged exports (see :mod:`tinkex_server._peft`)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response

from tinkex_server._peft import ExportMergedRequest, ImportPeftRequest, PeftService
from tinkex_server._routes import V1, carrier, errors, idempotency_key
from tinkex_server._runtime import Runtime
from tinkex_server._wire import body_doc, reply, wire_body
from tinkex_types import UntypedAPIFuture

__all__ = ["add_peft_routes"]

_TAGS: list[str | Enum] = ["peft"]
_LOCAL_HOST = "tinkex.local"


def add_peft_routes(router: APIRouter, runtime: Runtime) -> None:
    """import_peft_adapter, export_merged and the merged-export downloads."""
    services: dict[int, PeftService] = {}

    def service() -> PeftService:
        training = runtime.training
        found = services.get(id(training))
        if found is None or found.training is not training:
            found = services[id(training)] = PeftService(training)
        return found

    @router.post(
        f"{V1}/import_peft_adapter",
        tags=_TAGS,
        response_model=UntypedAPIFuture,
        responses=errors(400, 404, 410, 413, 422),
        openapi_extra=body_doc(ImportPeftRequest),
    )
    async def import_peft_adapter(
        body: Annotated[ImportPeftRequest, Depends(wire_body(ImportPeftRequest))],
        request: Request,
    ) -> Response:
        future = service().import_adapter(
            body, idempotency_key(request), carrier(request, runtime.hooks)
        )
        return reply(future)

    @router.post(
        f"{V1}/export_merged",
        tags=_TAGS,
        response_model=UntypedAPIFuture,
        responses=errors(400, 404, 413, 422),
        openapi_extra=body_doc(ExportMergedRequest),
    )
    async def export_merged(
        body: Annotated[ExportMergedRequest, Depends(wire_body(ExportMergedRequest))],
        request: Request,
    ) -> Response:
        base = str(request.base_url)
        if request.headers.get("host") == _LOCAL_HOST:
            base = "local:///"
        future = service().export_merged(
            body, base, idempotency_key(request), carrier(request, runtime.hooks)
        )
        return reply(future)

    @router.get(
        f"{V1}/merged_exports/{{export_id}}",
        tags=_TAGS,
        response_class=FileResponse,
        responses={
            200: {
                "description": "The merged model directory as a tar archive",
                "content": {
                    "application/x-tar": {"schema": {"type": "string", "format": "binary"}}
                },
            },
            **errors(403, 404, 422),
        },
    )
    async def download_merged_export(
        export_id: str, expires: int = 0, signature: str = ""
    ) -> Response:
        path = service().export_file(export_id, expires, signature)
        return FileResponse(path, media_type="application/x-tar", filename=f"{export_id}.tar")
