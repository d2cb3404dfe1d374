"""Atomic file writes, Hugging Face model directories, and checkpoint archives.

Every file is written to a temporary sibling, flushed, fsync'ed and moved into place with
``os.replace``, so a crash never leaves a half-written file under the final name. Directories
are built under a temporary sibling name and renamed into place as a whole
(:func:`atomic_directory`).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from tinkex_server._engine.errors import EngineInputError

__all__ = [
    "atomic_directory",
    "atomic_write_bytes",
    "atomic_write_json",
    "load_hf_state_dict",
    "make_archive",
    "read_json",
    "read_safetensors",
    "write_safetensors",
]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + ``os.replace``)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Tensor],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write float tensors as a safetensors file, atomically."""
    clean = {name: t.detach().contiguous().clone() for name, t in tensors.items()}
    atomic_write_bytes(path, st_save(clean, metadata=dict(metadata) if metadata else None))


def read_safetensors(path: str | os.PathLike[str], *, field: str) -> dict[str, Tensor]:
    """Read a safetensors file; a missing or corrupt file is an :class:`EngineInputError`."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise EngineInputError(field, f"{file} does not exist", "check the path") from None
    try:
        return dict(st_load(data))
    except Exception as exc:
        raise EngineInputError(field, f"{file} is not a valid safetensors file: {exc}") from None


def read_json(path: str | os.PathLike[str], *, field: str) -> dict[str, Any]:
    """Read a JSON object; a missing or malformed file is an :class:`EngineInputError`."""
    file = Path(path)
    try:
        obj = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EngineInputError(field, f"{file} does not exist", "check the path") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise EngineInputError(field, f"{file} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EngineInputError(field, f"{file} must hold a JSON object")
    return obj


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a directory under a temporary sibling name, then move it to ``path``.

    Yields the temporary directory. On success an existing ``path`` is replaced (moved
    aside, then deleted); on error the temporary directory is removed and ``path`` is left
    as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        yield tmp
        old: Path | None = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def make_archive(
    directory: str | os.PathLike[str],
    archive: str | os.PathLike[str],
    *,
    compress: bool = True,
) -> Path:
    """Pack the files of ``directory`` into a tar (gzip unless ``compress=False``) at
    ``archive``, atomically. Members are relative (``adapter_model.safetensors``...),
    sorted, with zeroed owners and mtimes (tar members and the gzip header), so equal inputs give equal archives."""
    src = Path(directory)
    if not src.is_dir():
        raise EngineInputError(
            "directory", f"{src} is not a directory", "save the checkpoint first"
        )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for file in sorted(p for p in src.rglob("*") if p.is_file()):
            rel = file.relative_to(src).as_posix()
            info = tarfile.TarInfo(rel)
            data = file.read_bytes()
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    if compress:
        # mtime=0: the gzip header carries no time, so equal inputs give equal bytes.
        data = gzip.compress(data, mtime=0)
    out = Path(archive)
    atomic_write_bytes(out, data)
    return out


_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def load_hf_state_dict(directory: Path) -> dict[str, Tensor]:
    """Every tensor of a Hugging Face model directory, as float32.

    Reads ``model.safetensors`` or the shards named by ``model.safetensors.index.json``.
    """
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    files: list[Path]
    if single.is_file():
        files = [single]
    elif index.is_file():
        weight_map = read_json(index, field="model.safetensors.index.json").get("weight_map", {})
        if not isinstance(weight_map, dict) or not weight_map:
            raise EngineInputError(
                "model.safetensors.index.json", "has no weight_map", "re-save the model"
            )
        files = [directory / name for name in sorted(set(map(str, weight_map.values())))]
    else:
        raise EngineInputError(
            "base_model",
            f"{directory} holds no model.safetensors (or sharded index)",
            "save the model with safetensors (save_pretrained(..., safe_serialization=True))",
        )
    out: dict[str, Tensor] = {}
    for file in files:
        for name, tensor in read_safetensors(file, field="base_model").items():
            if name.endswith(_IGNORED_SUFFIXES):
                continue
            out[name] = tensor.to(torch.float32) if tensor.is_floating_point() else tensor
    return out
