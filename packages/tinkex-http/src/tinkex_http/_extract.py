"""Safe extraction of a checkpoint archive (tinkex-features.md §10; issue 17, findings 4-6).

:func:`extract_archive_safely` reads a tar (plain, gzip, bzip2 or xz) as a stream and writes
it into a fresh temporary directory next to the destination, which is renamed into place
only when every member passed and the content matched its manifest. Refused, each as an
:class:`UnsafeArchiveError` naming the reason (:data:`REASONS`):

* names: empty, absolute, with ``..``, over :data:`MAX_NAME_BYTES` per component or
  :data:`MAX_PATH_BYTES` in all; the same name twice (a file then a directory of that
  name too); a member below a file or a symbolic link of the archive;
* types: devices, FIFOs, sparse files, unknown types; setuid/setgid files; symbolic links
  that leave the destination (absolute, ``..`` past the root, or through other links);
  hard links to anything but an earlier regular file of the archive;
* sizes: more than ``max_members`` members; declared or decompressed content over
  :func:`extraction_limit` (``max_expansion`` times the archive's own size, at least
  :data:`EXPANSION_FLOOR`, never over ``max_total_bytes``); extended headers over
  :data:`MAX_HEADER_BYTES`;
* damage: a truncated or corrupt tar or compressed stream; member data that ends early;
* integrity: with ``tinkex_manifest.json`` in the archive, every listed file must match its
  size and SHA-256 and no unlisted file may appear; without one, each ``*.safetensors``
  file must be complete by its own header (:mod:`tinkex_types.manifest`). The SHA-256 of
  each regular file is computed while it is written (hashlib releases the GIL), so the
  check does not read the extracted files again.

On any failure the destination is left exactly as it was and the temporary directory is
removed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, cast

from tinkex_http._extract_checks import (
    DEFAULT_MAX_ARCHIVE_BYTES,
    DEFAULT_MAX_EXPANSION,
    DEFAULT_MAX_MEMBERS,
    MAX_PATH_BYTES,
    ArchiveTooLargeError,
    BudgetReader,
    SafeTarInfo,
    UnsafeArchiveError,
    extraction_limit,
    member_parts,
    open_decompressed,
)
from tinkex_http._growing import HashThread, PipeReader, write_all
from tinkex_types import TinkexValidationError
from tinkex_types.manifest import MANIFEST_FILE, ManifestEntry, manifest_problem, read_manifest

__all__ = ["MARKER_FILE", "extract_archive_safely", "extract_file_safely"]

#: Bytes per read of the archive stream and per copy of a member (few, large copies).
CHUNK_SIZE = 1024 * 1024
#: Members from this size on are hashed in a thread of their own while they are written.
THREADED_HASH = 4 * 1024 * 1024
#: The empty marker file at the root of a checkpoint archive (not in its manifest).
MARKER_FILE = "checkpoint_complete"
#: Errors of the environment (not of the archive): re-raised as they are.
_ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO}
)


def _inside(root: str, path: str) -> bool:
    try:
        return os.path.commonpath([root, path]) == root
    except ValueError:
        return False


@dataclass
class _State:
    """What one extraction has seen so far."""

    root: Path
    limit: int | None
    max_members: int | None
    #: ``expansion`` when the limit is the one relative to the archive's size
    limit_reason: str = "too-large"
    real_root: str = ""
    total: int = 0
    count: int = 0
    kinds: dict[tuple[str, ...], str] = field(default_factory=dict)
    links: list[Path] = field(default_factory=list)
    #: size and SHA-256 of each regular file written, by its ``/``-joined name
    digests: dict[str, ManifestEntry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.real_root = os.path.realpath(self.root)


class _Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


class _FileRange:
    """``readinto`` of a member's data straight from a plain tar file (``os.preadv`` at
    its offset: no copy through tarfile's stream buffers)."""

    def __init__(self, fd: int, offset: int) -> None:
        self._fd = fd
        self._offset = offset

    def readinto(self, view: memoryview) -> int:
        n = os.preadv(self._fd, [view], self._offset)
        self._offset += n
        return n


def _create(dst: Path, mode: int) -> int:
    """A new file (never through a link) for a member of mode ``mode``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.open(dst, flags | getattr(os, "O_BINARY", 0), (mode & 0o755) | 0o600)


def _truncated(name: str, got: int, size: int) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"archive member {name!r} is truncated ({got} of {size} bytes)", reason="truncated"
    )


def _copy_member(src: _Readable, dst: Path, size: int, mode: int, name: str) -> ManifestEntry:
    """Write ``size`` bytes of ``src`` to the new file ``dst`` through one reused buffer;
    returns their size and SHA-256 (hashed as they pass; hashlib releases the GIL)."""
    fd = _create(dst, mode)
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(min(CHUNK_SIZE, max(size, 1))))
    try:
        remaining = size
        while remaining > 0:
            got = src.readinto(buffer[: min(len(buffer), remaining)])
            if not got:
                raise _truncated(name, size - remaining, size)
            block = buffer[:got]
            digest.update(block)
            write_all(fd, block)
            remaining -= got
    finally:
        os.close(fd)
    return ManifestEntry(size=size, sha256=digest.hexdigest())


def _copy_views(reader: PipeReader, dst: Path, size: int, mode: int, name: str) -> ManifestEntry:
    """:func:`_copy_member` straight from the downloaded chunks (no copy into a buffer);
    a large member is hashed in a thread of its own while it is written."""
    fd = _create(dst, mode)
    hasher = HashThread() if size >= THREADED_HASH else None
    digest = hashlib.sha256()
    got = 0
    try:
        for view in reader.views(size):
            if hasher is not None:
                hasher.feed(view)
            else:
                digest.update(view)
            write_all(fd, view)
            got += len(view)
    finally:
        os.close(fd)
        if hasher is not None:
            hasher.close()
    if got < size:
        raise _truncated(name, got, size)
    sha256 = hasher.hexdigest() if hasher is not None else digest.hexdigest()
    return ManifestEntry(size=size, sha256=sha256)


def _check_type(member: tarfile.TarInfo) -> str:
    """The kind of a member (``dir``, ``file``, ``symlink``, ``hardlink``) or a refusal."""
    name = member.name
    if member.ischr() or member.isblk():
        raise UnsafeArchiveError(f"archive member {name!r} is a device file", reason="device")
    if member.isfifo():
        raise UnsafeArchiveError(f"archive member {name!r} is a FIFO", reason="fifo")
    if member.issparse():
        raise UnsafeArchiveError(f"archive member {name!r} is a sparse file", reason="sparse")
    if member.isfile() and member.mode & 0o6000:  # (setgid on directories is harmless)
        raise UnsafeArchiveError(
            f"archive member {name!r} has the setuid/setgid bit (mode {member.mode:o})",
            reason="setuid",
        )
    if member.isdir():
        return "dir"
    if member.isfile():
        return "file"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    raise UnsafeArchiveError(
        f"archive member {name!r} has an unsupported type {member.type!r}",
        reason="unsupported-type",
    )


def _check_place(state: _State, member: tarfile.TarInfo, parts: tuple[str, ...], kind: str) -> bool:
    """Refuse duplicates and members below files or links; False for a repeated directory."""
    for i in range(1, len(parts)):
        above = state.kinds.get(parts[:i])
        if above is not None and above != "dir":
            raise UnsafeArchiveError(
                f"archive member {member.name!r} lies below the {above} {'/'.join(parts[:i])!r}",
                reason="link-escape" if above == "symlink" else "duplicate",
            )
    seen = state.kinds.get(parts)
    if seen is not None:
        if seen == "dir" and kind == "dir":
            return False
        raise UnsafeArchiveError(
            f"archive member {member.name!r} appears twice (a {seen}, then a {kind})",
            reason="duplicate",
        )
    for i in range(1, len(parts)):
        state.kinds.setdefault(parts[:i], "dir")
    state.kinds[parts] = kind
    return True


def _place_symlink(state: _State, member: tarfile.TarInfo, target: Path) -> None:
    link = member.linkname
    what = f"symlink {member.name!r} -> {link!r}"
    if not link or "\x00" in link or len(os.fsencode(link)) > MAX_PATH_BYTES:
        raise UnsafeArchiveError(f"{what} has an empty or invalid target", reason="invalid-name")
    if os.path.isabs(link) or re.match(r"^[A-Za-z]:", link):
        raise UnsafeArchiveError(f"{what} points to an absolute path", reason="link-escape")
    lexical = os.path.normpath(os.path.join(os.path.dirname(target), link))
    if not _inside(os.path.normpath(state.root), lexical):
        raise UnsafeArchiveError(f"{what} points outside the destination", reason="link-escape")
    os.symlink(link, target)
    state.links.append(target)
    if not _inside(state.real_root, os.path.realpath(target)):
        raise UnsafeArchiveError(f"{what} resolves outside the destination", reason="link-escape")


def _place_hardlink(state: _State, member: tarfile.TarInfo, target: Path) -> None:
    what = f"hard link {member.name!r} -> {member.linkname!r}"
    src = member_parts(member.linkname, f"target of hard link {member.name!r}")
    if state.kinds.get(src) != "file":
        raise UnsafeArchiveError(
            f"{what} does not point to an earlier regular file of the archive",
            reason="link-escape",
        )
    source = state.root.joinpath(*src)
    if not _inside(state.real_root, os.path.realpath(source)) or source.is_symlink():
        raise UnsafeArchiveError(f"{what} points outside the destination", reason="link-escape")
    os.link(source, target)


#: Where member data comes from: the received chunks (a download being read), a plain tar
#: file's descriptor (read at each member's offset), or ``None`` (tarfile's own stream).
_Direct = PipeReader | int | None


def _place(
    state: _State, tf: tarfile.TarFile, member: tarfile.TarInfo, kind: str, direct: _Direct
) -> None:
    parts = member_parts(member.name, "archive member")
    if not parts or not _check_place(state, member, parts, kind):
        return  # "./" itself, or a directory named again
    target = state.root.joinpath(*parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not _inside(state.real_root, os.path.realpath(target.parent)):
        raise UnsafeArchiveError(
            f"archive member {member.name!r} escapes the destination", reason="link-escape"
        )
    if kind == "dir":
        target.mkdir(exist_ok=True)
    elif kind == "symlink":
        _place_symlink(state, member, target)
    elif kind == "hardlink":
        _place_hardlink(state, member, target)
    else:
        if isinstance(direct, PipeReader):
            if direct.tell() != member.offset_data:  # tarfile read past the header: not ours
                raise UnsafeArchiveError(f"archive member {member.name!r} cannot be read")
            entry = _copy_views(direct, target, member.size, member.mode, member.name)
        elif direct is not None:
            src = _FileRange(direct, member.offset_data)
            entry = _copy_member(src, target, member.size, member.mode, member.name)
        else:
            data = tf.extractfile(member)  # an io.BufferedReader
            if data is None:
                raise UnsafeArchiveError(f"archive member {member.name!r} cannot be read")
            with data:
                reader = cast(_Readable, data)
                entry = _copy_member(reader, target, member.size, member.mode, member.name)
        state.digests["/".join(parts)] = entry


def _count(state: _State, member: tarfile.TarInfo, kind: str) -> None:
    state.count += 1
    if state.max_members is not None and state.count > state.max_members:
        raise ArchiveTooLargeError(
            f"archive has more than {state.max_members} members", reason="too-many-members"
        )
    if kind == "file":
        state.total += member.size
        if state.limit is not None and state.total > state.limit:
            relative = (
                " (relative to the archive's size)" if state.limit_reason != "too-large" else ""
            )
            raise ArchiveTooLargeError(
                f"archive content exceeds the {state.limit}-byte limit{relative} "
                f"(member {member.name!r} brings it to {state.total} bytes)",
                reason=state.limit_reason,
            )


def _run(state: _State, stream: IO[bytes], plain: IO[bytes] | None) -> None:
    """Extract every member. ``plain``: the archive is an uncompressed tar file, read with
    seeks (headers by tarfile, member data straight from the file); else ``stream`` is
    read once, front to back."""
    try:
        if plain is not None:
            tf = tarfile.open(fileobj=plain, mode="r:", tarinfo=SafeTarInfo)  # noqa: SIM115
        else:
            tf = tarfile.open(  # noqa: SIM115
                fileobj=stream, mode="r|", tarinfo=SafeTarInfo, bufsize=CHUNK_SIZE
            )
    except tarfile.TarError as exc:
        raise UnsafeArchiveError(f"not a readable tar archive: {exc}", reason="not-a-tar") from None
    direct: _Direct = plain if isinstance(plain, PipeReader) else None
    if plain is not None and direct is None:
        direct = plain.fileno()
    with tf:
        while (member := tf.next()) is not None:
            member_parts(member.name, "archive member")
            kind = _check_type(member)
            _count(state, member, kind)
            _place(state, tf, member, kind, direct)
    while plain is None and stream.read(CHUNK_SIZE):  # a compressed stream's checksum, end
        pass
    for link in state.links:  # a later link may have changed what an earlier one resolves to
        if not _inside(state.real_root, os.path.realpath(link)):
            raise UnsafeArchiveError(
                f"symlink {link.name!r} resolves outside the destination", reason="link-escape"
            )


def _as_refusal(exc: BaseException) -> UnsafeArchiveError | None:
    """The refusal a low-level failure of extraction means (None: not the archive's)."""
    if isinstance(exc, tarfile.ReadError) and "unexpected end" in str(exc):
        return UnsafeArchiveError(f"the archive is truncated ({exc})", reason="truncated")
    if isinstance(exc, tarfile.TarError):
        return UnsafeArchiveError(f"corrupt tar archive: {exc}", reason="corrupt")
    if isinstance(exc, OSError) and exc.errno not in _ENVIRONMENT_ERRNOS:
        reason = "name-too-long" if exc.errno == errno.ENAMETOOLONG else "corrupt"
        return UnsafeArchiveError(
            f"archive member cannot be extracted safely ({exc.strerror or exc})", reason=reason
        )
    return None


def _extract_into(
    raw: IO[bytes],
    size: int,
    root: Path,
    *,
    max_total_bytes: int | None,
    max_members: int | None,
    max_expansion: float | None,
) -> dict[str, ManifestEntry]:
    """Extract the archive file ``raw`` (``size`` bytes) into ``root``; returns the size and
    SHA-256 of every regular file written."""
    limit = extraction_limit(size, max_total_bytes, max_expansion)
    absolute = extraction_limit(size, max_total_bytes, None)
    reason = "too-large" if limit is None or limit == absolute else "expansion"
    state = _State(root=root, limit=limit, max_members=max_members, limit_reason=reason)
    # tar headers and padding come on top of the content: allow 2x plus 1 MiB of them
    budget = None if limit is None else 2 * limit + 1024 * 1024
    inner = open_decompressed(raw)
    stream = BudgetReader(inner, budget)
    try:
        _run(state, stream, raw if inner is raw else None)  # type: ignore[arg-type]
    except UnsafeArchiveError:
        raise
    except (tarfile.TarError, OSError) as exc:
        refusal = _as_refusal(exc)
        if refusal is None:
            raise
        raise refusal from None
    return state.digests


def _digest_problem(
    root: Path, entries: dict[str, ManifestEntry], digests: dict[str, ManifestEntry]
) -> str | None:
    """:func:`tinkex_types.manifest.manifest_problem` (``exact``) for files whose digests
    were taken while they were written: the same findings, without reading them again."""
    for name, want in entries.items():
        path = root / name
        if path.is_symlink() or not path.is_file():
            return f"{name} is missing (listed in {MANIFEST_FILE})"
        got = digests[name]
        if got.size != want.size:
            return (
                f"{name} is {got.size} bytes but {MANIFEST_FILE} records {want.size} "
                "(truncated or changed)"
            )
        if got.sha256 != want.sha256:
            return f"{name} does not match its SHA-256 in {MANIFEST_FILE} (corrupt or tampered)"
    files = {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and p.name != MANIFEST_FILE
    }
    unlisted = sorted(files - set(entries) - {MARKER_FILE})
    return f"{unlisted[0]} is not listed in {MANIFEST_FILE}" if unlisted else None


def _verify(root: Path, verify: bool, digests: dict[str, ManifestEntry]) -> None:
    if not verify:
        return
    try:
        entries = read_manifest(root)
    except ValueError as exc:
        problem: str | None = str(exc)
    else:
        if entries is not None and all(name in digests for name in entries):
            problem = _digest_problem(root, entries, digests)
        else:  # no manifest, or a listed file that is a hard link: read the files
            problem = manifest_problem(root, exact=True, ignore=(MARKER_FILE,))
    if problem is not None:
        raise UnsafeArchiveError(f"integrity check failed: {problem}", reason="integrity")


def _swap_into_place(tmp: Path, dest: Path) -> None:
    if not (dest.exists() or dest.is_symlink()):
        tmp.rename(dest)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    backup.rmdir()
    dest.rename(backup)
    try:
        tmp.rename(dest)
    except BaseException:
        backup.rename(dest)
        raise
    if backup.is_dir() and not backup.is_symlink():
        shutil.rmtree(backup, ignore_errors=True)
    else:
        backup.unlink()


def extract_archive_safely(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    max_total_bytes: int | None = DEFAULT_MAX_ARCHIVE_BYTES,
    max_members: int | None = DEFAULT_MAX_MEMBERS,
    max_expansion: float | None = DEFAULT_MAX_EXPANSION,
    verify: bool = True,
) -> Path:
    """Extract ``archive`` into the directory ``dest`` atomically (see module docstring).

    ``dest`` must not exist unless ``overwrite``; on any failure it is left exactly as it
    was and the temporary directory is removed. ``verify=False`` skips the integrity
    check (not the safety checks). Returns ``dest``.
    """
    archive_path = Path(archive)
    if not archive_path.is_file():
        raise TinkexValidationError("archive", f"no such file: {str(archive_path)!r}")
    with open(archive_path, "rb") as raw:
        return extract_file_safely(
            raw,
            archive_path.stat().st_size,
            dest,
            overwrite=overwrite,
            max_total_bytes=max_total_bytes,
            max_members=max_members,
            max_expansion=max_expansion,
            verify=verify,
        )


def extract_file_safely(
    raw: IO[bytes],
    size: int,
    dest: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    max_total_bytes: int | None = DEFAULT_MAX_ARCHIVE_BYTES,
    max_members: int | None = DEFAULT_MAX_MEMBERS,
    max_expansion: float | None = DEFAULT_MAX_EXPANSION,
    verify: bool = True,
) -> Path:
    """:func:`extract_archive_safely` of an opened, seekable archive file of ``size`` bytes
    (a :class:`tinkex_http._growing.PipeReader`: a download read as it arrives)."""
    dest_path = Path(dest)
    if (dest_path.exists() or dest_path.is_symlink()) and not overwrite:
        raise TinkexValidationError(
            "dest", f"{str(dest_path)!r} already exists", "pass overwrite=True (CLI: --force)"
        )
    dest_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest_path.name[:40]}.partial-", dir=dest_path.parent))
    try:
        digests = _extract_into(
            raw,
            size,
            tmp,
            max_total_bytes=max_total_bytes,
            max_members=max_members,
            max_expansion=max_expansion,
        )
        finished = getattr(raw, "wait_finished", None)
        if finished is not None:  # a file still being downloaded: never place it before
            finished()
        _verify(tmp, verify, digests)
        _swap_into_place(tmp, dest_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest_path
