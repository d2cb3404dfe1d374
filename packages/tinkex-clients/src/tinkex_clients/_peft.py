"""PEFT adapters in, merged models out (tinkex servers: ``tinkex serve`` and ``local://``).

* :func:`import_peft` -- the files of a PEFT LoRA adapter directory
  (``adapter_config.json`` + ``adapter_model.safetensors``) are sent to
  ``POST /api/v1/import_peft_adapter`` (JSON, the weights base64, at most
  :data:`MAX_ADAPTER_BYTES`) and become a new training run (its seq 0); the server refuses an
  unsupported adapter with a 400 naming the ``adapter_config.json`` key.
* :func:`export_merged` -- ``POST /api/v1/export_merged`` builds a merged (base + LoRA)
  Hugging Face model directory from a checkpoint; its archive is downloaded and extracted
  with the checkpoint download's safety and manifest checks into ``out_dir``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinkex_clients._future import APIFuture
from tinkex_clients._session import Session
from tinkex_http import DEFAULT_MAX_ARCHIVE_BYTES, download_archive, extract_archive_safely
from tinkex_types import (
    APIStatusError,
    CheckpointArchiveUrlResponse,
    CreateModelResponse,
    TinkexValidationError,
)

if TYPE_CHECKING:
    from tinkex_clients._sampling import SamplingClient
    from tinkex_clients._training import TrainingClient

__all__ = [
    "MAX_ADAPTER_BYTES",
    "PeftRestMixin",
    "PeftServiceMixin",
    "export_merged",
    "import_peft",
    "read_peft_dir",
]

#: Largest ``adapter_model.safetensors`` an import sends.
MAX_ADAPTER_BYTES = 256 * 1024 * 1024
_CONFIG = "adapter_config.json"
_WEIGHTS = "adapter_model.safetensors"


def read_peft_dir(path: Any) -> tuple[dict[str, Any], bytes]:
    """``(adapter_config, adapter_model bytes)`` of a PEFT adapter directory; a
    :class:`TinkexValidationError` naming the file when one is missing or unreadable."""
    if not isinstance(path, str | os.PathLike):
        raise TinkexValidationError("path", f"must be a directory path, got {path!r}")
    directory = Path(path)
    if not directory.is_dir():
        raise TinkexValidationError(
            "path", f"{str(directory)!r} is not a directory", "pass a PEFT adapter directory"
        )
    config_file, weights_file = directory / _CONFIG, directory / _WEIGHTS
    if not config_file.is_file():
        raise TinkexValidationError(
            _CONFIG, f"{str(directory)!r} has no {_CONFIG}", "pass a PEFT adapter directory"
        )
    if not weights_file.is_file():
        fix = (
            "re-save the adapter with save_pretrained(..., safe_serialization=True)"
            if (directory / "adapter_model.bin").is_file()
            else "pass a PEFT adapter directory"
        )
        raise TinkexValidationError(_WEIGHTS, f"{str(directory)!r} has no {_WEIGHTS}", fix)
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TinkexValidationError(_CONFIG, f"cannot be read: {exc}", "fix the file") from None
    if not isinstance(config, dict):
        raise TinkexValidationError(_CONFIG, "is not a JSON object", "fix the file")
    size = weights_file.stat().st_size
    if size > MAX_ADAPTER_BYTES:
        raise TinkexValidationError(
            _WEIGHTS, f"is {size} bytes, over the {MAX_ADAPTER_BYTES}-byte import limit"
        )
    return config, weights_file.read_bytes()


def check_base_model(base_model: Any, config: dict[str, Any]) -> str:
    """The base model of an import: ``base_model`` or the config's
    ``base_model_name_or_path`` (the server checks it is one it serves)."""
    if base_model is not None and (not isinstance(base_model, str) or not base_model.strip()):
        raise TinkexValidationError("base_model", f"must be a model name, got {base_model!r}")
    name = base_model or config.get("base_model_name_or_path")
    if not isinstance(name, str) or not name:
        raise TinkexValidationError(
            "base_model",
            f"{_CONFIG} names no base_model_name_or_path",
            "pass base_model (a model the server supports)",
        )
    return name


async def import_peft(
    session: Session,
    path: str | os.PathLike[str],
    *,
    base_model: str | None,
    seed: int | None,
    user_metadata: dict[str, str] | None,
) -> TrainingClient:
    """A new training run holding the adapter of the PEFT directory ``path``."""
    from tinkex_clients._training import TrainingClient

    config, weights = await asyncio.to_thread(read_peft_dir, path)
    name = check_base_model(base_model, config)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TinkexValidationError("seed", f"must be an int or None, got {seed!r}")
    model_seq_id = session.next_model_seq_id()
    body = {
        "session_id": session.session_id or "",
        "model_seq_id": model_seq_id,
        "adapter_config": config,
        "adapter_model": base64.b64encode(weights).decode("ascii"),
        "base_model": base_model,
        "seed": seed,
        "user_metadata": user_metadata,
    }
    with session.span("create_training_client_from_peft", base_model=name):
        started = time.monotonic()
        try:
            submitted = await session.post(
                "/api/v1/import_peft_adapter", body, retries=False, request_type="CreateModel"
            )
        except APIStatusError as exc:
            if exc.status_code != 413:
                raise
            raise TinkexValidationError(
                _WEIGHTS,
                f"is {len(weights)} bytes: the import request (base64) is over the server's "
                f"body limit ({exc})",
                "start the server with a larger body limit (tinkex serve --max-body-mib)",
            ) from None
        response = await session.resolve(
            submitted, CreateModelResponse, request_type="CreateModel", started=started
        )
    return TrainingClient(
        session, model_id=response.model_id, model_seq_id=model_seq_id, base_model=name
    )


async def export_merged(
    session: Session,
    tinker_path: str,
    out_dir: str | os.PathLike[str],
    *,
    base_model: str | None,
    force: bool = False,
    max_bytes: int | None = DEFAULT_MAX_ARCHIVE_BYTES,
) -> Path:
    """Merge the checkpoint ``tinker_path`` into its base model on the server and extract
    the Hugging Face model directory into ``out_dir`` (refused when it exists, unless
    ``force``). Returns ``out_dir``."""
    dest = Path(out_dir)
    with session.span("rest.export_merged", checkpoint=tinker_path):
        started = time.monotonic()
        submitted = await session.post(
            "/api/v1/export_merged", {"path": tinker_path, "base_model": base_model}
        )
        target = await session.resolve(
            submitted, CheckpointArchiveUrlResponse, request_type="ExportMerged", started=started
        )
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tinkex_merged_", suffix=".tar", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            await download_archive(session.http, target.url, tmp, max_bytes=max_bytes)
            return await asyncio.to_thread(
                extract_archive_safely, tmp, dest, overwrite=force, max_total_bytes=max_bytes
            )
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()  # noqa: ASYNC240


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TinkexValidationError("user_metadata", f"must be a dict of str to str, got {value!r}")
    return dict(value)


class PeftServiceMixin:
    """:class:`~tinkex_clients.ServiceClient`'s PEFT imports (tinkex servers only)."""

    _session: Session

    def _peft_coro(
        self, path: Any, base_model: Any, seed: Any, user_metadata: Any
    ) -> Coroutine[Any, Any, TrainingClient]:
        self._session.check_open()
        metadata = _metadata(user_metadata)
        return import_peft(
            self._session, path, base_model=base_model, seed=seed, user_metadata=metadata
        )

    def create_training_client_from_peft(
        self,
        path: str | os.PathLike[str],
        *,
        base_model: str | None = None,
        seed: int | None = None,
        user_metadata: dict[str, str] | None = None,
    ) -> TrainingClient:
        """A new training run initialised from an outside PEFT LoRA adapter directory
        (``adapter_config.json`` + ``adapter_model.safetensors``); ``base_model`` defaults to
        its ``base_model_name_or_path``. An unsupported adapter is refused naming the
        ``adapter_config.json`` key. The optimizer starts fresh."""
        return self._session.call(self._peft_coro(path, base_model, seed, user_metadata))

    async def create_training_client_from_peft_async(
        self,
        path: str | os.PathLike[str],
        *,
        base_model: str | None = None,
        seed: int | None = None,
        user_metadata: dict[str, str] | None = None,
    ) -> TrainingClient:
        return await self._session.bridge(self._peft_coro(path, base_model, seed, user_metadata))

    async def _peft_sampler(self, path: Any, base_model: Any) -> SamplingClient:
        client = await self._peft_coro(path, base_model, None, None)
        return await client.save_weights_and_get_sampling_client_async()

    def create_sampling_client_from_peft(
        self, path: str | os.PathLike[str], *, base_model: str | None = None
    ) -> SamplingClient:
        """A SamplingClient serving an outside PEFT LoRA adapter (imported as a training run,
        then snapshotted as sampler weights)."""
        self._session.check_open()
        return self._session.call(self._peft_sampler(path, base_model))

    async def create_sampling_client_from_peft_async(
        self, path: str | os.PathLike[str], *, base_model: str | None = None
    ) -> SamplingClient:
        self._session.check_open()
        return await self._session.bridge(self._peft_sampler(path, base_model))


class PeftRestMixin:
    """:class:`~tinkex_clients.RestClient`'s merged export (tinkex servers only)."""

    _session: Session

    def _merged_coro(
        self, tinker_path: Any, out_dir: Any, base_model: Any, force: Any
    ) -> Coroutine[Any, Any, Path]:
        from tinkex_clients._validate import as_tinker_path

        self._session.check_open("RestClient")
        path = as_tinker_path(tinker_path, "tinker_path")
        if not isinstance(out_dir, str | os.PathLike):
            raise TinkexValidationError("out_dir", f"must be a directory path, got {out_dir!r}")
        dest = Path(out_dir)
        if (dest.exists() or dest.is_symlink()) and not force:
            raise TinkexValidationError(
                "out_dir", f"{str(dest)!r} already exists", "choose a new directory or force=True"
            )
        if base_model is not None and (not isinstance(base_model, str) or not base_model):
            raise TinkexValidationError("base_model", f"must be a model name, got {base_model!r}")
        return export_merged(
            self._session, str(path), out_dir, base_model=base_model, force=bool(force)
        )

    def export_merged(
        self,
        tinker_path: str,
        out_dir: str | os.PathLike[str],
        *,
        base_model: str | None = None,
        force: bool = False,
    ) -> APIFuture[Path]:
        """Merge a checkpoint's LoRA into its base model (on the server) and extract the
        Hugging Face model directory (``config.json``, ``model.safetensors``, tokenizer
        files; ``transformers.AutoModelForCausalLM.from_pretrained(out_dir)`` loads it) into
        ``out_dir``, checked against its manifest. An existing ``out_dir`` is refused unless
        ``force``. The future's value is ``out_dir``."""
        coro = self._merged_coro(tinker_path, out_dir, base_model, force)
        return self._session.run(coro, "RestClient")

    async def export_merged_async(
        self,
        tinker_path: str,
        out_dir: str | os.PathLike[str],
        *,
        base_model: str | None = None,
        force: bool = False,
    ) -> Path:
        coro = self._merged_coro(tinker_path, out_dir, base_model, force)
        return await self._session.bridge(coro, "RestClient")
