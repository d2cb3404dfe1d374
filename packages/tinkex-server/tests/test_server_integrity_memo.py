"""verify_checkpoint_dir does not hash an unchanged checkpoint again, and any change to its
files (even one that keeps the size and restores the modification time) is checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tinkex_server._integrity import (
    CheckpointCorruptError,
    verify_checkpoint_dir,
    write_checkpoint_manifest,
)
from tinkex_types import manifest


def _checkpoint(root: Path) -> Path:
    root.mkdir()
    (root / "adapter_config.json").write_text('{"r": 4}')
    (root / "weights.bin").write_bytes(bytes(range(256)) * 64)
    write_checkpoint_manifest(root)
    return root


def test_unchanged_directory_is_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = _checkpoint(tmp_path / "ckpt")
    reads: list[str] = []
    real = manifest.file_digest

    def counting(path: str | os.PathLike[str]) -> manifest.ManifestEntry:
        reads.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(manifest, "file_digest", counting)
    verify_checkpoint_dir(ckpt)
    assert sorted(reads) == ["adapter_config.json", "weights.bin"]
    verify_checkpoint_dir(ckpt)
    verify_checkpoint_dir(ckpt)
    assert len(reads) == 2  # remembered: no second hashing


def test_same_size_change_with_restored_mtime_is_caught(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "ckpt")
    verify_checkpoint_dir(ckpt)
    target = ckpt / "weights.bin"
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    with pytest.raises(CheckpointCorruptError, match=r"weights\.bin"):
        verify_checkpoint_dir(ckpt)
    with pytest.raises(CheckpointCorruptError, match=r"weights\.bin"):
        verify_checkpoint_dir(ckpt)  # a failure is never remembered as a pass
