"""RestClient: training runs, checkpoints, sessions, samplers, archives (protocol.md §2.11)."""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from tinkex_clients._future import APIFuture
from tinkex_clients._peft import PeftRestMixin
from tinkex_clients._rest_server import CapabilitiesRestMixin, SessionsRestMixin, _seg
from tinkex_clients._session import Session, parse_result
from tinkex_clients._usage import UsageRestMixin
from tinkex_clients._validate import (
    as_access_scope,
    as_any_tinker_path,
    as_checkpoint_ref,
    as_non_negative_int,
    as_positive_int,
    as_tinker_path,
    as_ttl_seconds,
)
from tinkex_http import download_checkpoint_archive, resolve_archive_url
from tinkex_types import (
    CheckpointArchiveUrlResponse,
    CheckpointRef,
    CheckpointsListResponse,
    SetCheckpointTtlRequest,
    TinkerPath,
    TinkexValidationError,
    TrainingRun,
    TrainingRunsResponse,
    WeightsInfoResponse,
)

__all__ = ["RestClient"]

_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)

AccessScope = Literal["owned", "accessible"]
Progress = Callable[[int, int | None], Any]


def _run_id(value: Any, field: str = "training_run_id") -> str:
    if not isinstance(value, str) or not value or "/" in value:
        raise TinkexValidationError(
            field,
            f"must be a training run id (a model id without '/'), got {value!r}",
            "use training_client.model_id or TrainingRun.training_run_id",
        )
    return value


def _checkpoint(training_run_id: Any, checkpoint_id: Any) -> CheckpointRef:
    """Any server's checkpoint id (tinkex's: ``weights/<name>``), passed through."""
    run = _run_id(training_run_id)
    if not isinstance(checkpoint_id, str) or not checkpoint_id.strip("/"):
        raise TinkexValidationError(
            "checkpoint_id",
            f"must be a non-empty string, got {checkpoint_id!r}",
            "use the checkpoint id the server listed (tinkex: 'weights/<name>')",
        )
    return CheckpointRef(run, checkpoint_id)


def _ckpt_url(path: TinkerPath | CheckpointRef, suffix: str = "") -> str:
    checkpoint = "/".join(_seg(part) for part in path.checkpoint_id.split("/"))
    return f"/api/v1/training_runs/{_seg(path.training_run_id)}/checkpoints/{checkpoint}{suffix}"


def _tinkex_shaped(path: str) -> bool:
    try:
        TinkerPath.parse(path)
    except ValueError:
        return False
    return True


class RestClient(PeftRestMixin, UsageRestMixin, CapabilitiesRestMixin, SessionsRestMixin):
    """Read and manage training runs, checkpoints, sessions and samplers.

    Every method has a synchronous form returning an :class:`APIFuture` (use ``.result()``)
    and an ``_async`` form returning the value, as in the official SDK.
    """

    def __init__(
        self,
        session: Session | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        """``ServiceClient.create_rest_client()`` hands its session in; tinker 0.38's
        standalone form ``RestClient(base_url=..., api_key=...)`` (both default to the
        environment, as for ``ServiceClient``) opens a session of its own, ended by
        :meth:`close` or ``with``."""
        self._owns_session = session is None
        if session is None:
            from tinkex_clients._service_args import service_config

            config = service_config(
                None, {}, base_url=base_url, api_key=api_key, default_headers_overrides=None
            )
            session = Session(config)
        elif base_url is not None or api_key is not None:
            raise TinkexValidationError(
                "base_url", "is taken from the session given", "pass a session or base_url"
            )
        self._session = session

    def close(self) -> None:
        """Close the connections of a standalone client (a no-op for one made by a
        ``ServiceClient``, whose session the ``ServiceClient`` owns). Idempotent."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RestClient(base_url={self._session.config.base_url!r})"

    # -- plumbing -------------------------------------------------------------------------
    def _submit(self, coro: Coroutine[Any, Any, _T]) -> APIFuture[_T]:
        return self._session.run(coro, "RestClient")

    async def _bridge(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return await self._session.bridge(coro, "RestClient")

    def _check(self) -> None:
        self._session.check_open("RestClient")

    async def _get(
        self, op: str, path: str, result_type: type[_M], params: dict[str, Any] | None = None
    ) -> _M:
        with self._session.span(f"rest.{op}"):
            body = await self._session.get(path, params=params)
        return parse_result(body, result_type, what=op)

    async def _call(self, op: str, method: str, path: str, body: Any = None) -> None:
        session = self._session

        async def send() -> Any:
            return await session.http.request(method, path, body=body)

        with session.span(f"rest.{op}"):
            await session.with_retries(send)

    # -- training runs ------------------------------------------------------------------------
    def _get_training_run(
        self, training_run_id: Any, access_scope: Any
    ) -> Coroutine[Any, Any, TrainingRun]:
        self._check()
        run = _run_id(training_run_id)
        scope = as_access_scope(access_scope)
        return self._get(
            "get_training_run",
            f"/api/v1/training_runs/{_seg(run)}",
            TrainingRun,
            {"access_scope": scope},
        )

    def get_training_run(
        self, training_run_id: str, access_scope: AccessScope = "owned"
    ) -> APIFuture[TrainingRun]:
        """One training run (its base model, LoRA rank, ``corrupted`` flag, last checkpoints)."""
        return self._submit(self._get_training_run(training_run_id, access_scope))

    async def get_training_run_async(
        self, training_run_id: str, access_scope: AccessScope = "owned"
    ) -> TrainingRun:
        return await self._bridge(self._get_training_run(training_run_id, access_scope))

    def get_training_run_by_tinker_path(
        self, tinker_path: str, access_scope: AccessScope = "owned"
    ) -> APIFuture[TrainingRun]:
        run = as_checkpoint_ref(tinker_path, need_checkpoint=False).training_run_id
        return self.get_training_run(run, access_scope)

    async def get_training_run_by_tinker_path_async(
        self, tinker_path: str, access_scope: AccessScope = "owned"
    ) -> TrainingRun:
        run = as_checkpoint_ref(tinker_path, need_checkpoint=False).training_run_id
        return await self.get_training_run_async(run, access_scope)

    def _list_training_runs(
        self, limit: Any, offset: Any, access_scope: Any
    ) -> Coroutine[Any, Any, TrainingRunsResponse]:
        self._check()
        params = {
            "limit": as_positive_int(limit, "limit"),
            "offset": as_non_negative_int(offset, "offset"),
            "access_scope": as_access_scope(access_scope),
        }
        return self._get(
            "list_training_runs", "/api/v1/training_runs", TrainingRunsResponse, params
        )

    def list_training_runs(
        self, limit: int = 20, offset: int = 0, access_scope: AccessScope = "owned"
    ) -> APIFuture[TrainingRunsResponse]:
        """A page of training runs; ``response.cursor`` has ``offset``/``limit``/``total_count``."""
        return self._submit(self._list_training_runs(limit, offset, access_scope))

    async def list_training_runs_async(
        self, limit: int = 20, offset: int = 0, access_scope: AccessScope = "owned"
    ) -> TrainingRunsResponse:
        return await self._bridge(self._list_training_runs(limit, offset, access_scope))

    # -- checkpoints --------------------------------------------------------------------------
    def _list_checkpoints(
        self, training_run_id: Any
    ) -> Coroutine[Any, Any, CheckpointsListResponse]:
        self._check()
        run = _run_id(training_run_id)
        return self._get(
            "list_checkpoints",
            f"/api/v1/training_runs/{_seg(run)}/checkpoints",
            CheckpointsListResponse,
        )

    def list_checkpoints(self, training_run_id: str) -> APIFuture[CheckpointsListResponse]:
        """The checkpoints (training and sampler) of one training run."""
        return self._submit(self._list_checkpoints(training_run_id))

    async def list_checkpoints_async(self, training_run_id: str) -> CheckpointsListResponse:
        return await self._bridge(self._list_checkpoints(training_run_id))

    def _list_user_checkpoints(
        self, limit: Any, offset: Any
    ) -> Coroutine[Any, Any, CheckpointsListResponse]:
        self._check()
        params = {
            "limit": as_positive_int(limit, "limit"),
            "offset": as_non_negative_int(offset, "offset"),
        }
        return self._get(
            "list_user_checkpoints", "/api/v1/checkpoints", CheckpointsListResponse, params
        )

    def list_user_checkpoints(
        self, limit: int = 100, offset: int = 0
    ) -> APIFuture[CheckpointsListResponse]:
        """All of the caller's checkpoints across training runs, newest first."""
        return self._submit(self._list_user_checkpoints(limit, offset))

    async def list_user_checkpoints_async(
        self, limit: int = 100, offset: int = 0
    ) -> CheckpointsListResponse:
        return await self._bridge(self._list_user_checkpoints(limit, offset))

    async def _archive_url(self, path: TinkerPath | CheckpointRef) -> CheckpointArchiveUrlResponse:
        with self._session.span("rest.get_checkpoint_archive_url", checkpoint=str(path)):
            if isinstance(path, CheckpointRef) and not _tinkex_shaped(str(path)):
                return await self._other_archive_url(path)
            found = await resolve_archive_url(self._session.http, str(path))
        expires = found.expires
        return CheckpointArchiveUrlResponse.model_validate(
            {"url": found.url, "expires": expires if not isinstance(expires, str) else None}
        )

    async def _other_archive_url(self, path: CheckpointRef) -> CheckpointArchiveUrlResponse:
        """Another server's path shape: one GET of ``.../checkpoints/<checkpoint_id>/archive``."""
        body = await self._session.http.get(
            _ckpt_url(path, "/archive"), headers={"accept": "application/json"}
        )
        return parse_result(body, CheckpointArchiveUrlResponse, what="checkpoint archive URL")

    def get_checkpoint_archive_url(
        self, training_run_id: str, checkpoint_id: str
    ) -> APIFuture[CheckpointArchiveUrlResponse]:
        """A signed URL for downloading a checkpoint archive (``checkpoint_id`` =
        ``weights/<name>`` or ``sampler_weights/<name>``)."""
        self._check()
        return self._submit(self._archive_url(_checkpoint(training_run_id, checkpoint_id)))

    async def get_checkpoint_archive_url_async(
        self, training_run_id: str, checkpoint_id: str
    ) -> CheckpointArchiveUrlResponse:
        self._check()
        return await self._bridge(self._archive_url(_checkpoint(training_run_id, checkpoint_id)))

    def get_checkpoint_archive_url_from_tinker_path(
        self, tinker_path: str
    ) -> APIFuture[CheckpointArchiveUrlResponse]:
        self._check()
        return self._submit(self._archive_url(as_checkpoint_ref(tinker_path)))

    async def get_checkpoint_archive_url_from_tinker_path_async(
        self, tinker_path: str
    ) -> CheckpointArchiveUrlResponse:
        self._check()
        return await self._bridge(self._archive_url(as_checkpoint_ref(tinker_path)))

    def _manage(
        self,
        op: str,
        method: str,
        path: TinkerPath | CheckpointRef,
        suffix: str = "",
        body: Any = None,
    ) -> Coroutine[Any, Any, None]:
        self._check()
        return self._call(op, method, _ckpt_url(path, suffix), body)

    def delete_checkpoint(self, training_run_id: str, checkpoint_id: str) -> APIFuture[None]:
        """Delete one checkpoint."""
        path = _checkpoint(training_run_id, checkpoint_id)
        return self._submit(self._manage("delete_checkpoint", "DELETE", path))

    async def delete_checkpoint_async(self, training_run_id: str, checkpoint_id: str) -> None:
        path = _checkpoint(training_run_id, checkpoint_id)
        await self._bridge(self._manage("delete_checkpoint", "DELETE", path))

    def delete_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        path = as_checkpoint_ref(tinker_path)
        return self._submit(self._manage("delete_checkpoint", "DELETE", path))

    async def delete_checkpoint_from_tinker_path_async(self, tinker_path: str) -> None:
        path = as_checkpoint_ref(tinker_path)
        await self._bridge(self._manage("delete_checkpoint", "DELETE", path))

    def publish_checkpoint(self, training_run_id: str, checkpoint_id: str) -> APIFuture[None]:
        """Make a checkpoint public (owner only); publishing twice is harmless."""
        path = _checkpoint(training_run_id, checkpoint_id)
        return self._submit(self._manage("publish_checkpoint", "POST", path, "/publish", {}))

    async def publish_checkpoint_async(self, training_run_id: str, checkpoint_id: str) -> None:
        path = _checkpoint(training_run_id, checkpoint_id)
        await self._bridge(self._manage("publish_checkpoint", "POST", path, "/publish", {}))

    def publish_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        path = as_checkpoint_ref(tinker_path)
        return self._submit(self._manage("publish_checkpoint", "POST", path, "/publish", {}))

    async def publish_checkpoint_from_tinker_path_async(self, tinker_path: str) -> None:
        path = as_checkpoint_ref(tinker_path)
        await self._bridge(self._manage("publish_checkpoint", "POST", path, "/publish", {}))

    def unpublish_checkpoint(self, training_run_id: str, checkpoint_id: str) -> APIFuture[None]:
        """Make a published checkpoint private again."""
        path = _checkpoint(training_run_id, checkpoint_id)
        return self._submit(self._manage("unpublish_checkpoint", "DELETE", path, "/publish"))

    async def unpublish_checkpoint_async(self, training_run_id: str, checkpoint_id: str) -> None:
        path = _checkpoint(training_run_id, checkpoint_id)
        await self._bridge(self._manage("unpublish_checkpoint", "DELETE", path, "/publish"))

    def unpublish_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        path = as_checkpoint_ref(tinker_path)
        return self._submit(self._manage("unpublish_checkpoint", "DELETE", path, "/publish"))

    async def unpublish_checkpoint_from_tinker_path_async(self, tinker_path: str) -> None:
        path = as_checkpoint_ref(tinker_path)
        await self._bridge(self._manage("unpublish_checkpoint", "DELETE", path, "/publish"))

    def _ttl(self, tinker_path: Any, ttl_seconds: Any) -> Coroutine[Any, Any, None]:
        path = as_checkpoint_ref(tinker_path)
        body = SetCheckpointTtlRequest(ttl_seconds=as_ttl_seconds(ttl_seconds)).to_json_dict()
        return self._manage("set_checkpoint_ttl", "PUT", path, "/ttl", body)

    def set_checkpoint_ttl_from_tinker_path(
        self, tinker_path: str, ttl_seconds: int | None
    ) -> APIFuture[None]:
        """Expire a checkpoint ``ttl_seconds`` from now (``None`` removes the expiry)."""
        return self._submit(self._ttl(tinker_path, ttl_seconds))

    async def set_checkpoint_ttl_from_tinker_path_async(
        self, tinker_path: str, ttl_seconds: int | None
    ) -> None:
        await self._bridge(self._ttl(tinker_path, ttl_seconds))

    # -- weights info, archives --------------------------------------------------------------
    def _weights_info(self, tinker_path: Any) -> Coroutine[Any, Any, WeightsInfoResponse]:
        self._check()
        path = as_any_tinker_path(tinker_path, "tinker_path")
        return _post_model(
            self._session,
            "get_weights_info",
            "/api/v1/weights_info",
            {"tinker_path": str(path)},
            WeightsInfoResponse,
        )

    def get_weights_info_by_tinker_path(self, tinker_path: str) -> APIFuture[WeightsInfoResponse]:
        """Base model and LoRA settings of a checkpoint (also of public ones)."""
        return self._submit(self._weights_info(tinker_path))

    async def get_weights_info_by_tinker_path_async(self, tinker_path: str) -> WeightsInfoResponse:
        return await self._bridge(self._weights_info(tinker_path))

    async def _download(
        self, path: TinkerPath, dest: str | os.PathLike[str], progress: Progress | None, force: bool
    ) -> Path:
        with self._session.span("rest.download_checkpoint", checkpoint=str(path)):
            return await download_checkpoint_archive(
                self._session.http, str(path), dest, force=force, progress=progress
            )

    def _download_coro(
        self, tinker_path: Any, dest: Any, progress: Any, force: Any
    ) -> Coroutine[Any, Any, Path]:
        self._check()
        path = as_tinker_path(tinker_path, "tinker_path")
        if progress is not None and not callable(progress):
            raise TinkexValidationError("progress", "must be a callable(done_bytes, total_bytes)")
        if not isinstance(dest, (str, os.PathLike)):
            raise TinkexValidationError("dest", f"must be a directory path, got {dest!r}")
        return self._download(path, dest, progress, bool(force))

    def download_checkpoint(
        self,
        tinker_path: str,
        dest: str | os.PathLike[str] = ".",
        *,
        progress: Progress | None = None,
        force: bool = False,
    ) -> APIFuture[Path]:
        """Download and safely extract a checkpoint into ``dest/<run>_<kind>_<name>``.

        ``progress(done_bytes, total_bytes_or_None)`` is called as data arrives; an existing
        destination is refused unless ``force``. The future's value is the directory.
        """
        return self._submit(self._download_coro(tinker_path, dest, progress, force))

    async def download_checkpoint_async(
        self,
        tinker_path: str,
        dest: str | os.PathLike[str] = ".",
        *,
        progress: Progress | None = None,
        force: bool = False,
    ) -> Path:
        return await self._bridge(self._download_coro(tinker_path, dest, progress, force))

    def get_telemetry(self) -> Any | None:
        """The session's telemetry handle (see ``ServiceClient.get_telemetry``), or ``None``."""
        return self._session.telemetry


async def _post_model(session: Session, op: str, path: str, body: Any, result_type: type[_M]) -> _M:
    with session.span(f"rest.{op}"):
        answer = await session.post(path, body)
    return parse_result(answer, result_type, what=op)
