"""Tokenizer directories as transformers 5 writes them: ``chat_template.jinja`` next to
``tokenizer.json`` takes priority over the config's template, and ``special_tokens_map.json``
supplies or overrides special tokens in the legacy layout (no ``added_tokens_decoder``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer as RawTokenizer
from tokenizers import models, pre_tokenizers, trainers

from tinkex_types import HFTokenizer

SPECIALS = ["<unk>", "<s>", "</s>", "<|im_end|>", "<pad>"]
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


def _directory(root: Path, config: dict[str, object]) -> Path:
    raw = RawTokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=280,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(["hello world"] * 10, trainer)
    root.mkdir()
    raw.save(str(root / "tokenizer.json"))
    (root / "tokenizer_config.json").write_text(json.dumps(config))
    return root


def test_chat_template_jinja_wins_over_the_config(tmp_path: Path) -> None:
    directory = _directory(
        tmp_path / "t", {"eos_token": "</s>", "chat_template": "{{ 'from the config' }}"}
    )
    assert HFTokenizer.from_file(directory).apply_chat_template(MESSAGES, tokenize=False) == (
        "from the config"
    )
    (directory / "chat_template.jinja").write_text(
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    )
    tok = HFTokenizer.from_file(directory)
    text = tok.apply_chat_template(MESSAGES, tokenize=False)
    assert text == "<system>Be brief.</s><user>hi</s>"
    # A bare tokenizer.json path does not look for files next to it.
    assert HFTokenizer.from_file(directory / "tokenizer.json").chat_template is None


@pytest.mark.parametrize("decoder", [False, True])
def test_special_tokens_map(tmp_path: Path, decoder: bool) -> None:
    config: dict[str, object] = {"bos_token": "<s>", "eos_token": "</s>"}
    if decoder:
        config["added_tokens_decoder"] = {"2": {"content": "</s>", "special": True}}
    directory = _directory(tmp_path / "t", config)
    (directory / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "eos_token": {"content": "<|im_end|>", "lstrip": False},
                "pad_token": "<pad>",
                "additional_special_tokens": ["<unk>"],
            }
        )
    )
    tok = HFTokenizer.from_file(directory)
    assert tok.bos_token_id == SPECIALS.index("<s>")
    if decoder:  # transformers reads the map only in the legacy layout
        assert (tok.eos_token, tok.pad_token) == ("</s>", None)
    else:
        assert tok.eos_token_id == SPECIALS.index("<|im_end|>")
        assert tok.pad_token_id == SPECIALS.index("<pad>")
