"""Tokenizers like the official client: local directory, Hugging Face cache, then a download
through huggingface_hub when online; transformers tokenizers when transformers is installed.
Nothing is downloaded from the internet: the hub is a local fake of its file routes, or the
download step is injected."""

from __future__ import annotations

import hashlib
import http.server
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tinkex_clients import (
    TokenizerNotFoundError,
    load_tokenizer,
    set_tokenizer_downloader,
)
from tinkex_clients._tokenizers import resolve_tokenizer
from tinkex_types import HFTokenizer, Hooks, make_plugin_manager

from .test_clients_tokenizers import _write_tokenizer


def _tokenizer_files(tmp_path: Path) -> dict[str, bytes]:
    source = tmp_path / "source"
    _write_tokenizer(source)
    return {p.name: p.read_bytes() for p in source.iterdir()}


class _FakeHub(http.server.ThreadingHTTPServer):
    """``HEAD``/``GET /<org>/<name>/resolve/<rev>/<file>`` as the hub answers them."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.seen: list[tuple[str, str, str | None]] = []
        super().__init__(("127.0.0.1", 0), _HubHandler)


class _HubHandler(http.server.BaseHTTPRequestHandler):
    server: _FakeHub

    def _answer(self, with_body: bool) -> None:
        self.server.seen.append((self.command, self.path, self.headers.get("authorization")))
        parts = self.path.split("?")[0].split("/")
        data = self.server.files.get(parts[-1]) if "resolve" in parts else None
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", "c" * 40)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def do_HEAD(self) -> None:
        self._answer(False)

    def do_GET(self) -> None:
        self._answer(True)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def online(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TINKEX_TOKENIZER", "tinkex")
    return tmp_path / "hf"


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_FakeHub]:
    hub = _FakeHub(_tokenizer_files(tmp_path))
    thread = threading.Thread(target=hub.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{hub.server_port}")
    try:
        yield hub
    finally:
        hub.shutdown()
        hub.server_close()


@pytest.fixture
def no_downloader() -> Iterator[None]:
    previous = set_tokenizer_downloader(None)
    try:
        yield
    finally:
        set_tokenizer_downloader(previous)


def _hooks() -> Hooks:
    import tinkex_clients._plugin as clients_plugin

    return Hooks(make_plugin_manager(load_entrypoints=False, plugins=[clients_plugin]))


def test_downloads_through_huggingface_hub_from_the_hub_routes(
    online: Path, fake_hub: _FakeHub, monkeypatch: pytest.MonkeyPatch, no_downloader: None
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    repo = f"org/dl-{uuid.uuid4().hex[:8]}"
    tok = resolve_tokenizer(repo, _hooks())
    assert isinstance(tok, HFTokenizer)
    assert tok.encode("hello world") == [2, 3]
    assert tok.eos_token_id == 1  # tokenizer_config.json came too
    files = [(path, auth) for _, path, auth in fake_hub.seen if "/resolve/" in path]
    paths = [path for path, _ in files]
    assert f"/{repo}/resolve/main/tokenizer.json" in paths
    assert f"/{repo}/resolve/main/tokenizer_config.json" in paths
    assert {auth for _, auth in files} == {"Bearer hf_test_token"}, files
    cached = online / "hub" / ("models--" + repo.replace("/", "--")) / "snapshots"
    assert (cached / ("c" * 40) / "tokenizer.json").is_file()
    # now in the cache: found again without the hub
    fake_hub.files.clear()
    assert load_tokenizer(repo).encode("world") == [3]


def test_offline_nothing_is_downloaded_and_the_error_says_how(
    online: Path, fake_hub: _FakeHub, monkeypatch: pytest.MonkeyPatch, no_downloader: None
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = f"org/off-{uuid.uuid4().hex[:8]}"
    with pytest.raises(TokenizerNotFoundError) as info:
        resolve_tokenizer(repo, _hooks())
    text = str(info.value)
    assert not [path for _, path, _ in fake_hub.seen if "/resolve/" in path]
    assert repo in text
    assert "HF_HUB_OFFLINE" in text
    assert f"hf download {repo} tokenizer.json" in text


def test_a_failed_download_is_explained(
    online: Path, fake_hub: _FakeHub, no_downloader: None
) -> None:
    fake_hub.files.clear()  # the hub has no such repository
    repo = f"org/none-{uuid.uuid4().hex[:8]}"
    with pytest.raises(TokenizerNotFoundError) as info:
        resolve_tokenizer(repo, _hooks())
    assert "the download failed" in str(info.value)
    assert repo in str(info.value)


def test_injected_downloader_and_search_order(online: Path, tmp_path: Path) -> None:
    calls: list[str] = []

    def download(name: str) -> Path:
        calls.append(name)
        target = tmp_path / "downloaded" / name.replace("/", "__")
        _write_tokenizer(target)
        return target

    previous = set_tokenizer_downloader(download)
    try:
        local = tmp_path / "local-dir"
        _write_tokenizer(local)
        assert load_tokenizer(str(local)).encode("hello") == [2]  # a directory: no download
        repo = f"org/inj-{uuid.uuid4().hex[:8]}"
        assert load_tokenizer(repo).encode("world") == [3]
        assert load_tokenizer(repo) is load_tokenizer(repo)
        assert calls == [repo]
    finally:
        set_tokenizer_downloader(previous)


def test_transformers_tokenizer_when_installed(
    online: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("TINKEX_TOKENIZER", "auto")
    directory = tmp_path / f"hf-{uuid.uuid4().hex[:6]}"
    _write_tokenizer(directory)
    tok = load_tokenizer(str(directory))
    assert isinstance(tok, transformers.PreTrainedTokenizerBase)
    assert tok.encode("hello world") == [2, 3]
    assert tok.eos_token_id == 1


def test_bad_tokenizer_kind_names_the_variable(
    online: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tinkex_types import TinkexValidationError

    monkeypatch.setenv("TINKEX_TOKENIZER", "sentencepiece")
    directory = tmp_path / f"bad-{uuid.uuid4().hex[:6]}"
    _write_tokenizer(directory)
    with pytest.raises(TinkexValidationError) as info:
        load_tokenizer(str(directory))
    assert info.value.field == "TINKEX_TOKENIZER"
