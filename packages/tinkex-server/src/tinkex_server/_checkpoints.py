"""Checkpoint files on disk: directory layout, sizes, tar archives and signed download URLs.

Layout under the data directory (every path segment percent-encoded, so ids with ``:`` and
names such as ``..`` are safe)::

    checkpoints/<training_run_id>/<kind>/<name>/   kind = weights | sampler_weights
        adapter_model.safetensors, adapter_config.json      (both kinds, PEFT layout)
        optimizer.safetensors, tinkex_state.json            (weights = training state)
    samplers/<sampler_id>/                          snapshots behind unnamed sampler saves
    archives/<training_run_id>/<kind>/<name>.tar    built on demand, then cached

Archives are uncompressed tars holding ``adapter_config.json``,
``adapter_model.safetensors``, their SHA-256 manifest ``tinkex_manifest.json`` (entries of
the archived files, taken from the checkpoint's own manifest after it was verified) and an
empty ``checkpoint_complete`` marker at the root. A checkpoint whose files no longer match
its manifest is never archived: :meth:`CheckpointFiles.build_archive` raises
:class:`~tinkex_server._integrity.CheckpointCorruptError`.
Download URLs are signed with HMAC-SHA256 over (run, kind, name, expiry) using a secret kept
in the database, so they work without Tinker headers and survive restarts until they expire.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from tinkex_server._integrity import verify_checkpoint_dir
from tinkex_types.manifest import MANIFEST_FILE, build_manifest, manifest_bytes, read_manifest

__all__ = [
    "ARCHIVE_FILES",
    "MAX_NAME_SEGMENT",
    "CheckpointFiles",
    "checkpoint_name_problem",
    "issued_path",
    "safe_segment",
]

#: Files every archive holds, in order (the marker is written empty).
ARCHIVE_FILES = ("adapter_config.json", "adapter_model.safetensors")
MARKER = "checkpoint_complete"


def safe_segment(text: str) -> str:
    """A file-name-safe, reversible encoding of an id or name (never ``.``/``..``)."""
    return quote(text, safe="-_").replace(".", "%2E")


#: Longest encoded checkpoint name (see :func:`safe_segment`). Temporary siblings add 18
#: characters (``.<name>.tmp-<12 hex>``), and file systems allow 255 per path component.
MAX_NAME_SEGMENT = 200

#: Characters tinker 0.16.1 puts into REST URLs unescaped and that then change the URL:
#: ``?`` starts the query, ``#`` the fragment, ``%`` an escape (``a%20b`` arrives as
#: ``a b``).
_URL_BREAKERS = frozenset("?#%")


def checkpoint_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a checkpoint, or ``None`` when it can.

    A name must survive two trips: into a file-system path (its encoded form is at most
    :data:`MAX_NAME_SEGMENT` characters) and into the REST URLs the official client builds
    for the archive, TTL, publish and delete calls. tinker 0.16.1 inserts the name there
    without escaping, so ``.``, ``..``, control characters and ``?``, ``#``, ``%`` would
    give a checkpoint that can be saved but never reached again by name.
    """
    if name in (".", ".."):
        return f"{name!r} is a relative path segment, which URLs collapse"
    bad = sorted({c for c in name if c in _URL_BREAKERS or ord(c) < 0x20 or ord(c) == 0x7F})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        return (
            f"{name!r} contains {shown}, which the tinker client puts into REST URLs "
            "unescaped (the checkpoint could never be downloaded, expired, published or "
            "deleted by name)"
        )
    size = len(safe_segment(name))
    if size > MAX_NAME_SEGMENT:
        return (
            f"is too long: {size} characters once encoded for the file system (letters, "
            f"digits, '-' and '_' count 1, other characters 3 per UTF-8 byte); the limit is "
            f"{MAX_NAME_SEGMENT}"
        )
    return None


def dir_size(path: Path) -> int:
    """Total size of the regular files under ``path``."""
    total = 0
    for p in path.rglob("*"):
        if p.is_file():
            total += p.stat().st_size
    return total


class CheckpointFiles:
    """Where checkpoint files live, and how archives and download URLs are made."""

    def __init__(self, data_dir: Path, secret: bytes) -> None:
        self.data_dir = data_dir
        self._secret = secret
        self.root = data_dir / "checkpoints"
        self.sampler_root = data_dir / "samplers"
        self.archive_root = data_dir / "archives"

    def checkpoint_dir(self, run_id: str, kind: str, name: str) -> Path:
        return self.root / safe_segment(run_id) / kind / safe_segment(name)

    def relative(self, path: Path) -> str:
        return path.relative_to(self.data_dir).as_posix()

    def absolute(self, rel: str) -> Path:
        return self.data_dir / rel

    def sampler_dir(self, sampler_id: str) -> Path:
        return self.sampler_root / safe_segment(sampler_id)

    def archive_path(self, run_id: str, kind: str, name: str) -> Path:
        return self.archive_root / safe_segment(run_id) / kind / (safe_segment(name) + ".tar")

    def remove(self, run_id: str, kind: str, name: str) -> None:
        """Delete a checkpoint's directory and cached archive (missing is fine)."""
        shutil.rmtree(self.checkpoint_dir(run_id, kind, name), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.archive_path(run_id, kind, name).unlink()

    # -- archives ---------------------------------------------------------------------------
    def build_archive(self, source: Path, run_id: str, kind: str, name: str) -> Path:
        """The tar of a checkpoint directory, built (atomically) if not cached yet.

        Raises ``FileNotFoundError`` naming the missing file if the directory lacks one of
        :data:`ARCHIVE_FILES`, and :class:`~tinkex_server._integrity.CheckpointCorruptError`
        when a file does not match the checkpoint's manifest (checked on every call, the
        cached archive is served only for an intact checkpoint).
        """
        target = self.archive_path(run_id, kind, name)
        for fname in ARCHIVE_FILES:
            if not (source / fname).is_file():
                raise FileNotFoundError(f"checkpoint file {fname} is missing")
        verify_checkpoint_dir(source)
        if target.is_file() and target.stat().st_mtime >= _newest_mtime(source):
            return target
        manifest = _archive_manifest(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                with tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for fname in ARCHIVE_FILES:
                        info = tar.gettarinfo(str(source / fname), arcname=fname)
                        _normalise(info)
                        with (source / fname).open("rb") as src:
                            tar.addfile(info, src)
                    entry = tarfile.TarInfo(MANIFEST_FILE)
                    entry.size = len(manifest)
                    _normalise(entry)
                    tar.addfile(entry, io.BytesIO(manifest))
                    marker = tarfile.TarInfo(MARKER)
                    marker.size = 0
                    _normalise(marker)
                    tar.addfile(marker, io.BytesIO(b""))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return target

    # -- signed URLs ------------------------------------------------------------------------
    def sign(self, run_id: str, kind: str, name: str, expires: int) -> str:
        msg = "\n".join((run_id, kind, name, str(expires))).encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def verify(self, run_id: str, kind: str, name: str, expires: int, sig: str) -> bool:
        """Whether ``sig`` is valid for this checkpoint and ``expires`` lies in the future."""
        if expires < time.time():
            return False
        expected = self.sign(run_id, kind, name, expires).encode()
        # Bytes: compare_digest refuses str with non-ASCII characters (any text can arrive).
        return hmac.compare_digest(expected, sig.encode("utf-8", "replace"))


def _normalise(info: tarfile.TarInfo) -> None:
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0


def _archive_manifest(source: Path) -> bytes:
    """The manifest put into an archive: the checkpoint's entries of :data:`ARCHIVE_FILES`
    (computed now for a checkpoint saved before manifests existed)."""
    entries = read_manifest(source) or {}
    if not all(f in entries for f in ARCHIVE_FILES):
        entries = build_manifest(source, ARCHIVE_FILES)
    return manifest_bytes({f: entries[f] for f in ARCHIVE_FILES})


def _newest_mtime(path: Path) -> float:
    newest = 0.0
    for fname in (*ARCHIVE_FILES, MANIFEST_FILE):
        with contextlib.suppress(FileNotFoundError):
            newest = max(newest, (path / fname).stat().st_mtime)
    return newest


def issued_path(style: str, run_id: str, kind: str, name: str) -> str:
    """The ``tinker://`` path a save answers (``ServerConfig.path_style``): standard
    ``tinker://<run>/<kind>/<name>`` or two-part ``tinker://<run>/<name>``."""
    if style == "two-part":
        return f"tinker://{run_id}/{name}"
    return f"tinker://{run_id}/{kind}/{name}"
