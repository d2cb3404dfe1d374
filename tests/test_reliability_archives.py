"""Issue 17: the crafted-archive corpus (tests/archive_corpus.py) through
``RestClient.download_checkpoint`` and ``tinkex checkpoint download``, against the real
local server serving each crafted archive in place of a real checkpoint's archive.

Every case must raise :class:`tinkex_http.UnsafeArchiveError` with the expected reason,
leave the output directory exactly as it was (an existing destination included: the
downloads use ``force``), write nothing outside it and leave no temporary file.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinkex_clients import RestClient, ServiceClient
from tinkex_http import UnsafeArchiveError
from tinkex_server import get_local_server

sys.path.insert(0, str(Path(__file__).resolve().parent))

from archive_corpus import CASES, MANIFEST, Members

MODEL = "tinkex/tiny-llama-100k"
KEY = "tml-archive-corpus-key-0123456789"


@dataclass
class Served:
    """A real checkpoint on the local server, and where its cached archive lives."""

    data_dir: Path
    service: ServiceClient
    rest: RestClient
    path: str
    archive: Path
    good: Members

    def serve(self, content: bytes) -> None:
        """Make the server hand out ``content`` as this checkpoint's archive."""
        self.archive.write_bytes(content)
        future = time.time() + 3600
        os.utime(self.archive, (future, future))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("corpus") / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINKEX_DATA_DIR", str(data_dir))
        mp.delenv("TINKER_BASE_URL", raising=False)
        service = ServiceClient(base_url="local://", api_key=KEY)
        try:
            training = service.create_lora_training_client(MODEL, rank=2, seed=0)
            path = training.save_weights_for_sampler("corpus").result(120).path
            rest = service.create_rest_client()
            first = rest.download_checkpoint(path, data_dir.parent / "first").result(120)
            assert (first / MANIFEST).is_file()  # the real archive carries its manifest
            (archive,) = (data_dir / "archives").rglob("*.tar")
            with tarfile.open(archive) as tf:
                good = {
                    m.name: tf.extractfile(m).read()  # type: ignore[union-attr]
                    for m in tf.getmembers()
                }
            yield Served(data_dir, service, rest, path, archive, good)
        finally:
            service.close()
            get_local_server(data_dir).close()


def _snapshot(root: Path) -> dict[str, bytes | str | None]:
    out: dict[str, bytes | str | None] = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        out[key] = os.readlink(p) if p.is_symlink() else (p.read_bytes() if p.is_file() else None)
    return out


def _assert_untouched(before: dict[str, bytes | str | None], out: Path) -> None:
    assert _snapshot(out) == before
    assert (out.parent / "outside.txt").read_bytes() == b"original"
    assert not (out.parent / "evil.txt").exists()
    assert not Path("/tmp/evil-abs.txt").exists()


def _workspace(served: Served, tmp_path: Path) -> Path:
    """The output directory: an existing destination in it, canaries in and above it."""
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "outside.txt").write_bytes(b"original")
    (out / "outside.txt").write_bytes(b"original")
    run, kind, name = served.path.removeprefix("tinker://").split("/")
    dest = out / f"{run}_{kind}_{name}"
    dest.mkdir()
    (dest / "keep.txt").write_bytes(b"keep me")
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_rest_client_refuses(served: Served, tmp_path: Path, case: str) -> None:
    build, reason = CASES[case]
    served.serve(build(served.good))
    out = _workspace(served, tmp_path)
    before = _snapshot(out)
    with pytest.raises(UnsafeArchiveError) as info:
        served.rest.download_checkpoint(served.path, out, force=True).result(120)
    assert info.value.reason == reason, str(info.value)
    assert f"({reason})" in str(info.value)
    assert str(out) not in str(info.value)
    _assert_untouched(before, out)


def _cli(served: Served, out: Path) -> tuple[int, str]:
    from tinkex_cli import build_cli

    argv = ["--base-url", "local://", "--api-key", KEY, "checkpoint", "download", served.path]
    argv += ["-o", str(out), "--force", "--no-progress"]
    env = {"TINKEX_DATA_DIR": str(served.data_dir), "COLUMNS": "400"}
    result = CliRunner().invoke(build_cli(), argv, env=env, prog_name="tinkex")
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_refuses(served: Served, tmp_path: Path, case: str) -> None:
    build, reason = CASES[case]
    served.serve(build(served.good))
    out = _workspace(served, tmp_path)
    before = _snapshot(out)
    code, output = _cli(served, out)
    assert code == 1, output
    assert f"unsafe archive refused ({reason})" in output, output
    assert "Traceback" not in output
    _assert_untouched(before, out)


def test_the_real_archive_still_downloads(served: Served, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in served.good.items():
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tf.addfile(entry, io.BytesIO(data))
    served.serve(buf.getvalue())
    dest = served.rest.download_checkpoint(served.path, tmp_path).result(120)
    assert sorted(p.name for p in dest.iterdir()) == sorted(served.good)
    code, output = _cli(served, tmp_path / "cli")
    assert code == 0, output
