"""The REST side: capabilities, training runs, checkpoints (list, delete, publish, TTL),
weights info and signed checkpoint archives (protocol.md §2.11)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from tinkex_server._catalog import builtin_descs, describe_base_model
from tinkex_server._checkpoints import issued_path
from tinkex_server._context import Desk, ServerParts
from tinkex_server._integrity import CheckpointCorruptError, verify_checkpoint_dir
from tinkex_server._problems import ApiProblem, bad_request, not_found
from tinkex_server._sessions import check_scope
from tinkex_server._store import CheckpointRow, ModelRow
from tinkex_types import (
    Checkpoint,
    CheckpointsListResponse,
    Cursor,
    GetServerCapabilitiesResponse,
    SetCheckpointTtlRequest,
    SupportedModel,
    TrainingRun,
    TrainingRunsResponse,
    WeightsInfoRequest,
    WeightsInfoResponse,
)
from tinkex_types._responses import EmptyResponse

__all__ = ["RestService"]

_KINDS = ("weights", "sampler_weights")
#: A corrupt stored checkpoint stays corrupt: retrying the request cannot help.
_NO_RETRY = {"x-should-retry": "false"}


def _time(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def checkpoint_model(ckpt: CheckpointRow, style: str = "standard") -> Checkpoint:
    """The wire description of a stored checkpoint (``tinker_path`` in ``style``)."""
    return Checkpoint(
        checkpoint_id=f"{ckpt.kind}/{ckpt.name}",
        checkpoint_type="training" if ckpt.kind == "weights" else "sampler",
        time=datetime.fromtimestamp(ckpt.created_at, UTC),
        tinker_path=issued_path(style, ckpt.training_run_id, ckpt.kind, ckpt.name),
        size_bytes=ckpt.size_bytes,
        public=ckpt.public,
        user_metadata=ckpt.user_metadata,
        expires_at=_time(ckpt.expires_at),
    )


class RestService:
    """The REST endpoints' operations (see the module docstring)."""

    def __init__(self, parts: ServerParts, desk: Desk) -> None:
        self.parts = parts
        self.config = parts.config
        self.desk = desk
        self.store = parts.store
        self.files = parts.files

    def capabilities(self) -> GetServerCapabilitiesResponse:
        descs = list(builtin_descs())
        known = {d.name for d in descs}
        for row in self.store.all_models():
            if row.base_model not in known:
                desc = describe_base_model(row.base_model)
                if desc is not None:
                    descs.append(desc)
                    known.add(row.base_model)
        models: list[SupportedModel] = []
        seen: set[str] = set()
        for desc in descs:
            if desc.name in seen:
                continue
            seen.add(desc.name)
            models.append(
                SupportedModel(
                    model_name=desc.name,
                    model_id=desc.name,
                    arch=desc.arch,
                    max_context_length=desc.context_length,
                    trainable=True,
                    sampleable=True,
                )
            )
        return GetServerCapabilitiesResponse(supported_models=models)

    def weights_info(self, req: WeightsInfoRequest) -> WeightsInfoResponse:
        tp = self.desk.parse_path(req.tinker_path, "tinker_path")
        self.desk.checkpoint_at(tp)
        run = self.desk.run_of(tp)
        lc = run.lora_config
        return WeightsInfoResponse(
            base_model=run.base_model,
            is_lora=True,
            lora_rank=int(lc["rank"]),
            train_unembed=bool(lc.get("train_unembed", True)),
            train_mlp=bool(lc.get("train_mlp", True)),
            train_attn=bool(lc.get("train_attn", True)),
        )

    # -- training runs ----------------------------------------------------------------------
    def training_run(self, row: ModelRow) -> TrainingRun:
        last = self.store.latest_checkpoint(row.model_id, "weights")
        last_s = self.store.latest_checkpoint(row.model_id, "sampler_weights")
        return TrainingRun(
            training_run_id=row.model_id,
            base_model=row.base_model,
            model_owner=self.config.model_owner,
            is_lora=True,
            corrupted=row.corrupted,
            lora_rank=int(row.lora_config["rank"]),
            last_request_time=datetime.fromtimestamp(row.last_request_time, UTC),
            last_checkpoint=checkpoint_model(last, self.config.path_style)
            if last is not None
            else None,
            last_sampler_checkpoint=checkpoint_model(last_s, self.config.path_style)
            if last_s is not None
            else None,
            user_metadata=(
                {str(k): str(v) for k, v in row.user_metadata.items()}
                if row.user_metadata
                else None
            ),
        )

    def list_training_runs(
        self, limit: int, offset: int, access_scope: str
    ) -> TrainingRunsResponse:
        check_scope(access_scope)
        rows, total = self.store.list_models(limit=limit, offset=offset)
        return TrainingRunsResponse(
            training_runs=[self.training_run(r) for r in rows],
            cursor=Cursor(offset=offset, limit=limit, total_count=total),
        )

    def get_training_run(self, run_id: str, access_scope: str) -> TrainingRun:
        check_scope(access_scope)
        row = self.store.get_model(run_id)
        if row is None:
            raise not_found("training run", run_id)
        return self.training_run(row)

    # -- checkpoints ------------------------------------------------------------------------
    def list_run_checkpoints(self, run_id: str) -> CheckpointsListResponse:
        if self.store.get_model(run_id) is None:
            raise not_found("training run", run_id)
        rows, total = self.store.list_checkpoints(run_id)
        return CheckpointsListResponse(
            checkpoints=[checkpoint_model(c, self.config.path_style) for c in rows],
            cursor=Cursor(offset=0, limit=total, total_count=total),
        )

    def list_user_checkpoints(self, limit: int, offset: int) -> CheckpointsListResponse:
        rows, total = self.store.list_checkpoints(limit=limit, offset=offset)
        return CheckpointsListResponse(
            checkpoints=[checkpoint_model(c, self.config.path_style) for c in rows],
            cursor=Cursor(offset=offset, limit=limit, total_count=total),
        )

    def checkpoint(self, run_id: str, kind: str, name: str) -> CheckpointRow:
        """A checkpoint by its REST coordinates (404)."""
        if kind not in _KINDS:
            raise not_found(
                "checkpoint kind",
                kind,
                "checkpoint ids look like weights/<name> or sampler_weights/<name>",
            )
        ckpt = self.store.get_checkpoint(run_id, kind, name)
        if ckpt is None:
            raise not_found("checkpoint", f"tinker://{run_id}/{kind}/{name}")
        return ckpt

    def delete_checkpoint(self, run_id: str, kind: str, name: str) -> EmptyResponse:
        self.checkpoint(run_id, kind, name)
        self.store.delete_checkpoint(run_id, kind, name)
        self.files.remove(run_id, kind, name)
        return EmptyResponse()

    def publish(self, run_id: str, kind: str, name: str, public: bool) -> EmptyResponse:
        self.checkpoint(run_id, kind, name)
        self.store.set_checkpoint_public(run_id, kind, name, public)
        return EmptyResponse()

    def set_ttl(self, run_id: str, kind: str, name: str, raw: Any) -> EmptyResponse:
        """Set or (``null``) remove a checkpoint's expiry; ``raw`` is the decoded body."""
        if not isinstance(raw, dict):
            raise bad_request("body", 'must be a JSON object like {"ttl_seconds": 3600}')
        ttl = raw.get("ttl_seconds")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0):
            raise bad_request(
                "ttl_seconds",
                f"must be a positive integer or null, got {ttl!r}",
                "use null to remove the expiry",
            )
        try:
            req = SetCheckpointTtlRequest(ttl_seconds=ttl)
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"] if exc.errors() else "is invalid"
            raise bad_request(
                "ttl_seconds", problem, "use a positive integer of seconds, or null"
            ) from None
        self.checkpoint(run_id, kind, name)
        expires = None if req.ttl_seconds is None else time.time() + req.ttl_seconds
        self.store.set_checkpoint_expiry(run_id, kind, name, expires)
        return EmptyResponse()

    # -- archives ---------------------------------------------------------------------------
    async def archive_redirect(
        self, run_id: str, kind: str, name: str, base_url: str
    ) -> tuple[str, str]:
        """``(location, expires HTTP-date)`` of a signed archive download URL; a checkpoint
        that does not match its manifest gets a 500 (never a link to a corrupt archive)."""
        ckpt = self.checkpoint(run_id, kind, name)
        try:
            await asyncio.to_thread(verify_checkpoint_dir, self.files.absolute(ckpt.directory))
        except CheckpointCorruptError as exc:
            raise ApiProblem(500, str(exc), headers=_NO_RETRY) from None
        expires = int(time.time() + self.config.archive_url_ttl_s)
        sig = self.files.sign(run_id, kind, name, expires)
        path = "/".join(quote(part, safe="") for part in (run_id, kind, name))
        base = base_url if base_url.endswith("/") else base_url + "/"
        location = f"{base}api/v1/checkpoint_archives/{path}?expires={expires}&signature={sig}"
        return location, formatdate(expires, usegmt=True)

    async def archive_file(
        self, run_id: str, kind: str, name: str, expires: int, signature: str
    ) -> Path:
        """The archive file behind a signed URL (403 bad or expired link, 404 gone)."""
        if not self.files.verify(run_id, kind, name, expires, signature):
            raise ApiProblem(403, "the download link is invalid or has expired; ask for a new one")
        ckpt = self.checkpoint(run_id, kind, name)
        source = self.files.absolute(ckpt.directory)
        try:
            return await asyncio.to_thread(self.files.build_archive, source, run_id, kind, name)
        except FileNotFoundError as exc:
            raise ApiProblem(404, f"checkpoint {ckpt.tinker_path} is incomplete: {exc}") from None
        except CheckpointCorruptError as exc:
            # The server's fault (5xx), named relative to the checkpoint: no absolute path.
            raise ApiProblem(500, str(exc), headers=_NO_RETRY) from None
