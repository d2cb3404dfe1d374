"""Checkpoint archive: URL resolution, streaming download with flat memory, safe extraction."""

from __future__ import annotations

import asyncio
import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import struct
import tarfile
import threading
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tinkex_http import (
    ArchiveTooLargeError,
    HTTPClient,
    UnsafeArchiveError,
    archive_destination,
    download_archive,
    download_checkpoint_archive,
    extract_archive_safely,
    parse_checkpoint_tinker_path,
    resolve_archive_url,
)
from tinkex_types import APIResponseValidationError, InternalServerError, TinkexValidationError

MakeClient = Callable[..., HTTPClient]


def make_tar(
    path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], *, gz: bool = False
) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        for member in members:
            if isinstance(member, tuple):
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(member)
    raw = buffer.getvalue()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def snapshot(root: Path) -> dict[str, bytes | None]:
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def safetensors_bytes(n_floats: int) -> bytes:
    """A well-formed safetensors file of one float32 tensor of random bytes."""
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}}
    )
    raw = header.encode() + b" " * (-len(header) % 8)
    return struct.pack("<Q", len(raw)) + raw + os.urandom(4 * n_floats)


VALID = [
    ("adapter_config.json", b'{"r": 8}'),
    ("adapter_model.safetensors", safetensors_bytes(17_500)),
    ("checkpoint_complete", b""),
    ("nested/deeper/file.bin", bytes(range(256)) * 40),
]


@pytest.mark.parametrize("gz", [False, True])
def test_valid_archive_extracts_byte_exact(tmp_path: Path, gz: bool) -> None:
    members: list[Any] = [special("nested", tarfile.DIRTYPE), *VALID]
    members.append(special("link_to_config", tarfile.SYMTYPE, "adapter_config.json"))
    members.append(special("nested/up_link", tarfile.SYMTYPE, "../checkpoint_complete"))
    members.append(special("hard_copy", tarfile.LNKTYPE, "adapter_config.json"))
    archive = make_tar(tmp_path / "ok.tar", members, gz=gz)
    dest = tmp_path / "out" / "ckpt"
    assert extract_archive_safely(archive, dest) == dest
    for name, data in VALID:
        assert (dest / name).read_bytes() == data
    assert (dest / "link_to_config").is_symlink()
    assert (dest / "link_to_config").read_bytes() == b'{"r": 8}'
    assert (dest / "nested/up_link").read_bytes() == b""
    assert (dest / "hard_copy").read_bytes() == b'{"r": 8}'
    assert sorted(p.name for p in dest.parent.iterdir()) == ["ckpt"]


BAD: dict[str, list[Any]] = {
    "traversal": [("ok.txt", b"1"), ("../evil.txt", b"pwned")],
    "nested traversal": [("a/../../evil.txt", b"pwned")],
    "absolute": [("/tmp/evil-abs.txt", b"pwned")],
    "symlink escape": [special("esc", tarfile.SYMTYPE, "../../outside")],
    "absolute symlink": [special("esc", tarfile.SYMTYPE, "/etc/passwd")],
    "symlink chain escape": [
        special("sub", tarfile.DIRTYPE),
        special("sub/b", tarfile.SYMTYPE, ".."),
        special("x", tarfile.DIRTYPE),
        special("x/a", tarfile.SYMTYPE, "../sub/b/.."),
    ],
    "write through link": [
        special("d", tarfile.SYMTYPE, "."),
        special("e", tarfile.SYMTYPE, "d/.."),
        ("e/evil.txt", b"pwned"),
    ],
    "hardlink escape": [special("h", tarfile.LNKTYPE, "../outside.txt")],
    "absolute hardlink": [special("h", tarfile.LNKTYPE, "/etc/passwd")],
    "char device": [special("dev", tarfile.CHRTYPE)],
    "block device": [special("blk", tarfile.BLKTYPE)],
    "fifo": [special("pipe", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("existing", [False, True])
def test_crafted_archives_are_refused_and_destination_untouched(
    tmp_path: Path, case: str, existing: bool
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "outside.txt").write_bytes(b"original")
    archive = make_tar(tmp_path / "bad.tar", BAD[case])
    dest = work / "ckpt"
    if existing:
        dest.mkdir()
        (dest / "keep.txt").write_bytes(b"keep me")
    before = snapshot(dest)
    with pytest.raises(UnsafeArchiveError):
        extract_archive_safely(archive, dest, overwrite=True)
    assert snapshot(dest) == before
    assert dest.exists() == existing
    assert sorted(p.name for p in work.iterdir()) == (["ckpt"] if existing else [])
    assert not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/evil-abs.txt").exists()
    assert (tmp_path / "outside.txt").read_bytes() == b"original"


def test_oversize_archive_is_refused(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "big.tar", [("a.bin", b"x" * 600), ("b.bin", b"y" * 600)])
    dest = tmp_path / "dest"
    with pytest.raises(ArchiveTooLargeError, match="1000-byte limit"):
        extract_archive_safely(archive, dest, max_total_bytes=1000)
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == [archive]


def test_too_many_members_and_non_tar_are_refused(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "many.tar", [(f"f{i}", b"") for i in range(5)])
    with pytest.raises(ArchiveTooLargeError, match="members"):
        extract_archive_safely(archive, tmp_path / "d1", max_members=4)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar archive at all" * 20)
    with pytest.raises(UnsafeArchiveError, match="tar"):
        extract_archive_safely(junk, tmp_path / "d2")
    assert not (tmp_path / "d1").exists()
    assert not (tmp_path / "d2").exists()


def test_existing_destination_requires_overwrite_and_is_replaced_atomically(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "ok.tar", VALID)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "old.txt").write_bytes(b"old")
    with pytest.raises(TinkexValidationError, match="already exists"):
        extract_archive_safely(archive, dest)
    assert (dest / "old.txt").read_bytes() == b"old"
    extract_archive_safely(archive, dest, overwrite=True)
    assert not (dest / "old.txt").exists()
    assert (dest / "adapter_config.json").read_bytes() == b'{"r": 8}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "ok.tar"]


def test_tinker_path_parsing() -> None:
    assert parse_checkpoint_tinker_path("tinker://run-1/weights/step-5") == (
        "run-1",
        "weights",
        "step-5",
    )
    assert archive_destination("tinker://r:train:0/sampler_weights/x", "/o") == Path(
        "/o/r:train:0_sampler_weights_x"
    )
    for bad in ("http://r/weights/x", "tinker://r/weights", "tinker://r/other/x", "tinker://r//x"):
        with pytest.raises(TinkexValidationError, match="tinker_path"):
            parse_checkpoint_tinker_path(bad)


async def test_resolve_archive_url_retries_503_then_reads_the_redirect(
    make_client: MakeClient, clock: Any
) -> None:
    answers = [httpx.Response(503), httpx.Response(503)]
    answers.append(
        httpx.Response(
            302,
            headers={
                "location": "https://b.test/x.tar",
                "expires": "Wed, 21 Oct 2026 07:28:00 GMT",
            },
        )
    )
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    async with make_client(handler) as http:
        target = await resolve_archive_url(http, "tinker://run/weights/ck")
    assert target.url == "https://b.test/x.tar"
    assert target.expires is not None
    assert not isinstance(target.expires, str)
    assert target.expires.year == 2026
    assert clock.sleeps == [30.0, 30.0]
    assert len(seen) == 3  # no transport retries underneath the 503 loop
    assert seen[0].url.path.endswith("/api/v1/training_runs/run/checkpoints/weights/ck/archive")


async def test_resolve_archive_url_gives_up_after_six_calls(
    make_client: MakeClient, clock: Any
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503)

    async with make_client(handler) as http:
        with pytest.raises(InternalServerError):
            await resolve_archive_url(http, "tinker://run/weights/ck")
    assert len(seen) == 6
    assert clock.sleeps == [30.0] * 5


async def test_resolve_archive_url_accepts_json_and_rejects_empty(make_client: MakeClient) -> None:
    async with make_client(
        lambda r: httpx.Response(
            200, json={"url": "https://b.test/y", "expires": "2026-01-02T03:04:05Z"}
        )
    ) as http:
        target = await resolve_archive_url(http, "tinker://run/sampler_weights/s")
    assert target.url == "https://b.test/y"
    async with make_client(lambda r: httpx.Response(200, json={})) as http:
        with pytest.raises(APIResponseValidationError):
            await resolve_archive_url(http, "tinker://run/weights/ck")


async def test_download_checkpoint_end_to_end(
    make_client: MakeClient, tmp_path: Path, api_key: str
) -> None:
    archive_bytes = make_tar(tmp_path / "src.tar", VALID).read_bytes()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/archive"):
            return httpx.Response(302, headers={"location": "https://bucket.test/ckpt.tar?sig=abc"})
        assert request.url.host == "bucket.test"
        return httpx.Response(200, content=archive_bytes)

    progress: list[tuple[int, int | None]] = []
    out = tmp_path / "out"
    async with make_client(handler) as http:
        dest = await download_checkpoint_archive(
            http, "tinker://run1/weights/step-1", out, progress=lambda d, t: progress.append((d, t))
        )
        assert dest == out / "run1_weights_step-1"
        for name, data in VALID:
            assert (dest / name).read_bytes() == data
        assert sorted(p.name for p in out.iterdir()) == [
            "run1_weights_step-1"
        ]  # temp archive removed
        assert progress[-1] == (len(archive_bytes), len(archive_bytes))
        assert "x-api-key" in seen[0].headers
        assert "x-api-key" not in seen[1].headers  # signed URL gets no Tinker headers
        assert api_key not in str(seen[1].headers)
        # an existing destination needs force, checked before any request
        count = len(seen)
        with pytest.raises(TinkexValidationError, match="already exists"):
            await download_checkpoint_archive(http, "tinker://run1/weights/step-1", out)
        assert len(seen) == count
        await download_checkpoint_archive(http, "tinker://run1/weights/step-1", out, force=True)
        assert (dest / "checkpoint_complete").exists()


async def test_download_failure_leaves_nothing(make_client: MakeClient, tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/archive"):
            return httpx.Response(302, headers={"location": "https://bucket.test/ckpt.tar"})
        return httpx.Response(403, json={"detail": "signature expired"})

    out = tmp_path / "out"
    async with make_client(handler) as http:
        with pytest.raises(Exception, match="signature expired"):
            await download_checkpoint_archive(http, "tinker://run1/weights/s", out)
    assert list(out.iterdir()) == []


async def test_download_over_the_limit_is_refused(make_client: MakeClient, tmp_path: Path) -> None:
    async with make_client(lambda r: httpx.Response(200, content=b"x" * 5000)) as http:
        with pytest.raises(ArchiveTooLargeError):
            await download_archive(
                http, "https://bucket.test/a.tar", tmp_path / "a.tar", max_bytes=4096
            )
    assert not (tmp_path / "a.tar").exists()


async def test_200mb_download_keeps_memory_flat(make_client: MakeClient, tmp_path: Path) -> None:
    chunk_size = 64 * 1024
    n_chunks = 200 * 1024 * 1024 // chunk_size

    async def body() -> AsyncIterator[bytes]:
        for i in range(n_chunks):
            yield bytes([i % 251]) * chunk_size  # a fresh chunk each time, like a socket read

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=body(), headers={"content-length": str(n_chunks * chunk_size)}
        )

    calls = 0

    def progress(done: int, total: int | None) -> None:
        nonlocal calls
        calls += 1
        assert total == n_chunks * chunk_size

    target = tmp_path / "big.tar"
    async with make_client(handler) as http:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            size = await download_archive(
                http, "https://bucket.test/big.tar", target, progress=progress
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert size == 200 * 1024 * 1024 == target.stat().st_size
    assert calls >= n_chunks
    assert peak < 4 * 1024 * 1024, f"peak traced memory {peak} bytes"
    with target.open("rb") as fh:
        fh.seek(chunk_size * 7)
        assert fh.read(4) == bytes([7]) * 4
    target.unlink()


# -- issue 17: findings 4-6 ------------------------------------------------------------------


def _sparse_pax_tar(path: Path, real_size: int) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tf:
        entry = tarfile.TarInfo("big.bin")
        data = b"1\n0\n512\n".ljust(512, b"\0") + b"x" * 512
        entry.size = len(data)
        entry.pax_headers = {
            "GNU.sparse.major": "1",
            "GNU.sparse.minor": "0",
            "GNU.sparse.name": "big.bin",
            "GNU.sparse.realsize": str(real_size),
        }
        tf.addfile(entry, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())
    return path


def test_sparse_member_is_refused(tmp_path: Path) -> None:
    archive = _sparse_pax_tar(tmp_path / "sparse.tar", 1 << 30)  # 10 KiB → 1 GiB
    assert archive.stat().st_size < 16 * 1024
    with pytest.raises(UnsafeArchiveError) as info:
        extract_archive_safely(archive, tmp_path / "d")
    assert info.value.reason == "sparse"
    assert list(tmp_path.iterdir()) == [archive]


def test_expansion_is_bounded_relative_to_the_archive(tmp_path: Path) -> None:
    zeros = tarfile.TarInfo("zeros.bin")
    zeros.size = 32 * 1024 * 1024
    archive = tmp_path / "bomb.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        tf.addfile(zeros, io.BytesIO(bytes(zeros.size)))
    archive.write_bytes(gzip.compress(buffer.getvalue()))
    assert archive.stat().st_size < 64 * 1024  # far below the 32 GiB absolute cap
    with pytest.raises(ArchiveTooLargeError) as info:
        extract_archive_safely(archive, tmp_path / "d")
    assert info.value.reason == "expansion"
    assert list(tmp_path.iterdir()) == [archive]
    # the same archive passes when the ratio allows it (the absolute cap is still there)
    dest = extract_archive_safely(archive, tmp_path / "ok", max_expansion=10_000, verify=False)
    assert (dest / "zeros.bin").stat().st_size == zeros.size
    with pytest.raises(ArchiveTooLargeError) as capped:
        extract_archive_safely(
            archive, tmp_path / "capped", max_expansion=None, max_total_bytes=1024 * 1024
        )
    assert capped.value.reason == "too-large"


@pytest.mark.parametrize(
    ("case", "reason"),
    [("truncated", "truncated"), ("long name", "name-too-long"), ("file then dir", "duplicate")],
)
def test_accidental_refusals_are_unsafe_archive_errors(
    tmp_path: Path, case: str, reason: str
) -> None:
    if case == "truncated":
        raw = make_tar(tmp_path / "t.tar", VALID).read_bytes()
        archive = tmp_path / "cut.tar"
        archive.write_bytes(raw[: 512 * 3 + 100])
    elif case == "long name":
        archive = make_tar(tmp_path / "n.tar", [("n" * 300, b"1")])
    else:
        archive = make_tar(tmp_path / "d.tar", [("x", b"1"), special("x", tarfile.DIRTYPE)])
    dest = tmp_path / "out" / "ckpt"
    with pytest.raises(UnsafeArchiveError) as info:  # not ReadError / OSError
        extract_archive_safely(archive, dest)
    assert info.value.reason == reason
    assert f"unsafe archive refused ({reason})" in str(info.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_manifest_is_verified(tmp_path: Path) -> None:
    from tinkex_types.manifest import MANIFEST_FILE, build_manifest, manifest_bytes

    src = tmp_path / "src"
    src.mkdir()
    for name, data in VALID:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    manifest = manifest_bytes(build_manifest(src))
    good = make_tar(tmp_path / "good.tar", [*VALID, (MANIFEST_FILE, manifest)])
    dest = extract_archive_safely(good, tmp_path / "ok")
    assert (dest / MANIFEST_FILE).read_bytes() == manifest
    tampered = [(n, d if n != "adapter_config.json" else b'{"r": 9}') for n, d in VALID]
    bad = make_tar(tmp_path / "bad.tar", [*tampered, (MANIFEST_FILE, manifest)])
    with pytest.raises(UnsafeArchiveError, match=r"adapter_config\.json does not match") as info:
        extract_archive_safely(bad, tmp_path / "bad")
    assert info.value.reason == "integrity"
    assert not (tmp_path / "bad").exists()


def test_setgid_directory_is_fine_but_setuid_file_is_not(tmp_path: Path) -> None:
    shared = special("shared", tarfile.DIRTYPE)
    shared.mode = 0o2775
    dest = extract_archive_safely(make_tar(tmp_path / "ok.tar", [shared, *VALID]), tmp_path / "a")
    assert (dest / "shared").is_dir()
    runner = tarfile.TarInfo("run.sh")
    runner.mode = 0o4755
    with pytest.raises(UnsafeArchiveError) as info:
        extract_archive_safely(make_tar(tmp_path / "bad.tar", [runner]), tmp_path / "b")
    assert info.value.reason == "setuid"


@pytest.mark.parametrize("gz", [False, True])
def test_manifest_checked_from_digests_taken_while_writing(tmp_path: Path, gz: bool) -> None:
    """Plain tars are copied straight from the file, compressed ones through the stream; the
    SHA-256 taken while writing decides in both, a hard-linked listed file is read again
    and an unlisted file is refused."""
    from tinkex_types.manifest import MANIFEST_FILE, build_manifest, manifest_bytes

    src = tmp_path / "src"
    src.mkdir()
    big = bytes(range(256)) * 9000  # over one copy buffer of a few blocks
    files = [*VALID, ("big.bin", big)]
    for name, data in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    (src / "copy.bin").write_bytes(big)
    manifest = manifest_bytes(build_manifest(src))
    link = special("copy.bin", tarfile.LNKTYPE, "big.bin")
    good = make_tar(tmp_path / "good.tar", [*files, link, (MANIFEST_FILE, manifest)], gz=gz)
    dest = extract_archive_safely(good, tmp_path / "ok")
    assert (dest / "big.bin").read_bytes() == big == (dest / "copy.bin").read_bytes()
    flipped = big[:-1] + b"\x00"
    bad = make_tar(
        tmp_path / "bad.tar", [*VALID, ("big.bin", flipped), (MANIFEST_FILE, manifest)], gz=gz
    )
    with pytest.raises(UnsafeArchiveError, match=r"big\.bin does not match") as info:
        extract_archive_safely(bad, tmp_path / "bad")
    assert info.value.reason == "integrity"
    extra = make_tar(
        tmp_path / "extra.tar",
        [*files, link, ("sub/x.bin", b"x"), (MANIFEST_FILE, manifest)],
        gz=gz,
    )
    with pytest.raises(UnsafeArchiveError, match=r"sub/x\.bin is not listed") as info:
        extract_archive_safely(extra, tmp_path / "extra")
    assert info.value.reason == "integrity"
    assert not (tmp_path / "bad").exists()
    assert not (tmp_path / "extra").exists()


def _streamed(data: bytes, *, fail_after: int | None = None, announce: bool = True) -> Any:
    """A handler answering the archive link, then ``data`` in 4 KiB chunks (with or without
    ``Content-Length``), optionally breaking the connection after ``fail_after`` bytes."""

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 4096):
            if fail_after is not None and start >= fail_after:
                raise httpx.ReadError("connection reset by peer")
            yield data[start : start + 4096]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/archive"):
            return httpx.Response(302, headers={"location": "https://bucket.test/ckpt.tar"})
        headers = {"content-length": str(len(data))} if announce else {}
        return httpx.Response(200, content=body(), headers=headers)

    return handler


@pytest.mark.parametrize(("announce", "gz"), [(True, False), (True, True), (False, False)])
async def test_extraction_overlaps_the_download(
    make_client: MakeClient, tmp_path: Path, announce: bool, gz: bool
) -> None:
    """Extracted while it arrives (announced size; plain or gzip) or after it (no
    Content-Length)."""
    big = bytes(range(256)) * 4096
    data = make_tar(tmp_path / "src.tar", [*VALID, ("big.bin", big)], gz=gz).read_bytes()
    out = tmp_path / "out"
    async with make_client(_streamed(data, announce=announce)) as http:
        dest = await download_checkpoint_archive(http, "tinker://run1/weights/s", out)
    assert (dest / "big.bin").read_bytes() == big
    assert [p.name for p in out.iterdir()] == ["run1_weights_s"]


async def test_broken_download_while_extracting_leaves_nothing(
    make_client: MakeClient, tmp_path: Path
) -> None:
    big = bytes(range(256)) * 4096
    data = make_tar(tmp_path / "src.tar", [("big.bin", big), *VALID]).read_bytes()
    out = tmp_path / "out"
    async with make_client(_streamed(data, fail_after=len(data) // 2)) as http:
        with pytest.raises(Exception, match="connection reset") as info:
            await download_checkpoint_archive(http, "tinker://run1/weights/s", out)
    assert not isinstance(info.value, UnsafeArchiveError)  # the download's error, not a refusal
    assert list(out.iterdir()) == []


async def test_unsafe_member_stops_the_download(make_client: MakeClient, tmp_path: Path) -> None:
    evil = tarfile.TarInfo("../escape.txt")
    evil.size = 3
    big = bytes(range(256)) * 8192
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.addfile(evil, io.BytesIO(b"bad"))
        info = tarfile.TarInfo("big.bin")
        info.size = len(big)
        tar.addfile(info, io.BytesIO(big))
    data = raw.getvalue()
    sent: list[int] = []

    def progress(done: int, total: int | None) -> None:
        sent.append(done)

    out = tmp_path / "out"
    async with make_client(_streamed(data)) as http:
        with pytest.raises(UnsafeArchiveError) as refused:
            await download_checkpoint_archive(
                http, "tinker://run1/weights/s", out, progress=progress
            )
    assert refused.value.reason == "traversal"
    assert list(out.iterdir()) == []
    assert sent  # something arrived before the refusal


# -- issue 20: extraction straight from the downloaded chunks -------------------------------


def _served(data: bytes, chunk: int = 4096) -> Any:
    """A handler answering the archive link, then ``data`` in ``chunk``-byte pieces with
    its ``Content-Length`` (the download is extracted from the chunks as they arrive)."""

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(data), chunk):
            yield data[start : start + chunk]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/archive"):
            return httpx.Response(302, headers={"location": "https://bucket.test/ckpt.tar"})
        return httpx.Response(200, content=body(), headers={"content-length": str(len(data))})

    return handler


@pytest.mark.parametrize("case", sorted(BAD))
async def test_crafted_archives_are_refused_while_downloading(
    make_client: MakeClient, tmp_path: Path, case: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "outside.txt").write_bytes(b"original")
    data = make_tar(tmp_path / "bad.tar", BAD[case]).read_bytes()
    async with make_client(_served(data, chunk=700)) as http:
        with pytest.raises(UnsafeArchiveError):
            await download_checkpoint_archive(http, "tinker://run1/weights/s", work)
    assert list(work.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()
    assert "evil-abs.txt" not in os.listdir("/tmp")
    assert (tmp_path / "outside.txt").read_bytes() == b"original"


def _cut(tmp_path: Path) -> bytes:
    return make_tar(tmp_path / "t.tar", VALID).read_bytes()[: 512 * 3 + 100]


def _bomb(tmp_path: Path) -> bytes:
    zeros = tarfile.TarInfo("zeros.bin")
    zeros.size = 32 * 1024 * 1024
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        tf.addfile(zeros, io.BytesIO(bytes(zeros.size)))
    return gzip.compress(buffer.getvalue())


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("truncated", "truncated"),
        ("sparse", "sparse"),
        ("expansion", "expansion"),
        ("not a tar", "corrupt"),
        ("long name", "name-too-long"),
        ("setuid", "setuid"),
    ],
)
async def test_damaged_archives_are_refused_while_downloading(
    make_client: MakeClient, tmp_path: Path, case: str, reason: str
) -> None:
    """A complete download of a damaged archive is the archive's fault: a refusal with its
    reason, nothing left."""
    setuid = tarfile.TarInfo("run.sh")
    setuid.mode = 0o4755
    data = {
        "truncated": lambda: _cut(tmp_path),
        "sparse": lambda: _sparse_pax_tar(tmp_path / "s.tar", 1 << 30).read_bytes(),
        "expansion": lambda: _bomb(tmp_path),
        "not a tar": lambda: b"this is not a tar archive at all" * 20,
        "long name": lambda: make_tar(tmp_path / "n.tar", [("n" * 300, b"1")]).read_bytes(),
        "setuid": lambda: make_tar(tmp_path / "u.tar", [setuid]).read_bytes(),
    }[case]()
    out = tmp_path / "out"
    async with make_client(_served(data)) as http:
        with pytest.raises(UnsafeArchiveError) as info:
            await download_checkpoint_archive(http, "tinker://run1/weights/s", out)
    assert info.value.reason == reason
    assert list(out.iterdir()) == []
    (tmp_path / "same.tar").write_bytes(data)  # the same refusal as from a file on disk
    with pytest.raises(UnsafeArchiveError) as from_file:
        extract_archive_safely(tmp_path / "same.tar", tmp_path / "d")
    assert str(from_file.value) == str(info.value)


@pytest.mark.parametrize("compression", ["plain", "gz", "bz2", "xz"])
@pytest.mark.parametrize("chunk", [1, 3, 5000])
async def test_tiny_chunks_and_every_compression_while_downloading(
    make_client: MakeClient, tmp_path: Path, compression: str, chunk: int
) -> None:
    """The compression is told from the first bytes even when they arrive one by one."""
    members = VALID[:1] if chunk == 1 else VALID  # one byte at a time: a small archive
    raw = make_tar(tmp_path / "src.tar", members).read_bytes()
    data = {
        "plain": raw,
        "gz": gzip.compress(raw),
        "bz2": bz2.compress(raw),
        "xz": lzma.compress(raw),
    }[compression]
    out = tmp_path / "out"
    async with make_client(_served(data, chunk=chunk)) as http:
        dest = await download_checkpoint_archive(http, "tinker://run1/weights/s", out)
    for name, content in members:
        assert (dest / name).read_bytes() == content
    assert [p.name for p in out.iterdir()] == ["run1_weights_s"]


async def test_large_members_are_hashed_in_a_thread_and_verified(
    make_client: MakeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Members from THREADED_HASH on are hashed in a thread of their own (a small backlog
    makes the writer wait for it): the manifest check decides the same way."""
    import tinkex_http._extract as extract_mod
    import tinkex_http._growing as growing_mod
    from tinkex_types.manifest import MANIFEST_FILE, build_manifest, manifest_bytes

    monkeypatch.setattr(extract_mod, "THREADED_HASH", 10_000)
    monkeypatch.setattr(growing_mod, "HASH_BACKLOG", 8192)
    big = os.urandom(3 * 1024 * 1024 + 123)
    src = tmp_path / "src"
    src.mkdir()
    for name, content in [*VALID, ("big.bin", big)]:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(content)
    manifest = manifest_bytes(build_manifest(src))
    good = make_tar(tmp_path / "g.tar", [*VALID, ("big.bin", big), (MANIFEST_FILE, manifest)])
    flipped = big[:-1] + bytes([big[-1] ^ 1])
    bad = make_tar(tmp_path / "b.tar", [*VALID, ("big.bin", flipped), (MANIFEST_FILE, manifest)])
    async with make_client(_served(good.read_bytes(), chunk=300_000)) as http:
        dest = await download_checkpoint_archive(http, "tinker://run1/weights/s", tmp_path / "o")
    assert (dest / "big.bin").read_bytes() == big
    async with make_client(_served(bad.read_bytes(), chunk=300_000)) as http:
        with pytest.raises(UnsafeArchiveError, match=r"big\.bin does not match") as info:
            await download_checkpoint_archive(http, "tinker://run1/weights/s", tmp_path / "x")
    assert info.value.reason == "integrity"
    assert list((tmp_path / "x").iterdir()) == []


@pytest.mark.parametrize("evil_first", [False, True])
async def test_a_full_pipe_holds_the_download_back(
    make_client: MakeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, evil_first: bool
) -> None:
    """With a pipe far smaller than the archive the download waits for the extraction
    (the bytes held never pass the limit by more than a batch and a chunk); a refusal
    while the download waits still stops it."""
    import tinkex_http._archive as archive_mod
    import tinkex_http._growing as growing_mod

    pipes: list[growing_mod.ChunkPipe] = []

    class Recorded(growing_mod.ChunkPipe):
        def __init__(self) -> None:
            super().__init__(limit=64 * 1024, handoff=16 * 1024)
            pipes.append(self)

    monkeypatch.setattr(archive_mod, "ChunkPipe", Recorded)
    big = bytes(range(256)) * 8192  # 2 MiB
    evil = [("../escape.txt", b"bad")] if evil_first else []
    data = make_tar(tmp_path / "src.tar", [*evil, ("big.bin", big), *VALID]).read_bytes()
    out = tmp_path / "out"
    async with make_client(_served(data, chunk=8192)) as http:
        if evil_first:
            with pytest.raises(UnsafeArchiveError) as info:
                await download_checkpoint_archive(http, "tinker://run1/weights/s", out)
            assert info.value.reason == "traversal"
            assert list(out.iterdir()) == []
            return
        dest = await download_checkpoint_archive(http, "tinker://run1/weights/s", out)
    assert (dest / "big.bin").read_bytes() == big
    assert 0 < pipes[0].peak <= 64 * 1024 + 16 * 1024 + 8192


def test_pipe_reader_reads_forward_only_and_reports_a_failed_download() -> None:
    from tinkex_http._growing import ChunkPipe, DownloadEnded, PipeReader

    async def feed(pipe: ChunkPipe, chunks: list[bytes], failed: bool) -> None:
        pipe.start(sum(map(len, chunks)))
        for chunk in chunks:
            await pipe.put(chunk)
        pipe.finish(failed=failed)

    pipe = ChunkPipe(limit=1 << 20, handoff=1)
    got: dict[str, Any] = {}

    def consume() -> None:
        with PipeReader(pipe) as reader:
            got["head"] = reader.head(6)
            got["read"] = reader.read(4)
            reader.seek(2, os.SEEK_CUR)
            got["views"] = b"".join(bytes(v) for v in reader.views(5))
            try:
                reader.seek(0)
            except io.UnsupportedOperation as exc:
                got["back"] = str(exc)
            got["tell"] = reader.tell()
            got["rest"] = reader.read(100)
            got["end"] = reader.read(1)

    thread = threading.Thread(target=consume)
    thread.start()
    asyncio.run(feed(pipe, [b"ab", b"cdef", b"ghijklmnop", b"q"], failed=False))
    thread.join()
    assert got == {
        "head": b"abcdef",
        "read": b"abcd",
        "views": b"ghijk",
        "back": "a download is read forward only",
        "tell": 11,
        "rest": b"lmnopq",
        "end": b"",
    }

    broken = ChunkPipe(handoff=1)
    errors: list[BaseException] = []

    def drain() -> None:
        with PipeReader(broken) as reader:
            try:
                reader.drain()
            except DownloadEnded as exc:
                errors.append(exc)

    thread = threading.Thread(target=drain)
    thread.start()
    asyncio.run(feed(broken, [b"x" * 10], failed=True))
    thread.join()
    assert len(errors) == 1


def test_hash_thread_digest_matches_hashlib() -> None:
    from tinkex_http._growing import HashThread

    data = os.urandom(200_000)
    hasher = HashThread(limit=5000)  # the feeder waits for the thread again and again
    view = memoryview(data)
    for start in range(0, len(data), 3000):
        hasher.feed(view[start : start + 3000])
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    assert HashThread().hexdigest() == hashlib.sha256(b"").hexdigest()


def test_hash_thread_failure_reaches_the_writer() -> None:
    """A failure in the hashing thread is raised to the writer (never left waiting)."""
    from tinkex_http._growing import HashThread

    hasher = HashThread(limit=8)
    hasher.feed("not bytes, not hashable" * 2)  # type: ignore[arg-type]  # over the limit
    with pytest.raises(TypeError):
        hasher.feed(memoryview(b"more"))
    with pytest.raises(TypeError):
        hasher.hexdigest()


@pytest.mark.parametrize("cut", [False, True])
async def test_download_from_a_real_loopback_server(
    hooks: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: bool
) -> None:
    """Over a real 127.0.0.1 socket (the built-in transport): a large member arrives in
    many socket reads, is hashed in its own thread and verified; a connection closed in
    the middle of the body raises the download's error and leaves nothing."""
    import tinkex_http._extract as extract_mod
    from tinkex_http import Config
    from tinkex_types.manifest import MANIFEST_FILE, build_manifest, manifest_bytes

    monkeypatch.setattr(extract_mod, "THREADED_HASH", 64 * 1024)
    big = os.urandom(6 * 1024 * 1024 + 7)
    src = tmp_path / "src"
    src.mkdir()
    for name, content in [*VALID, ("big.bin", big)]:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(content)
    manifest = manifest_bytes(build_manifest(src))
    data = make_tar(
        tmp_path / "a.tar", [*VALID, ("big.bin", big), (MANIFEST_FILE, manifest)]
    ).read_bytes()

    async def answer(head: bytes, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection was cut."""
        if b"/archive " in head.split(b"\r\n")[0]:
            location = f"http://127.0.0.1:{port}/dl/ckpt.tar"
            writer.write(
                f"HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n".encode()
            )
            return True
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {len(data)}\r\n\r\n".encode())
        body = data[: len(data) // 2] if cut else data
        for start in range(0, len(body), 1 << 20):
            writer.write(body[start : start + (1 << 20)])
            await writer.drain()
        return not cut

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                if not await answer(head, writer):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed its connection
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    out = tmp_path / "out"
    try:
        cfg = Config(base_url=f"http://127.0.0.1:{port}", api_key=API_KEY_FOR_LOOPBACK, env={})
        async with HTTPClient(cfg, hooks=hooks) as http:
            if cut:
                with pytest.raises(Exception) as info:
                    await download_checkpoint_archive(http, "tinker://run1/weights/s", out)
                assert not isinstance(info.value, UnsafeArchiveError)
                assert list(out.iterdir()) == []
                return
            dest = await download_checkpoint_archive(http, "tinker://run1/weights/s", out)
    finally:
        server.close()
        await server.wait_closed()
    assert (dest / "big.bin").read_bytes() == big
    assert (dest / MANIFEST_FILE).read_bytes() == manifest
    assert [p.name for p in out.iterdir()] == ["run1_weights_s"]


API_KEY_FOR_LOOPBACK = "tml-loopback-0123456789"
