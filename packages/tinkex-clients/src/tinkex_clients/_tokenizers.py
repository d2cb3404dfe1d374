"""Tokenizer lookup: model name → tokenizer, through the ``tinkex_resolve_tokenizer`` hook.

The default implementation (registered last by this package's plugin) loads
``tokenizer.json`` offline from a local path or from the Hugging Face cache
(``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``:
``models--<org>--<name>/snapshots/<rev>/tokenizer.json``). Nothing is downloaded.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from tinkex_types import HFTokenizer, Hooks, TinkexError

__all__ = [
    "TokenizerNotFoundError",
    "hf_hub_cache_dir",
    "load_local_tokenizer",
    "resolve_tokenizer",
    "tokenizer_id_for_model",
    "tokenizer_search_paths",
]


class TokenizerNotFoundError(TinkexError, LookupError):
    """No plugin resolved the tokenizer and no local file was found (lists where it looked)."""


def tokenizer_id_for_model(model_name: str, tokenizer_id: str | None = None) -> str:
    """The tokenizer id to load for a model (tinkex-features.md §1.6).

    A ``tokenizer_id`` from ``get_info`` wins (anything after its first ``:`` is a revision
    and is dropped); otherwise ``meta-llama/Llama-3*`` maps to an ungated copy of that
    tokenizer and ``org/model/variant`` to ``org/model``.
    """
    if tokenizer_id:
        return tokenizer_id.split(":", 1)[0]
    name = model_name.split(":", 1)[0]
    if name.startswith("meta-llama/Llama-3"):
        return "thinkingmachineslabinc/meta-llama-3-tokenizer"
    if name.count("/") == 2 and not os.path.exists(name):
        org, model, _variant = name.split("/", 2)
        return f"{org}/{model}"
    return name


def hf_hub_cache_dir() -> Path:
    """Where Hugging Face keeps downloaded repositories on this machine."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _snapshot_dirs(repo_dir: Path) -> list[Path]:
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return []
    preferred: list[Path] = []
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        rev = ref.read_text(encoding="utf-8").strip()
        if rev and (snapshots / rev).is_dir():
            preferred.append(snapshots / rev)
    others = sorted(
        (p for p in snapshots.iterdir() if p.is_dir() and p not in preferred),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    return preferred + others


def tokenizer_search_paths(name: str) -> list[Path]:
    """Every place the default loader looks for ``name`` (in order)."""
    paths: list[Path] = []
    local = Path(name).expanduser()
    paths.append(local if local.name == "tokenizer.json" else local / "tokenizer.json")
    if "/" in name and not name.startswith(("/", ".", "~")):
        repo_dir = hf_hub_cache_dir() / ("models--" + name.replace("/", "--"))
        snaps = _snapshot_dirs(repo_dir)
        if snaps:
            paths.extend(s / "tokenizer.json" for s in snaps)
        else:
            paths.append(repo_dir / "snapshots" / "*" / "tokenizer.json")
    return paths


_cache: dict[str, HFTokenizer] = {}
_cache_lock = threading.Lock()


def load_local_tokenizer(name: str) -> HFTokenizer | None:
    """Load ``name`` from a local path or the Hugging Face cache; ``None`` if not found."""
    with _cache_lock:
        cached = _cache.get(name)
    if cached is not None:
        return cached
    for candidate in tokenizer_search_paths(name):
        if "*" in str(candidate) or not candidate.is_file():
            continue
        config = candidate.parent / "tokenizer_config.json"
        tok = HFTokenizer.from_file(
            candidate, config if config.is_file() else None, name_or_path=name
        )
        with _cache_lock:
            _cache[name] = tok
        return tok
    return None


def resolve_tokenizer(name: str, hooks: Hooks, fallbacks: tuple[str, ...] = ()) -> Any:
    """The first tokenizer a plugin resolves for ``name`` (then for each of ``fallbacks``);
    raises :class:`TokenizerNotFoundError` naming the places searched when none does."""
    names = [name, *(f for f in fallbacks if f and f != name)]
    for candidate in names:
        tok = hooks.resolve_tokenizer(candidate)
        if tok is not None:
            return tok
    looked = "\n  ".join(str(p) for n in names for p in tokenizer_search_paths(n))
    raise TokenizerNotFoundError(
        f"no tokenizer found for {name!r}: no plugin resolved it and no tokenizer.json was "
        f"found offline. Looked in:\n  {looked}\n"
        "Download it once (e.g. `huggingface-cli download <repo> tokenizer.json "
        "tokenizer_config.json`), or pass a local directory that holds tokenizer.json."
    )
