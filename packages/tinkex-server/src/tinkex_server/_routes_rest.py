"""REST routes: capabilities, health, training runs, checkpoints, archives, sessions
(protocol.md §2.11)."""

from __future__ import annotations

from enum import Enum

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response

from tinkex_server._routes import V1, errors
from tinkex_server._runtime import Runtime
from tinkex_server._wire import raw_json, reply
from tinkex_types import (
    CheckpointsListResponse,
    GetServerCapabilitiesResponse,
    GetSessionResponse,
    HealthResponse,
    SetCheckpointTtlRequest,
    TrainingRun,
    TrainingRunsResponse,
)
from tinkex_types._responses import EmptyResponse, ListSessionsPage

#: Bytes per read of an archive being sent. Starlette's FileResponse reads 64 KiB per
#: worker-thread hop, which caps a 1 GiB download at a few hundred MB/s; 4 MiB reads cut the
#: hops 64-fold for a few MiB of memory per download.
ARCHIVE_CHUNK_BYTES = 4 * 1024 * 1024


class _ArchiveResponse(FileResponse):
    chunk_size = ARCHIVE_CHUNK_BYTES


__all__ = ["add_rest_routes"]

#: The host of requests from the in-process ``local://`` transport (see ``_local``).
_LOCAL_HOST = "tinkex.local"
_CKPT = "/training_runs/{run_id}/checkpoints/{kind}/{name}"
_LIMIT = Query(20, ge=0, le=10_000)
_OFFSET = Query(0, ge=0, le=2**62)
_TAGS: list[str | Enum] = ["rest"]


def add_rest_routes(router: APIRouter, runtime: Runtime) -> None:
    """Every REST route (see the module docstring)."""

    @router.get(
        tags=_TAGS,
        path=f"{V1}/get_server_capabilities",
        response_model=GetServerCapabilitiesResponse,
        responses=errors(),
    )
    async def get_server_capabilities() -> Response:
        return reply(runtime.rest.capabilities())

    @router.get(tags=_TAGS, path=f"{V1}/healthz", response_model=HealthResponse, responses=errors())
    async def healthz() -> Response:
        return reply(HealthResponse())

    @router.get(
        tags=_TAGS,
        path=f"{V1}/training_runs",
        response_model=TrainingRunsResponse,
        responses=errors(400, 422),
    )
    async def list_training_runs(
        limit: int = _LIMIT, offset: int = _OFFSET, access_scope: str = "owned"
    ) -> Response:
        return reply(runtime.rest.list_training_runs(limit, offset, access_scope))

    @router.get(
        tags=_TAGS,
        path=f"{V1}/training_runs/{{run_id}}",
        response_model=TrainingRun,
        responses=errors(400, 404),
    )
    async def get_training_run(run_id: str, access_scope: str = "owned") -> Response:
        return reply(runtime.rest.get_training_run(run_id, access_scope))

    @router.get(
        tags=_TAGS,
        path=f"{V1}/training_runs/{{run_id}}/checkpoints",
        response_model=CheckpointsListResponse,
        responses=errors(404),
    )
    async def list_run_checkpoints(run_id: str) -> Response:
        return reply(runtime.rest.list_run_checkpoints(run_id))

    @router.get(
        tags=_TAGS,
        path=f"{V1}/models/{{run_id}}/checkpoints",
        response_model=CheckpointsListResponse,
        responses=errors(404),
    )
    async def list_model_checkpoints(run_id: str) -> Response:
        return reply(runtime.rest.list_run_checkpoints(run_id))

    @router.get(
        tags=_TAGS,
        path=f"{V1}/checkpoints",
        response_model=CheckpointsListResponse,
        responses=errors(422),
    )
    async def list_user_checkpoints(
        limit: int = Query(100, ge=0, le=10_000), offset: int = _OFFSET
    ) -> Response:
        return reply(runtime.rest.list_user_checkpoints(limit, offset))

    _session_routes(router, runtime)
    _checkpoint_routes(router, runtime)


def _session_routes(router: APIRouter, runtime: Runtime) -> None:
    @router.get(
        tags=_TAGS,
        path=f"{V1}/sessions",
        response_model=ListSessionsPage,
        responses=errors(400, 422),
    )
    async def list_sessions(
        limit: int = _LIMIT, offset: int = _OFFSET, access_scope: str = "owned"
    ) -> Response:
        return reply(runtime.sessions.list_sessions(limit, offset, access_scope))

    @router.get(
        tags=_TAGS,
        path=f"{V1}/sessions/{{session_id}}",
        response_model=GetSessionResponse,
        responses=errors(400, 404),
    )
    async def get_session(session_id: str, access_scope: str = "owned") -> Response:
        return reply(runtime.sessions.get_session(session_id, access_scope))


def _checkpoint_routes(router: APIRouter, runtime: Runtime) -> None:
    @router.delete(
        tags=_TAGS, path=f"{V1}{_CKPT}", response_model=EmptyResponse, responses=errors(404)
    )
    async def delete_checkpoint(run_id: str, kind: str, name: str) -> Response:
        return reply(runtime.rest.delete_checkpoint(run_id, kind, name))

    @router.post(
        tags=_TAGS, path=f"{V1}{_CKPT}/publish", response_model=EmptyResponse, responses=errors(404)
    )
    async def publish_checkpoint(run_id: str, kind: str, name: str) -> Response:
        return reply(runtime.rest.publish(run_id, kind, name, True))

    @router.delete(
        tags=_TAGS, path=f"{V1}{_CKPT}/publish", response_model=EmptyResponse, responses=errors(404)
    )
    async def unpublish_checkpoint(run_id: str, kind: str, name: str) -> Response:
        return reply(runtime.rest.publish(run_id, kind, name, False))

    schema = SetCheckpointTtlRequest.model_json_schema()
    schema.pop("$defs", None)

    @router.put(
        tags=_TAGS,
        path=f"{V1}{_CKPT}/ttl",
        response_model=EmptyResponse,
        responses=errors(400, 404, 413),
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}
        },
    )
    async def set_checkpoint_ttl(run_id: str, kind: str, name: str, request: Request) -> Response:
        return reply(runtime.rest.set_ttl(run_id, kind, name, await raw_json(request)))

    @router.get(
        tags=_TAGS,
        path=f"{V1}{_CKPT}/archive",
        status_code=302,
        response_class=Response,
        responses={
            302: {"description": "Redirect to a signed download URL (Location header)"},
            **errors(404),
        },
    )
    async def checkpoint_archive_url(
        run_id: str, kind: str, name: str, request: Request
    ) -> Response:
        base = str(request.base_url)
        if request.headers.get("host") == _LOCAL_HOST:
            base = "local:///"
        location, expires = await runtime.rest.archive_redirect(run_id, kind, name, base)
        return Response(
            status_code=302,
            headers={"location": location, "expires": expires, "cache-control": "no-store"},
        )

    @router.get(
        tags=_TAGS,
        path=f"{V1}/checkpoint_archives/{{run_id}}/{{kind}}/{{name}}",
        response_class=FileResponse,
        responses={
            200: {
                "description": "The checkpoint as a tar archive",
                "content": {
                    "application/x-tar": {"schema": {"type": "string", "format": "binary"}}
                },
            },
            **errors(403, 404, 422),
        },
    )
    async def download_checkpoint_archive(
        run_id: str, kind: str, name: str, expires: int = 0, signature: str = ""
    ) -> Response:
        path = await runtime.rest.archive_file(run_id, kind, name, expires, signature)
        return _ArchiveResponse(path, media_type="application/x-tar", filename=f"{name}.tar")
