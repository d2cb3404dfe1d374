"""Checkpoint integrity on the server (issue 17, finding 6).

Every checkpoint directory gets a per-file SHA-256 manifest
(:data:`tinkex_types.manifest.MANIFEST_FILE`) when it is saved
(:func:`write_checkpoint_manifest`, called by the engine inside the atomic directory
build). :func:`verify_checkpoint_dir` checks a directory before it is loaded or archived:
a file missing, truncated or changed raises :class:`CheckpointCorruptError`, a
server-side failure (not a :class:`~tinkex_types.TinkexValidationError`, so a failed
future reports category ``server``) whose message names files relative to the checkpoint,
never by absolute path. A directory without a manifest (saved by an older server) is
checked structurally (every ``*.safetensors`` file against its own header).

A directory that passed is not hashed again while its files are unchanged: the check is
remembered with a fingerprint of every entry (name, type, size, inode, modification and
change times); any write, truncation, replacement, ``chmod`` or ``utime`` changes the
change time, so the next check reads the files again. (Every download of a 1 GiB
checkpoint used to hash it twice, once for the link and once for the archive; the client
checks the same manifest again after extraction.)
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from tinkex_types import TinkexError
from tinkex_types.manifest import manifest_problem, write_manifest

__all__ = ["CheckpointCorruptError", "verify_checkpoint_dir", "write_checkpoint_manifest"]


class CheckpointCorruptError(TinkexError):
    """A stored checkpoint's files do not match what was saved (the server's fault)."""

    def __init__(self, problem: str) -> None:
        super().__init__(
            f"stored checkpoint is corrupt: {problem}; save it again or load another one"
        )
        self.problem = problem


def write_checkpoint_manifest(directory: str | os.PathLike[str]) -> Path:
    """Write the manifest of every regular file in ``directory`` (call it last)."""
    return write_manifest(directory)


#: Directories that passed, by resolved path: the fingerprint they had (most recent last).
_VERIFIED: OrderedDict[str, tuple[tuple[object, ...], ...]] = OrderedDict()
_VERIFIED_MAX = 256
_VERIFIED_LOCK = threading.Lock()


def _fingerprint(path: Path) -> tuple[tuple[object, ...], ...]:
    entries = []
    for entry in sorted(path.rglob("*")):
        st = entry.lstat()
        name = entry.relative_to(path).as_posix()
        entries.append((name, st.st_mode, st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(entries)


def verify_checkpoint_dir(directory: str | os.PathLike[str]) -> None:
    """Raise :class:`CheckpointCorruptError` unless ``directory`` matches its manifest
    (not read again while its files are unchanged since it last passed)."""
    path = Path(directory)
    if not path.is_dir():
        raise CheckpointCorruptError("its directory is missing")
    key = str(path.resolve())
    before = _fingerprint(path)
    with _VERIFIED_LOCK:
        if _VERIFIED.get(key) == before:
            _VERIFIED.move_to_end(key)
            return
    problem = manifest_problem(path)
    with _VERIFIED_LOCK:
        if problem is not None:
            _VERIFIED.pop(key, None)
        elif _fingerprint(path) == before:  # nothing changed while it was read
            _VERIFIED[key] = before
            while len(_VERIFIED) > _VERIFIED_MAX:
                _VERIFIED.popitem(last=False)
    if problem is not None:
        raise CheckpointCorruptError(problem)
