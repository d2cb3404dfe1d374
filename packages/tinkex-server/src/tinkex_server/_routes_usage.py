"""Usage routes (a tinkex extension): the tokens and steps the server applied for a training
run or a session (:mod:`tinkex_server._usage`)."""

from __future__ import annotations

from enum import Enum

from fastapi import APIRouter
from fastapi.responses import Response

from tinkex_server._routes import V1, errors
from tinkex_server._runtime import Runtime
from tinkex_server._usage import UsageBook
from tinkex_server._wire import reply
from tinkex_types import UsageResponse

__all__ = ["add_usage_routes"]

_TAGS: list[str | Enum] = ["usage"]


def add_usage_routes(router: APIRouter, runtime: Runtime) -> None:
    """``GET /api/v1/training_runs/{run_id}/usage`` and ``GET /api/v1/sessions/{id}/usage``."""

    @router.get(
        tags=_TAGS,
        path=f"{V1}/training_runs/{{run_id}}/usage",
        response_model=UsageResponse,
        responses=errors(404),
        summary="Tokens and steps applied for a training run",
        description="Forward and forward_backward requests, datums and input tokens, "
        "optimizer steps, and the sampling (prompt and generated tokens) of samplers that "
        "serve the run's weights. Each request counts once, when it is applied.",
    )
    async def training_run_usage(run_id: str) -> Response:
        return reply(UsageBook(runtime.store).training_run(run_id))

    @router.get(
        tags=_TAGS,
        path=f"{V1}/sessions/{{session_id}}/usage",
        response_model=UsageResponse,
        responses=errors(404),
        summary="Tokens and steps applied for a session",
        description="The usage of every training run and sampler the session created, "
        "per entry, in total and per base model.",
    )
    async def session_usage(session_id: str) -> Response:
        return reply(UsageBook(runtime.store).session(session_id))
