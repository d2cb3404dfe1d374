"""Tokenizers for the built-in models and for local Hugging Face-layout directories.

:func:`resolve_tokenizer` answers for built-in model names (the bundled BPE under
``tinkex_server/data/tokenizer/``) and for directories holding a ``tokenizer.json``; it
returns a :class:`tinkex_types.HFTokenizer` and is what this package's
``tinkex_resolve_tokenizer`` hook calls. This module does not import torch.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tinkex_server._builtin import builtin_tokenizer_dir, is_builtin_model
from tinkex_types import HFTokenizer

__all__ = ["resolve_tokenizer", "tokenizer_dir_for"]

_CACHE: dict[str, HFTokenizer] = {}
_CACHE_LOCK = threading.Lock()


def tokenizer_dir_for(name: str) -> Path | None:
    """The directory whose tokenizer serves model ``name`` (built-in or local dir), or None."""
    if is_builtin_model(name):
        return builtin_tokenizer_dir()
    try:
        path = Path(name).expanduser()
        if path.is_dir() and (path / "tokenizer.json").is_file():
            return path
    except (OSError, ValueError):
        return None
    return None


def resolve_tokenizer(name: str) -> HFTokenizer | None:
    """A tokenizer for a built-in model name or a local model directory, else ``None``.

    Results are cached; a local directory is keyed by its resolved path. The tokenizer's
    ``name_or_path`` is ``name`` as given.
    """
    directory = tokenizer_dir_for(name)
    if directory is None:
        return None
    key = name if is_builtin_model(name) else str(directory.resolve())
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is None:
            cached = HFTokenizer.from_file(directory, name_or_path=name)
            _CACHE[key] = cached
        return cached
