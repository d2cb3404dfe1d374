"""Checkpoint integrity: a per-file SHA-256 manifest (issue 17, finding 6).

The server writes ``tinkex_manifest.json`` into every checkpoint directory when it saves
it, and puts the entries of the files it archives into every archive. The client checks
an extracted archive against it, the server checks a checkpoint directory before loading or
archiving it. The format (JSON, sorted keys)::

    {"format": "tinkex-checkpoint-manifest/1", "algorithm": "sha256",
     "files": {"adapter_model.safetensors": {"size": 1234, "sha256": "<64 hex>"}, ...}}

File names are relative POSIX paths (no ``..``, not absolute). :func:`manifest_problem`
says what is wrong with a directory (``None`` when nothing is) in words that name files
only relative to the directory, never by absolute path. A directory without a manifest
(a checkpoint from an older server, an archive from another service) can still be checked
structurally: :func:`safetensors_problem` finds a truncated or malformed safetensors file
from its own header.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MANIFEST_FILE",
    "MANIFEST_FORMAT",
    "ManifestEntry",
    "build_manifest",
    "file_digest",
    "manifest_bytes",
    "manifest_problem",
    "read_manifest",
    "safetensors_problem",
    "write_manifest",
]

MANIFEST_FILE = "tinkex_manifest.json"
MANIFEST_FORMAT = "tinkex-checkpoint-manifest/1"
_BLOCK = 1024 * 1024
#: Largest manifest read (a checkpoint has a handful of files).
_MAX_MANIFEST_BYTES = 1024 * 1024
#: Largest safetensors JSON header read by :func:`safetensors_problem`.
_MAX_ST_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """Size in bytes and SHA-256 (lowercase hex) of one file."""

    size: int
    sha256: str


class _Bad(Exception):
    """A manifest that cannot be read (internal; becomes a problem string)."""


def file_digest(path: str | os.PathLike[str]) -> ManifestEntry:
    """Size and SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
            size += len(block)
    return ManifestEntry(size=size, sha256=digest.hexdigest())


def _regular_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and p.name != MANIFEST_FILE
    )


def build_manifest(
    directory: str | os.PathLike[str], names: Iterable[str] | None = None
) -> dict[str, ManifestEntry]:
    """Entries of ``names`` (default: every regular file under ``directory`` except the
    manifest itself)."""
    root = Path(directory)
    chosen = _regular_files(root) if names is None else sorted(names)
    return {name: file_digest(root / name) for name in chosen}


def manifest_bytes(entries: Mapping[str, ManifestEntry]) -> bytes:
    """The manifest file's content for ``entries``."""
    body = {
        "format": MANIFEST_FORMAT,
        "algorithm": "sha256",
        "files": {
            name: {"size": e.size, "sha256": e.sha256} for name, e in sorted(entries.items())
        },
    }
    return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()


def write_manifest(directory: str | os.PathLike[str], names: Iterable[str] | None = None) -> Path:
    """Write ``tinkex_manifest.json`` for ``directory`` atomically; returns its path."""
    root = Path(directory)
    data = manifest_bytes(build_manifest(root, names))
    target = root / MANIFEST_FILE
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST_FILE}.", suffix=".tmp", dir=root)
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
    return target


def _safe_name(name: object) -> str:
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise _Bad(f"file name {name!r} is not a relative path")
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise _Bad(f"file name {name!r} is not a plain relative path")
    return name


def _entry(name: str, raw: object) -> ManifestEntry:
    if not isinstance(raw, dict):
        raise _Bad(f"entry of {name!r} is not an object")
    size, sha = raw.get("size"), raw.get("sha256")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise _Bad(f"entry of {name!r} has no valid size")
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise _Bad(f"entry of {name!r} has no valid sha256")
    return ManifestEntry(size=size, sha256=sha)


def _parse(data: bytes) -> dict[str, ManifestEntry]:
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Bad(f"not JSON ({type(exc).__name__})") from None
    if not isinstance(body, dict) or body.get("format") != MANIFEST_FORMAT:
        raise _Bad(f"not a {MANIFEST_FORMAT} manifest")
    if body.get("algorithm") != "sha256" or not isinstance(body.get("files"), dict):
        raise _Bad("has no sha256 file table")
    return {_safe_name(n): _entry(n, raw) for n, raw in body["files"].items()}


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, ManifestEntry] | None:
    """The entries of ``directory``'s manifest, or ``None`` when it has none.

    Raises ``ValueError`` (naming only the manifest file) when it is malformed.
    """
    path = Path(directory) / MANIFEST_FILE
    if not path.exists() and not path.is_symlink():
        return None
    try:
        if path.is_symlink() or not path.is_file():
            raise _Bad("is not a regular file")
        if path.stat().st_size > _MAX_MANIFEST_BYTES:
            raise _Bad(f"is over {_MAX_MANIFEST_BYTES} bytes")
        return _parse(path.read_bytes())
    except _Bad as exc:
        raise ValueError(f"{MANIFEST_FILE} is invalid: {exc}") from None


def _entry_problem(root: Path, name: str, want: ManifestEntry) -> str | None:
    path = root / name
    if path.is_symlink() or not path.is_file():
        return f"{name} is missing (listed in {MANIFEST_FILE})"
    got = file_digest(path)
    if got.size != want.size:
        return (
            f"{name} is {got.size} bytes but {MANIFEST_FILE} records {want.size} "
            "(truncated or changed)"
        )
    if got.sha256 != want.sha256:
        return f"{name} does not match its SHA-256 in {MANIFEST_FILE} (corrupt or tampered)"
    return None


def manifest_problem(
    directory: str | os.PathLike[str],
    *,
    require: bool = False,
    exact: bool = False,
    ignore: Iterable[str] = (),
) -> str | None:
    """What is wrong with ``directory`` against its manifest, or ``None``.

    Every listed file must exist with the recorded size and SHA-256. ``exact``: every other
    regular file (except the names in ``ignore``) is a problem too. Without a manifest:
    a problem when ``require``, else each ``*.safetensors`` file is checked by
    :func:`safetensors_problem`.
    """
    root = Path(directory)
    try:
        entries = read_manifest(root)
    except ValueError as exc:
        return str(exc)
    if entries is None:
        if require:
            return f"{MANIFEST_FILE} is missing"
        for name in _regular_files(root):
            if name.endswith(".safetensors"):
                problem = safetensors_problem(root / name)
                if problem is not None:
                    return f"{name} {problem}"
        return None
    for name, want in entries.items():
        problem = _entry_problem(root, name, want)
        if problem is not None:
            return problem
    if exact:
        extra = set(_regular_files(root)) - set(entries) - set(ignore)
        if extra:
            return f"{min(extra)} is not listed in {MANIFEST_FILE}"
    return None


def _st_end(header: Any) -> int:
    if not isinstance(header, dict):
        raise _Bad("header is not a JSON object")
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise _Bad(f"tensor {key!r} has no valid data_offsets")
        end = max(end, offsets[1])
    return end


def safetensors_problem(path: str | os.PathLike[str]) -> str | None:
    """Why the safetensors file at ``path`` is truncated or malformed (from its header and
    its size alone), or ``None``. The text does not repeat the path."""
    file = Path(path)
    try:
        size = file.stat().st_size
        with open(file, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"is truncated ({size} bytes, no header)"
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, _MAX_ST_HEADER):
                return f"is truncated or malformed (header of {n} bytes in a {size}-byte file)"
            header = json.loads(fh.read(n))
        end = 8 + n + _st_end(header)
    except (ValueError, UnicodeDecodeError):
        return "is malformed (its header is not valid JSON)"
    except _Bad as exc:
        return f"is malformed ({exc})"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    if size < end:
        return f"is truncated ({size} bytes, its header needs {end})"
    if size > end:
        return f"has {size - end} bytes after its last tensor (corrupt)"
    return None
