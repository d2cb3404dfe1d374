"""Tokenizer resolution: hook order, the offline Hugging Face cache loader, clear errors."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from tinkex_clients import (
    ServiceClient,
    TokenizerNotFoundError,
    hf_hub_cache_dir,
    load_local_tokenizer,
    tokenizer_id_for_model,
    tokenizer_search_paths,
)
from tinkex_clients._tokenizers import resolve_tokenizer
from tinkex_types import HFTokenizer, Hooks, hookimpl, make_plugin_manager

from .conftest import FakeTinker


def _write_tokenizer(directory: Path) -> None:
    vocab = {"<unk>": 0, "<eos>": 1, "hello": 2, "world": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>"}))


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # no test downloads anything; tests of the download step unset it explicitly
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TINKEX_TOKENIZER", "tinkex")
    return tmp_path / "hf"


def _cached_repo(hf_home: Path, repo: str) -> Path:
    repo_dir = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    _write_tokenizer(repo_dir / "snapshots" / "abc123")
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text("abc123")
    return repo_dir


def test_tokenizer_id_heuristics() -> None:
    assert tokenizer_id_for_model("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"
    assert tokenizer_id_for_model("org/model/variant") == "org/model"
    assert (
        tokenizer_id_for_model("meta-llama/Llama-3.1-8B")
        == "thinkingmachineslabinc/meta-llama-3-tokenizer"
    )
    assert tokenizer_id_for_model("x", "Qwen/Qwen3-8B:rev1") == "Qwen/Qwen3-8B"
    assert tokenizer_id_for_model("Qwen/Qwen3-8B:main") == "Qwen/Qwen3-8B"


def test_hf_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hf_hub_cache_dir() == tmp_path / "cache"


def test_loads_from_hf_cache_offline(hf_home: Path) -> None:
    repo = f"org/tok-{uuid.uuid4().hex[:8]}"
    _cached_repo(hf_home, repo)
    tok = load_local_tokenizer(repo)
    assert isinstance(tok, HFTokenizer)
    assert tok.encode("hello world") == [2, 3]
    assert tok.decode([2, 3]) == "hello world"
    assert tok.eos_token_id == 1
    assert load_local_tokenizer(repo) is tok  # cached


def test_loads_from_local_directory(tmp_path: Path) -> None:
    directory = tmp_path / f"tok-{uuid.uuid4().hex[:6]}"
    _write_tokenizer(directory)
    tok = load_local_tokenizer(str(directory))
    assert tok is not None
    assert tok.encode("world") == [3]


def test_not_found_error_lists_where_it_looked(hf_home: Path, private_hooks: Hooks) -> None:
    repo = f"nobody/missing-{uuid.uuid4().hex[:6]}"
    assert load_local_tokenizer(repo) is None
    with pytest.raises(TokenizerNotFoundError) as info:
        resolve_tokenizer(repo, private_hooks)
    text = str(info.value)
    assert repo in text
    assert str(hf_home / "hub") in text
    assert "tokenizer.json" in text
    assert next(str(p) for p in tokenizer_search_paths(repo)).endswith("tokenizer.json")


def test_other_plugins_answer_before_the_default(hf_home: Path) -> None:
    import tinkex_clients._plugin as clients_plugin

    repo = f"org/both-{uuid.uuid4().hex[:6]}"
    _cached_repo(hf_home, repo)
    sentinel = object()

    class Winner:
        @hookimpl
        def tinkex_resolve_tokenizer(self, name: str) -> Any:
            return sentinel if name == repo else None

    hooks = Hooks(make_plugin_manager(load_entrypoints=False, plugins=[clients_plugin, Winner()]))
    assert resolve_tokenizer(repo, hooks) is sentinel
    alone = Hooks(make_plugin_manager(load_entrypoints=False, plugins=[clients_plugin]))
    assert isinstance(resolve_tokenizer(repo, alone), HFTokenizer)


def test_training_and_sampling_clients_resolve_through_hooks(
    hf_home: Path, service: ServiceClient, fake: FakeTinker
) -> None:
    repo = f"org/served-{uuid.uuid4().hex[:6]}"
    _cached_repo(hf_home, repo)
    tc = service.create_lora_training_client(repo)
    tok = tc.get_tokenizer()
    assert tok.encode("hello") == [2]
    assert tc.get_tokenizer() is tok
    sc = service.create_sampling_client(base_model=repo)
    assert sc.get_tokenizer().encode("world") == [3]
