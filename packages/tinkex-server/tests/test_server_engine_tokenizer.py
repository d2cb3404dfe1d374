"""The bundled tokenizer, its build script, and the tokenizer-resolving hook."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tinkex_server import _plugin
from tinkex_server._builtin import (
    BOS_ID,
    EOS_ID,
    IM_END_ID,
    IM_START_ID,
    PAD_ID,
    VOCAB_SIZE,
    builtin_models,
    builtin_tokenizer_dir,
    is_builtin_model,
)
from tinkex_server._tokenizer import resolve_tokenizer
from tinkex_types import Hooks, Tokenizer, make_plugin_manager

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_tokenizer.py"


def test_bundled_tokenizer_round_trips_and_has_special_tokens() -> None:
    tok = resolve_tokenizer("tinkex/tiny-llama-1m")
    assert isinstance(tok, Tokenizer)
    assert tok.vocab_size == VOCAB_SIZE
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (PAD_ID, BOS_ID, EOS_ID)
    for text in [
        "Hello world! The answer is 42.",
        "Über naïve café 😀",
        "  two  spaces\n\tand tabs",
    ]:
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("123") == [tok.encode(d)[0] for d in "123"]  # digits split one by one
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>")
    assert ids[0] == IM_START_ID
    assert ids[-1] == IM_END_ID
    assert tok.decode(ids, skip_special_tokens=True) == "user\nhi"
    # Common words are single tokens (the BPE is trained, not byte-level only).
    assert len(tok.encode(" the")) == 1
    assert len(tok.encode("The quick brown fox jumps over the lazy dog.")) < 20


def test_chat_template() -> None:
    tok = resolve_tokenizer("tinkex/tiny-qwen3-100k")
    assert tok is not None
    messages = [{"role": "user", "content": "Say hello."}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.apply_chat_template(messages, add_generation_prompt=True)
    assert isinstance(ids, list)
    assert ids[0] == IM_START_ID
    assert tok.decode(ids) == text


def test_shipped_files_match_the_build_script() -> None:
    spec = importlib.util.spec_from_file_location("_tinkex_build_tokenizer", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = module.build()
    shipped = (builtin_tokenizer_dir() / "tokenizer.json").read_text(encoding="utf-8")
    assert built.to_str(pretty=False) == shipped
    assert len(shipped) < 64_000  # small package data


def test_resolver_hook_answers_for_builtins_and_local_dirs(tmp_path: Path) -> None:
    pm = make_plugin_manager(load_entrypoints=False, plugins=[_plugin])
    hooks = Hooks(pm)
    for name in builtin_models():
        assert is_builtin_model(name)
        tok = hooks.resolve_tokenizer(name)
        assert tok is not None
        assert tok.name_or_path == name
    assert hooks.resolve_tokenizer("meta-llama/Llama-3.2-1B") is None
    assert hooks.resolve_tokenizer(str(tmp_path)) is None  # a directory without tokenizer.json
    for fname in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / fname).write_bytes((builtin_tokenizer_dir() / fname).read_bytes())
    local = hooks.resolve_tokenizer(str(tmp_path))
    assert local is not None
    assert local.encode("hello there") == resolve_tokenizer("tinkex/tiny-llama-100k").encode(  # type: ignore[union-attr]
        "hello there"
    )
    assert hooks.resolve_tokenizer(str(tmp_path)) is local  # cached


@pytest.mark.parametrize("module", ["tinkex_server._plugin", "tinkex_server._tokenizer"])
def test_plugin_and_tokenizer_modules_do_not_import_torch(module: str) -> None:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"
