"""The tokenizer interface shared by the clients and the server, and a Hugging Face
``tokenizers``-backed implementation loaded from local files."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["DEFAULT_CHAT_TEMPLATE", "HFTokenizer", "Tokenizer", "require_tokenizers"]

#: ChatML, used when ``tokenizer_config.json`` has no ``chat_template``.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@runtime_checkable
class Tokenizer(Protocol):
    """What tinkex needs from a tokenizer (a subset of the ``transformers`` interface)."""

    @property
    def name_or_path(self) -> str: ...

    @property
    def eos_token_id(self) -> int | None: ...

    @property
    def bos_token_id(self) -> int | None: ...

    @property
    def pad_token_id(self) -> int | None: ...

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str: ...

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        tokenize: bool = True,
        add_generation_prompt: bool = False,
        **kwargs: Any,
    ) -> list[int] | str: ...


def require_tokenizers() -> Any:
    """Import the ``tokenizers`` package or raise an ImportError that says what to install."""
    try:
        import tokenizers
    except ImportError as exc:  # pragma: no cover - present in every test env
        raise ImportError(
            "HFTokenizer needs the Hugging Face 'tokenizers' package: "
            "`pip install tokenizers` (or `pip install tinkex-types[hf]`)"
        ) from exc
    return tokenizers


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        content = value.get("content")
        return content if isinstance(content, str) else None
    return None


def _read_object(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        loaded = json.load(fh)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return loaded


class HFTokenizer:
    """A :class:`Tokenizer` over a ``tokenizers.Tokenizer``.

    Special tokens (``bos_token``, ``eos_token``, ``pad_token``) and the ``chat_template``
    come from ``tokenizer_config.json`` when given; ``eos_token``/``bos_token`` may also be
    passed directly.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        name_or_path: str = "",
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        chat_template: str | None = None,
    ) -> None:
        self._tok = tokenizer
        self._name = name_or_path
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.pad_token = pad_token
        self.chat_template = chat_template

    # -- loading ------------------------------------------------------------------------
    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        tokenizer_config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        *,
        name_or_path: str | None = None,
    ) -> HFTokenizer:
        """Load ``tokenizer.json`` (or a directory holding it), the way transformers 5 reads
        a directory.

        Next to ``tokenizer.json`` (directory form): ``tokenizer_config.json`` gives the
        special tokens and ``chat_template``; ``chat_template.jinja`` (where transformers >= 5
        saves the template) takes priority over the config's template; when the config has
        no ``added_tokens_decoder`` (the legacy layout), ``special_tokens_map.json`` entries
        override its ``bos_token``/``eos_token``/``pad_token``.
        """
        tokenizers = require_tokenizers()
        p = Path(path)
        directory: Path | None = None
        config_path: Path | None = None
        if p.is_dir():
            directory = p
            p = directory / "tokenizer.json"
            if (directory / "tokenizer_config.json").is_file():
                config_path = directory / "tokenizer_config.json"
        if not p.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {p}")
        config: dict[str, Any] = {}
        if isinstance(tokenizer_config, Mapping):
            config = dict(tokenizer_config)
        else:
            if tokenizer_config is not None:
                config_path = Path(tokenizer_config)
            if config_path is not None:
                config = _read_object(config_path)
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: use "default"
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        if directory is not None:
            jinja = directory / "chat_template.jinja"
            if jinja.is_file():
                template = jinja.read_text(encoding="utf-8")
            special_map = directory / "special_tokens_map.json"
            if special_map.is_file() and "added_tokens_decoder" not in config:
                for key, value in _read_object(special_map).items():
                    if key in ("bos_token", "eos_token", "pad_token"):
                        config[key] = value
        return cls(
            tokenizers.Tokenizer.from_file(str(p)),
            name_or_path=name_or_path or str(Path(path)),
            bos_token=_token_text(config.get("bos_token")),
            eos_token=_token_text(config.get("eos_token")),
            pad_token=_token_text(config.get("pad_token")),
            chat_template=template if isinstance(template, str) else None,
        )

    # -- Tokenizer ----------------------------------------------------------------------
    @property
    def name_or_path(self) -> str:
        return self._name

    @property
    def backend(self) -> Any:
        """The wrapped ``tokenizers.Tokenizer``."""
        return self._tok

    def _id(self, token: str | None) -> int | None:
        if token is None:
            return None
        found = self._tok.token_to_id(token)
        return int(found) if found is not None else None

    @property
    def eos_token_id(self) -> int | None:
        return self._id(self.eos_token)

    @property
    def bos_token_id(self) -> int | None:
        return self._id(self.bos_token)

    @property
    def pad_token_id(self) -> int | None:
        return self._id(self.pad_token)

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        tokenize: bool = True,
        add_generation_prompt: bool = False,
        **kwargs: Any,
    ) -> list[int] | str:
        """Render ``messages`` with the chat template (ChatML when there is none).

        Returns token ids (``tokenize=True``, special tokens in the text are parsed, no
        extra BOS is added) or the rendered text.
        """
        try:
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError as exc:  # pragma: no cover - jinja2 comes with torch
            raise ImportError("apply_chat_template needs 'jinja2': `pip install jinja2`") from exc

        def raise_exception(message: str) -> None:
            raise ValueError(f"chat template error: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        template = env.from_string(self.chat_template or DEFAULT_CHAT_TEMPLATE)
        text = template.render(
            messages=[dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
            pad_token=self.pad_token or "",
            **kwargs,
        )
        if not tokenize:
            return text
        return self.encode(text, add_special_tokens=False)

    def __repr__(self) -> str:
        return f"HFTokenizer({self._name!r}, vocab_size={self.vocab_size})"
