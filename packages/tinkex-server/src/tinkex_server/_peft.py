"""PEFT adapters in and merged models out, over HTTP.

* ``POST /api/v1/import_peft_adapter`` (:class:`ImportPeftRequest`): the files of an outside
  PEFT LoRA adapter (``adapter_config.json`` as JSON, ``adapter_model.safetensors`` as
  base64) become a new training run ``<session_id>:train:<model_seq_id>`` (an ordered create,
  like ``create_model``: the run's seq 0). The config is checked before anything is stored
  (400 naming the ``adapter_config.json`` key of an unsupported feature); the files are kept
  under ``<data_dir>/peft_imports/`` so the run comes back after a restart (from them, or
  from its newest training checkpoint). The future's result is ``{"model_id"}``.
* ``POST /api/v1/export_merged`` (:class:`ExportMergedRequest`): a checkpoint (``tinker://``
  training state or sampler weights) merged into its base model as a Hugging Face model
  directory, manifest-signed and archived (tar); the future's result is
  ``{"url", "expires"}``, a signed URL served by ``GET /api/v1/merged_exports/<id>``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import shutil
import tarfile
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from tinkex_server._checkpoints import safe_segment
from tinkex_server._context import check_int64, user_error
from tinkex_server._jobs import Job
from tinkex_server._problems import ApiProblem, bad_request
from tinkex_server._store import Store
from tinkex_server._training import MAX_LORA_RANK, TrainingService
from tinkex_types import CheckpointArchiveUrlResponse, CreateModelResponse, WireModel
from tinkex_types.manifest import write_manifest

if TYPE_CHECKING:
    from tinkex_server._engine import Engine

__all__ = [
    "MAX_ADAPTER_BYTES",
    "ExportMergedRequest",
    "ImportPeftRequest",
    "PeftService",
    "peft_settings",
]

#: Largest ``adapter_model.safetensors`` accepted by an import (decoded bytes).
MAX_ADAPTER_BYTES = 256 * 1024 * 1024
_CONFIG_FILE = "adapter_config.json"
_WEIGHTS_FILE = "adapter_model.safetensors"
_EXPORT_KIND = "merged"


class ImportPeftRequest(WireModel):
    """``POST /api/v1/import_peft_adapter``: an outside PEFT adapter as a new training run."""

    session_id: str
    model_seq_id: int
    adapter_config: dict[str, Any]
    adapter_model: str = Field(description="adapter_model.safetensors, base64")
    base_model: str | None = None
    seed: int | None = None
    user_metadata: dict[str, Any] | None = None


class ExportMergedRequest(WireModel):
    """``POST /api/v1/export_merged``: a checkpoint merged into its base model."""

    path: str
    base_model: str | None = None


def peft_settings(info: Any, peft_dir: str) -> dict[str, Any]:
    """The stored LoRA settings of an imported run (see ``_restore.engine_lora``)."""
    return {
        "rank": info.rank,
        "seed": info.seed,
        "alpha": info.alpha,
        "train_attn": info.train_attn,
        "train_mlp": info.train_mlp,
        "train_unembed": info.train_unembed,
        "target_modules": list(info.target_modules),
        "peft_dir": peft_dir,
    }


@dataclass(kw_only=True, eq=False)
class ImportPeftJob(Job):
    """Register the imported adapter; the run row becomes ``ready`` with its settings."""

    store: Store
    base_model: str
    directory: Path
    relative: str
    seed: int | None

    def execute(self, engine: Engine) -> Any:
        return engine.import_peft_adapter(
            self.target, self.directory, base_model=self.base_model, seed=self.seed
        )

    def finish(self, output: Any) -> WireModel:
        settings = peft_settings(output, self.relative)
        self.store.update_model(self.target, status="ready", lora_config=settings)
        return CreateModelResponse(model_id=self.target)

    def on_failure(self, exc: BaseException) -> None:
        self.store.update_model(self.target, status="failed", error=str(exc))
        shutil.rmtree(self.directory, ignore_errors=True)


def _archive(source: Path, target: Path) -> None:
    """A tar of every file of ``source`` (flat), written atomically to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w") as tar:
            for path in sorted(source.iterdir()):
                info = tar.gettarinfo(str(path), arcname=path.name)
                info.mode, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, "", ""
                with path.open("rb") as src:
                    tar.addfile(info, src)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass(kw_only=True, eq=False)
class ExportMergedJob(Job):
    """Merge a checkpoint into its base model and archive the directory."""

    checkpoint: Path
    base_model: str | None
    directory: Path
    archive: Path
    url: str
    expires: int

    def execute(self, engine: Engine) -> Any:
        try:
            engine.export_merged_checkpoint(
                self.checkpoint, self.directory, base_model=self.base_model
            )
            write_manifest(self.directory)
            _archive(self.directory, self.archive)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
        return None

    def finish(self, output: Any) -> WireModel:
        return CheckpointArchiveUrlResponse(
            url=self.url, expires=datetime.fromtimestamp(self.expires, UTC)
        )


def _decode_weights(text: str) -> bytes:
    if len(text) > MAX_ADAPTER_BYTES * 4 // 3 + 4:
        raise ApiProblem(
            413,
            f"adapter_model: {_WEIGHTS_FILE} is over {MAX_ADAPTER_BYTES} bytes",
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(
            "adapter_model", "is not valid base64", f"send {_WEIGHTS_FILE} base64-encoded"
        ) from None


class PeftService:
    """Imports of PEFT adapters and merged exports (shares the training service's desk)."""

    def __init__(self, training: TrainingService) -> None:
        self.training = training
        self.parts = training.parts
        self.desk = training.desk
        self.store = training.store
        self.files = training.files
        self.import_root = self.parts.config.data_dir / "peft_imports"
        self.export_root = self.parts.config.data_dir / "merged_exports"

    def _check_config(self, cfg: Mapping[str, Any], base_model: str | None) -> str:
        from tinkex_server._engine import EngineInputError
        from tinkex_server._engine.peft_io import parse_peft_config

        try:
            parsed = parse_peft_config(cfg)
        except EngineInputError as exc:
            raise user_error(exc) from None
        if parsed.rank > MAX_LORA_RANK:
            raise bad_request(
                f"{_CONFIG_FILE}:r", f"{parsed.rank} is too large", f"use at most {MAX_LORA_RANK}"
            )
        name = base_model or parsed.base_model
        if not name:
            raise bad_request(
                "base_model",
                f"{_CONFIG_FILE} names no base_model_name_or_path",
                "pass base_model (a built-in model name or a local model directory)",
            )
        field = "base_model" if base_model else f"{_CONFIG_FILE}:base_model_name_or_path"
        self.desk.base(name, field)
        return name

    def import_adapter(
        self,
        req: ImportPeftRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> Any:
        dedup = f"create_model:{req.session_id}:{req.model_seq_id}"
        earlier = self.desk.existing(dedup)
        if earlier is not None:
            return earlier
        check_int64("model_seq_id", req.model_seq_id, minimum=0)
        check_int64("seed", req.seed)
        self.desk.live_session(req.session_id)
        base_model = self._check_config(req.adapter_config, req.base_model)
        weights = _decode_weights(req.adapter_model)
        model_id = f"{req.session_id}:train:{req.model_seq_id}"
        if self.store.get_model(model_id) is not None:
            raise bad_request(
                "model_seq_id",
                f"model {model_id!r} already exists",
                "use the next model_seq_id of this session",
            )
        directory = self.import_root / safe_segment(model_id)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        (directory / _CONFIG_FILE).write_text(json.dumps(req.adapter_config), encoding="utf-8")
        (directory / _WEIGHTS_FILE).write_bytes(weights)
        relative = self.files.relative(directory)
        self.store.insert_model(
            model_id,
            session_id=req.session_id,
            model_seq_id=req.model_seq_id,
            base_model=base_model,
            lora_config={"rank": req.adapter_config["r"], "seed": req.seed, "peft_dir": relative},
            user_metadata=req.user_metadata,
        )
        job = ImportPeftJob(
            target=model_id,
            seq_id=None,
            request_type="CreateModel",
            carrier=carrier,
            attributes={"model_id": model_id, "base_model": base_model},
            store=self.store,
            base_model=base_model,
            directory=directory,
            relative=relative,
            seed=req.seed,
        )
        return self.desk.submit(
            job,
            endpoint="import_peft_adapter",
            idempotency_key=idempotency_key,
            session_id=req.session_id,
            dedup_keys=(dedup,),
        )

    def export_merged(
        self,
        req: ExportMergedRequest,
        base_url: str,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> Any:
        path = self.desk.parse_path(req.path, "path", prefer="weights")
        ckpt = self.desk.checkpoint_at(path)
        if req.base_model is not None:
            self.desk.base(req.base_model)
        self._prune_exports()
        export_id = uuid.uuid4().hex
        expires = int(time.time() + self.parts.config.archive_url_ttl_s)
        sig = self.files.sign(_EXPORT_KIND, _EXPORT_KIND, export_id, expires)
        base = base_url if base_url.endswith("/") else base_url + "/"
        url = f"{base}api/v1/merged_exports/{export_id}?expires={expires}&signature={sig}"
        job = ExportMergedJob(
            target=f"export:{export_id}",
            seq_id=None,
            request_type="ExportMerged",
            carrier=carrier,
            attributes={"checkpoint": req.path},
            checkpoint=self.files.absolute(ckpt.directory),
            base_model=req.base_model,
            directory=self.export_root / f".{export_id}.dir",
            archive=self.export_root / f"{export_id}.tar",
            url=url,
            expires=expires,
        )
        return self.desk.submit(job, endpoint="export_merged", idempotency_key=idempotency_key)

    def _prune_exports(self) -> None:
        """Delete merged-export archives whose download links expired."""
        cutoff = time.time() - self.parts.config.archive_url_ttl_s - 60
        if not self.export_root.is_dir():
            return
        for path in self.export_root.iterdir():
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink()

    def export_file(self, export_id: str, expires: int, signature: str) -> Path:
        """The archive behind a signed merged-export URL (403 bad or expired link, 404)."""
        if not self.files.verify(_EXPORT_KIND, _EXPORT_KIND, export_id, expires, signature):
            raise ApiProblem(403, "signature: the download link is invalid or expired")
        path = self.export_root / f"{safe_segment(export_id)}.tar"
        if not path.is_file():
            raise ApiProblem(404, f"merged export {export_id!r} does not exist (any more)")
        return path
