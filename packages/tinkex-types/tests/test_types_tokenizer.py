"""HFTokenizer over a small BPE tokenizer trained in the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer as RawTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from tinkex_types import HFTokenizer, Tokenizer

SPECIALS = ["<unk>", "<s>", "<|im_start|>", "<|im_end|>", "<pad>"]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = RawTokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(["hello world", "the quick brown fox jumps"] * 20, trainer)
    directory = tmp_path_factory.mktemp("tok")
    raw.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": {"content": "<|im_end|>", "lstrip": False},
                "pad_token": "<pad>",
            }
        )
    )
    return directory


def test_loads_directory_with_config(tok_dir: Path) -> None:
    tok = HFTokenizer.from_file(tok_dir)
    assert isinstance(tok, Tokenizer)
    assert tok.eos_token_id == SPECIALS.index("<|im_end|>")
    assert tok.bos_token_id == SPECIALS.index("<s>")
    assert tok.pad_token_id == SPECIALS.index("<pad>")
    assert tok.vocab_size >= len(SPECIALS) + 256
    assert tok.name_or_path == str(tok_dir)
    assert "HFTokenizer" in repr(tok)


def test_encode_decode_round_trip(tok_dir: Path) -> None:
    tok = HFTokenizer.from_file(tok_dir / "tokenizer.json")
    text = "hello the fox, 123 ünïcode"
    ids = tok.encode(text)
    assert all(isinstance(i, int) for i in ids)
    assert tok.decode(ids) == text
    assert tok.eos_token_id is None  # no config given: no special tokens known
    with_eos = [*ids, tok.backend.token_to_id("<|im_end|>")]
    assert tok.decode(with_eos, skip_special_tokens=True) == text


def test_chat_template_default_and_custom(tok_dir: Path) -> None:
    tok = HFTokenizer.from_file(tok_dir)
    messages = [{"role": "user", "content": "hello"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.apply_chat_template(messages, add_generation_prompt=True)
    assert isinstance(ids, list)
    assert ids[0] == SPECIALS.index("<|im_start|>")
    assert tok.decode(ids) == text
    custom = HFTokenizer.from_file(
        tok_dir / "tokenizer.json",
        {
            "bos_token": "<s>",
            "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}",
        },
    )
    assert custom.apply_chat_template(messages, tokenize=False) == "<s>[user]hello"
    failing = HFTokenizer.from_file(
        tok_dir / "tokenizer.json", {"chat_template": "{{ raise_exception('no system') }}"}
    )
    with pytest.raises(ValueError, match="no system"):
        failing.apply_chat_template(messages)


def test_named_templates_and_missing_files(tok_dir: Path, tmp_path: Path) -> None:
    tok = HFTokenizer.from_file(
        tok_dir / "tokenizer.json",
        {"chat_template": [{"name": "default", "template": "X{{ messages|length }}"}]},
    )
    assert tok.apply_chat_template([{"role": "user", "content": "a"}], tokenize=False) == "X1"
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        HFTokenizer.from_file(tmp_path)
    bad = tmp_path / "cfg.json"
    bad.write_text("[1]")
    with pytest.raises(ValueError, match="JSON object"):
        HFTokenizer.from_file(tok_dir / "tokenizer.json", bad)
