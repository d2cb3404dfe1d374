"""The crafted-archive corpus of issue 17: archive bytes that must be refused, each with the
``UnsafeArchiveError.reason`` expected. ``CASES[name] = (build, reason)``; ``build(good)``
gets the members of a real checkpoint archive (name → bytes, manifest included) to
tamper with."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import tarfile
from collections.abc import Callable

Members = dict[str, bytes]
Builder = Callable[[Members], bytes]

MANIFEST = "tinkex_manifest.json"


def info(
    name: str, kind: bytes = tarfile.REGTYPE, *, link: str = "", size: int = 0
) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = link
    member.size = size
    member.mode = 0o644
    return member


def tar(
    members: list[tarfile.TarInfo | tuple[str, bytes]],
    *,
    fmt: int = tarfile.PAX_FORMAT,
    gz: bool = False,
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for member in members:
            if isinstance(member, tuple):
                name, data = member
                entry = info(name, size=len(data))
                tf.addfile(entry, io.BytesIO(data))
            elif member.isreg() and member.size:
                tf.addfile(member, io.BytesIO(b"\0" * member.size))
            else:
                tf.addfile(member)
    raw = buf.getvalue()
    return gzip.compress(raw, compresslevel=9) if gz else raw


def good_tar(good: Members, *extra: tarfile.TarInfo | tuple[str, bytes]) -> bytes:
    return tar([*good.items(), *extra])


def _sparse_pax() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        entry = tarfile.TarInfo("adapter_model.safetensors")
        data = b"1\n0\n512\n".ljust(512, b"\0") + b"x" * 512
        entry.size = len(data)
        entry.pax_headers = {
            "GNU.sparse.major": "1",
            "GNU.sparse.minor": "0",
            "GNU.sparse.name": "adapter_model.safetensors",
            "GNU.sparse.realsize": str(1 << 30),  # 10 KiB that would extract to 1 GiB
        }
        tf.addfile(entry, io.BytesIO(data))
    return buf.getvalue()


def _zero_gzip_bomb() -> bytes:
    """A 64 MiB file of zeros: ~64 KiB compressed (the 1 GiB version, scaled down)."""
    return tar([info("adapter_model.safetensors", size=64 * 1024 * 1024)], gz=True)


def _trailing_bomb(good: Members) -> bytes:
    """A small valid tar followed by 48 MiB of zeros inside one gzip stream."""
    return gzip.compress(good_tar(good) + b"\0" * (48 * 1024 * 1024), compresslevel=9)


def _huge_pax_header() -> bytes:
    entry = info("a.txt", size=1)
    entry.pax_headers = {"comment": "x" * (256 * 1024)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(entry, io.BytesIO(b"1"))
    return gzip.compress(buf.getvalue())


def _long_gnu_name() -> bytes:
    return tar([("d/" * 40_000 + "f", b"1")], fmt=tarfile.GNU_FORMAT, gz=True)


def _setuid(mode: int) -> Builder:
    def build(good: Members) -> bytes:
        entry = info("run.sh", size=2)
        entry.mode = mode
        return tar([*good.items(), entry])

    return build


def _truncate(cut: Callable[[bytes], int]) -> Builder:
    def build(good: Members) -> bytes:
        raw = good_tar(good)
        return raw[: cut(raw)]

    return build


def _data_cut(raw: bytes) -> int:
    return 512 * 3 + 100  # inside the first member's data (pax header, header, data)


def _header_cut(raw: bytes) -> int:
    end = raw.rfind(MANIFEST.encode())  # the manifest's header: cut right before it
    return end - end % 512


def _bad_checksum(good: Members) -> bytes:
    raw = bytearray(good_tar(good))
    at = raw.rfind(MANIFEST.encode())
    start = at - at % 512
    raw[start + 148 : start + 156] = b"0000000\0"  # a wrong header checksum
    return bytes(raw)


def _manifest(entries: Members) -> bytes:
    files = {
        name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in entries.items()
    }
    body = {"format": "tinkex-checkpoint-manifest/1", "algorithm": "sha256", "files": files}
    return json.dumps(body).encode()


def _tampered(good: Members) -> bytes:
    weights = bytearray(good["adapter_model.safetensors"])
    weights[-1] ^= 0xFF  # same size, one bit pattern changed
    return tar([*{**good, "adapter_model.safetensors": bytes(weights)}.items()])


def _truncated_file(good: Members) -> bytes:
    weights = good["adapter_model.safetensors"]
    return tar([*{**good, "adapter_model.safetensors": weights[: len(weights) // 2]}.items()])


def _truncated_no_manifest(good: Members) -> bytes:
    weights = good["adapter_model.safetensors"]
    kept = {k: v for k, v in good.items() if k != MANIFEST}
    return tar([*{**kept, "adapter_model.safetensors": weights[:-8]}.items()])


def _extra_file(good: Members) -> bytes:
    return good_tar(good, ("injected.py", b"import os"))


def _bad_manifest(body: bytes) -> Builder:
    def build(good: Members) -> bytes:
        return tar([*{**good, MANIFEST: body}.items()])

    return build


def _outside_manifest(good: Members) -> bytes:
    body = json.loads(good[MANIFEST])
    body["files"]["../../outside.txt"] = {"size": 8, "sha256": "0" * 64}
    return tar([*{**good, MANIFEST: json.dumps(body).encode()}.items()])


def _lying_manifest(good: Members) -> bytes:
    files = {k: v for k, v in good.items() if k != MANIFEST}
    files["adapter_config.json"] = b'{"r": 9999}'
    manifest = json.loads(_manifest({k: v for k, v in good.items() if k != MANIFEST}))
    return tar([*files.items(), (MANIFEST, json.dumps(manifest).encode())])


def _safetensors_junk() -> bytes:
    return struct.pack("<Q", 10**12) + b"{}"


CASES: dict[str, tuple[Builder, str]] = {
    # paths
    "traversal": (lambda g: good_tar(g, ("../evil.txt", b"pwned")), "traversal"),
    "nested traversal": (lambda g: tar([("a/../../evil.txt", b"pwned")]), "traversal"),
    "deep traversal": (lambda g: tar([("a/b/../../../../evil.txt", b"x")]), "traversal"),
    "backslash traversal": (lambda g: tar([("..\\evil.txt", b"pwned")]), "traversal"),
    "absolute path": (lambda g: tar([("/tmp/evil-abs.txt", b"pwned")]), "absolute-path"),
    "drive letter": (lambda g: tar([("C:/evil.txt", b"pwned")]), "absolute-path"),
    # links
    "symlink out": (
        lambda g: tar([info("esc", tarfile.SYMTYPE, link="../../outside.txt")]),
        "link-escape",
    ),
    "absolute symlink": (
        lambda g: tar([info("esc", tarfile.SYMTYPE, link="/etc/passwd")]),
        "link-escape",
    ),
    "symlink chain out": (
        lambda g: tar(
            [
                info("sub", tarfile.DIRTYPE),
                info("sub/b", tarfile.SYMTYPE, link=".."),
                info("x", tarfile.DIRTYPE),
                info("x/a", tarfile.SYMTYPE, link="../sub/b/.."),
            ]
        ),
        "link-escape",
    ),
    "write through symlink": (
        lambda g: tar([info("d", tarfile.SYMTYPE, link="."), ("d/evil.txt", b"x")]),
        "link-escape",
    ),
    "hardlink out": (
        lambda g: tar([info("h", tarfile.LNKTYPE, link="../outside.txt")]),
        "traversal",
    ),
    "absolute hardlink": (
        lambda g: tar([info("h", tarfile.LNKTYPE, link="/etc/passwd")]),
        "absolute-path",
    ),
    "hardlink to nothing": (
        lambda g: tar([info("h", tarfile.LNKTYPE, link="missing")]),
        "link-escape",
    ),
    "hardlink to a directory": (
        lambda g: tar([info("d", tarfile.DIRTYPE), info("h", tarfile.LNKTYPE, link="d")]),
        "link-escape",
    ),
    # special files and modes
    "char device": (lambda g: good_tar(g, info("dev", tarfile.CHRTYPE)), "device"),
    "block device": (lambda g: good_tar(g, info("blk", tarfile.BLKTYPE)), "device"),
    "fifo": (lambda g: good_tar(g, info("pipe", tarfile.FIFOTYPE)), "fifo"),
    "setuid": (_setuid(0o4755), "setuid"),
    "setgid": (_setuid(0o2755), "setuid"),
    "unknown member type": (lambda g: good_tar(g, info("v", b"Z")), "unsupported-type"),
    # bombs
    "pax sparse bomb": (lambda g: _sparse_pax(), "sparse"),
    "gnu sparse": (
        lambda g: tar([info("s", tarfile.GNUTYPE_SPARSE, size=512)], fmt=tarfile.GNU_FORMAT),
        "sparse",
    ),
    "gzip bomb": (lambda g: _zero_gzip_bomb(), "expansion"),
    "gzip trailing bomb": (_trailing_bomb, "expansion"),
    "huge pax header": (lambda g: _huge_pax_header(), "header-too-large"),
    "huge gnu long name": (lambda g: _long_gnu_name(), "header-too-large"),
    # names
    "300-character name": (lambda g: good_tar(g, ("n" * 300, b"1")), "name-too-long"),
    "long path": (lambda g: good_tar(g, ("/".join(["d" * 200] * 6), b"1")), "name-too-long"),
    "long symlink target": (
        lambda g: tar([info("l", tarfile.SYMTYPE, link="a/" * 600)]),
        "invalid-name",
    ),
    "duplicate file": (lambda g: good_tar(g, ("adapter_config.json", b"{}")), "duplicate"),
    "file then directory": (
        lambda g: tar([("x", b"1"), info("x", tarfile.DIRTYPE)]),
        "duplicate",
    ),
    "directory then file": (
        lambda g: tar([info("x", tarfile.DIRTYPE), ("x", b"1")]),
        "duplicate",
    ),
    "member below a file": (lambda g: tar([("x", b"1"), ("x/y", b"2")]), "duplicate"),
    # damage
    "truncated member data": (_truncate(_data_cut), "truncated"),
    "truncated at a header": (_truncate(_header_cut), "truncated"),
    "truncated gzip": (lambda g: gzip.compress(good_tar(g))[:-40], "truncated"),
    "empty file": (lambda g: b"", "truncated"),
    "bad header checksum": (_bad_checksum, "corrupt"),
    "not a tar": (lambda g: b"this is not an archive\n" * 100, "corrupt"),
    "corrupt gzip": (lambda g: b"\x1f\x8b\x08\x00" + b"\xff" * 200, "corrupt"),
    # integrity
    "tampered file": (_tampered, "integrity"),
    "truncated file": (_truncated_file, "integrity"),
    "truncated file without manifest": (_truncated_no_manifest, "integrity"),
    "malformed safetensors without manifest": (
        lambda g: tar([("adapter_model.safetensors", _safetensors_junk())]),
        "integrity",
    ),
    "unlisted file": (_extra_file, "integrity"),
    "manifest not json": (_bad_manifest(b"{not json"), "integrity"),
    "manifest path outside": (_outside_manifest, "integrity"),
    "manifest of other content": (_lying_manifest, "integrity"),
}
