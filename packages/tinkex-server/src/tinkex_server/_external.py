"""External weights (official SDK 0.38): ``save_weights_external`` exports a training run's
adapter in PEFT format (``adapter_model.safetensors`` + ``adapter_config.json``) as
``tinker://<run>/external_weights/<name>``; ``…/external_weights_urls`` hands out one
signed download URL per file (valid ``archive_url_ttl_s``), served by
``GET /api/v1/external_weights/<run>/<name>/<file>``.

An export is recorded under the de-duplication key ``external:<run>:<name>/`` (directory,
size, expiry); it is not one of the run's training/sampler checkpoints.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tinkex_server._checkpoints import CheckpointFiles, checkpoint_name_problem, dir_size
from tinkex_server._context import Desk, ServerParts, check_int64
from tinkex_server._generations import SaveWeightsExternalRequest, SaveWeightsExternalResponse
from tinkex_server._problems import ApiProblem, bad_request, not_found
from tinkex_server._training import TrainingService
from tinkex_server._training_jobs import OrderedJob, touch
from tinkex_types import ExternalWeightsUrlsResponse, UntypedAPIFuture, WireModel

if TYPE_CHECKING:
    from tinkex_server._engine import Engine

__all__ = ["EXTERNAL_KIND", "ExternalSaveJob", "ExternalWeightsService"]

EXTERNAL_KIND = "external_weights"


def _key(run_id: str, name: str) -> str:
    return f"external:{run_id}:{name}/"


@dataclass(kw_only=True, eq=False)
class ExternalSaveJob(OrderedJob):
    """Write the adapter (PEFT format) into the export directory."""

    files: CheckpointFiles
    name: str
    ttl_seconds: int | None
    directory: Path

    def step(self, engine: Engine) -> int:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.directory)
        engine.save_sampler_weights(self.target, self.directory)
        return engine.adapter_info(self.target).step

    def finish(self, output: int) -> WireModel:
        size = dir_size(self.directory)
        ttl = self.ttl_seconds
        key = _key(self.target, self.name)
        self.store.dedup_purge(key, older_than=float("inf"))
        self.store.dedup_put(
            key,
            response={
                "directory": self.files.relative(self.directory),
                "size_bytes": size,
                "expires_at": time.time() + ttl if ttl is not None else None,
                "step": int(output),
            },
        )
        touch(self.store, self.target)
        path = f"tinker://{self.target}/{EXTERNAL_KIND}/{self.name}"
        return SaveWeightsExternalResponse(path=path, size_bytes=size)


class ExternalWeightsService:
    """save_weights_external, external_weights_urls and the signed file downloads."""

    def __init__(self, parts: ServerParts, desk: Desk, training: TrainingService) -> None:
        self.parts = parts
        self.desk = desk
        self.training = training
        self.files = parts.files

    def save(
        self,
        req: SaveWeightsExternalRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> UntypedAPIFuture:
        with self.training.turnstile(req.model_id, req.seq_id):
            problem = checkpoint_name_problem(req.path)
            if problem is not None:
                raise bad_request("path", problem, "use a short name, e.g. 'export-1'")
            check_int64("ttl_seconds", req.ttl_seconds, minimum=1)
            if req.age_encryption_recipients:
                raise bad_request(
                    "age_encryption_recipients",
                    "encrypted exports are not supported by this server",
                    "leave age_encryption_recipients unset",
                )
            self.desk.model(req.model_id)
        job = ExternalSaveJob(
            target=req.model_id,
            seq_id=req.seq_id,
            request_type="SaveWeightsExternal",
            carrier=carrier,
            store=self.parts.store,
            restorer=self.training.restorer,
            files=self.files,
            name=req.path,
            ttl_seconds=req.ttl_seconds,
            directory=self.files.checkpoint_dir(req.model_id, EXTERNAL_KIND, req.path),
        )
        job.attributes = {"model_id": job.target, "seq_id": job.seq_id}
        return self.desk.submit(
            job, endpoint="save_weights_external", idempotency_key=idempotency_key
        )

    def _export(self, run_id: str, name: str) -> dict[str, Any]:
        _, record = self.parts.store.dedup_get(_key(run_id, name))
        expires = record.get("expires_at") if isinstance(record, dict) else None
        if not isinstance(record, dict) or (expires is not None and expires < time.time()):
            raise not_found(
                "checkpoint",
                f"tinker://{run_id}/{EXTERNAL_KIND}/{name}",
                "export it with save_weights_external",
            )
        return record

    def urls(self, run_id: str, kind: str, name: str, base_url: str) -> ExternalWeightsUrlsResponse:
        """One signed URL per exported file."""
        if kind != EXTERNAL_KIND:
            raise bad_request(
                "checkpoint_id",
                f"{kind}/{name} is not an external weights checkpoint",
                "pass the path save_weights_external returned "
                "(tinker://<run>/external_weights/<name>)",
            )
        directory = self.files.absolute(str(self._export(run_id, name)["directory"]))
        expires = int(time.time() + self.parts.config.archive_url_ttl_s)
        base = base_url if base_url.endswith("/") else base_url + "/"
        urls: dict[str, str] = {}
        files = sorted(p.name for p in directory.iterdir() if p.is_file())
        for file in files:
            sig = self.files.sign(run_id, EXTERNAL_KIND, f"{name}/{file}", expires)
            where = "/".join(quote(p, safe="") for p in (run_id, name, file))
            urls[file] = f"{base}api/v1/external_weights/{where}?expires={expires}&signature={sig}"
        return ExternalWeightsUrlsResponse(urls=urls, expires=datetime.fromtimestamp(expires, UTC))

    def file(self, run_id: str, name: str, file: str, expires: int, signature: str) -> Path:
        """The exported file behind a signed URL (403 bad or expired link, 404 gone)."""
        if not self.files.verify(run_id, EXTERNAL_KIND, f"{name}/{file}", expires, signature):
            raise ApiProblem(403, "the download link is invalid or has expired; ask for a new one")
        directory = self.files.absolute(str(self._export(run_id, name)["directory"]))
        path = directory / file
        if "/" in file or file.startswith(".") or not path.is_file():
            raise not_found("file", file)
        return path
