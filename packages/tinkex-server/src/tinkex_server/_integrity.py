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
"""

from __future__ import annotations

import os
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


def verify_checkpoint_dir(directory: str | os.PathLike[str]) -> None:
    """Raise :class:`CheckpointCorruptError` unless ``directory`` matches its manifest."""
    path = Path(directory)
    if not path.is_dir():
        raise CheckpointCorruptError("its directory is missing")
    problem = manifest_problem(path)
    if problem is not None:
        raise CheckpointCorruptError(problem)
