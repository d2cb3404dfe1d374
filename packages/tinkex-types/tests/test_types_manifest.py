"""tinkex_types.manifest: per-file SHA-256 manifests and the structural safetensors check."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from tinkex_types.manifest import (
    MANIFEST_FILE,
    build_manifest,
    file_digest,
    manifest_problem,
    read_manifest,
    safetensors_problem,
    write_manifest,
)


def _safetensors(n: int) -> bytes:
    header = json.dumps({"t": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}})
    raw = header.encode() + b" " * (-len(header) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(4 * n)


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    root = tmp_path / "ckpt"
    (root / "sub").mkdir(parents=True)
    (root / "adapter_model.safetensors").write_bytes(_safetensors(100))
    (root / "adapter_config.json").write_bytes(b'{"r": 4}')
    (root / "sub" / "x.bin").write_bytes(b"abc")
    return root


def test_round_trip(ckpt: Path) -> None:
    write_manifest(ckpt)
    entries = read_manifest(ckpt)
    assert entries is not None
    assert sorted(entries) == ["adapter_config.json", "adapter_model.safetensors", "sub/x.bin"]
    assert entries["sub/x.bin"].sha256 == hashlib.sha256(b"abc").hexdigest()
    assert entries == build_manifest(ckpt)
    assert file_digest(ckpt / "sub/x.bin").size == 3
    assert manifest_problem(ckpt, require=True, exact=True) is None


def test_changes_are_named_without_the_directory(ckpt: Path) -> None:
    write_manifest(ckpt)
    (ckpt / "adapter_config.json").write_bytes(b'{"r": 5}')
    problem = manifest_problem(ckpt)
    assert problem is not None
    assert problem.startswith("adapter_config.json does not match its SHA-256")
    assert str(ckpt) not in problem
    (ckpt / "adapter_config.json").write_bytes(b'{"r": 4}')
    data = (ckpt / "adapter_model.safetensors").read_bytes()
    (ckpt / "adapter_model.safetensors").write_bytes(data[:-10])
    assert "truncated" in (manifest_problem(ckpt) or "")
    (ckpt / "adapter_model.safetensors").unlink()
    assert "adapter_model.safetensors is missing" in (manifest_problem(ckpt) or "")


def test_exact_refuses_unlisted_files_and_require_a_manifest(ckpt: Path) -> None:
    assert manifest_problem(ckpt, require=True) == f"{MANIFEST_FILE} is missing"
    write_manifest(ckpt)
    (ckpt / "extra").write_bytes(b"1")
    assert manifest_problem(ckpt) is None
    assert manifest_problem(ckpt, exact=True) == f"extra is not listed in {MANIFEST_FILE}"
    assert manifest_problem(ckpt, exact=True, ignore=("extra",)) is None


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"format": "other"}',
        b'{"format": "tinkex-checkpoint-manifest/1", "algorithm": "md5", "files": {}}',
        b'{"format": "tinkex-checkpoint-manifest/1", "algorithm": "sha256",'
        b' "files": {"../x": {"size": 1, "sha256": "' + b"0" * 64 + b'"}}}',
        b'{"format": "tinkex-checkpoint-manifest/1", "algorithm": "sha256",'
        b' "files": {"x": {"size": -1, "sha256": "' + b"0" * 64 + b'"}}}',
        b'{"format": "tinkex-checkpoint-manifest/1", "algorithm": "sha256",'
        b' "files": {"x": {"size": 1, "sha256": "zz"}}}',
    ],
)
def test_malformed_manifests_are_problems(ckpt: Path, body: bytes) -> None:
    (ckpt / MANIFEST_FILE).write_bytes(body)
    problem = manifest_problem(ckpt)
    assert problem is not None
    assert problem.startswith(f"{MANIFEST_FILE} is invalid")
    with pytest.raises(ValueError, match="invalid"):
        read_manifest(ckpt)


def test_safetensors_structure(tmp_path: Path) -> None:
    good = _safetensors(10)
    path = tmp_path / "a.safetensors"
    cases = {
        good: None,
        good[:-1]: "truncated",
        good + b"x": "after its last tensor",
        good[:5]: "no header",
        struct.pack("<Q", 10**9) + b"{}": "header of",
        struct.pack("<Q", 4) + b"nope": "not valid JSON",
        struct.pack("<Q", 8) + b'{"t": 1}': "data_offsets",
    }
    for data, expected in cases.items():
        path.write_bytes(data)
        problem = safetensors_problem(path)
        if expected is None:
            assert problem is None
        else:
            assert problem is not None
            assert expected in problem, problem
    # without a manifest, manifest_problem checks safetensors files by structure
    path.write_bytes(good[:-4])
    assert (manifest_problem(tmp_path) or "").startswith("a.safetensors is truncated")
