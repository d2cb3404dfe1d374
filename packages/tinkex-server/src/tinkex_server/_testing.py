"""Test support (a seam outside the production classes): the opt-in ``/api/v1/_test/...``
routes, mounted only when ``ServerConfig.enable_test_routes`` is set.

* ``POST /api/v1/_test/training_runs/{run_id}/corrupted`` ``{"corrupted": bool}``: mark a
  run corrupted (or not);
* ``GET /api/v1/_test/applied?target=``: the applied-steps log;
* ``GET /api/v1/_test/telemetry``: the stored telemetry batches;
* ``GET /api/v1/_test/step_times?target=``: the recent step times the wait estimate of
  ``try_again`` answers averages (docs/queue.md).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tinkex_server._problems import not_found
from tinkex_server._routes import V1, errors
from tinkex_server._runtime import Runtime
from tinkex_server._wire import json_bytes, raw_json

__all__ = ["add_test_routes"]


def _json(body: Any) -> Response:
    return Response(json_bytes(body), media_type="application/json")


def add_test_routes(router: APIRouter, runtime: Runtime) -> None:
    """The ``_test`` routes of ``runtime`` (see the module docstring)."""
    docs: dict[str, Any] = {"tags": ["test"], "responses": errors(400, 404)}

    @router.post(f"{V1}/_test/training_runs/{{run_id}}/corrupted", **docs)
    async def test_set_corrupted(run_id: str, request: Request) -> Response:
        raw = await raw_json(request)
        corrupted = bool(raw.get("corrupted", True)) if isinstance(raw, dict) else True
        if not runtime.store.set_corrupted(run_id, corrupted):
            raise not_found("training run", run_id)
        return _json({"training_run_id": run_id, "corrupted": corrupted})

    @router.get(f"{V1}/_test/applied", **docs)
    async def test_applied(target: str | None = None) -> Response:
        steps = runtime.store.applied_steps(target)
        fields = ("target", "seq_id", "request_type", "request_id", "outcome")
        return _json({"steps": [{f: getattr(s, f) for f in fields} for s in steps]})

    @router.get(f"{V1}/_test/held_polls", **docs)
    async def test_held_polls() -> Response:
        hub = getattr(runtime, "hub", None)
        return _json({"held": hub.held if hub is not None else 0})

    @router.get(f"{V1}/_test/telemetry", **docs)
    async def test_telemetry() -> Response:
        return _json({"batches": [r.body for r in runtime.store.telemetry()]})

    @router.get(f"{V1}/_test/step_times", **docs)
    async def test_step_times(target: str) -> Response:
        return _json({"target": target, "step_times": runtime.scheduler.step_times(target)})
