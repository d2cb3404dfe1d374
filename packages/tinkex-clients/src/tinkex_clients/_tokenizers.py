"""Tokenizer lookup: model name → tokenizer, through the ``tinkex_resolve_tokenizer`` hook.

The default implementation (registered last by this package's plugin), like the official
client: a local directory holding ``tokenizer.json``, then the Hugging Face cache
(``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``:
``models--<org>--<name>/snapshots/<rev>/tokenizer.json``), then a download through
``huggingface_hub`` when it is installed and the machine is online (``HF_HUB_OFFLINE``
unset; ``HF_TOKEN`` is sent for gated repositories). The tokenizer is a ``transformers``
one when transformers is installed (``pip install 'tinkex[hf]'``), else tinkex's own
:class:`~tinkex_types.HFTokenizer`; ``TINKEX_TOKENIZER=tinkex|transformers`` chooses.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinkex_types import HFTokenizer, Hooks, TinkexError, TinkexValidationError

__all__ = [
    "TOKENIZER_FILES",
    "TokenizerNotFoundError",
    "hf_hub_cache_dir",
    "hub_download_tokenizer",
    "load_local_tokenizer",
    "load_tokenizer",
    "resolve_tokenizer",
    "set_tokenizer_downloader",
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


_cache: dict[str, Any] = {}
_cache_lock = threading.Lock()


def load_local_tokenizer(name: str) -> Any:
    """Load ``name`` from a local path or the Hugging Face cache; ``None`` if not found."""
    with _cache_lock:
        cached = _cache.get(name)
    if cached is not None:
        return cached
    for candidate in tokenizer_search_paths(name):
        if "*" in str(candidate) or not candidate.is_file():
            continue
        tok = _load_file(candidate, name)
        with _cache_lock:
            _cache[name] = tok
        return tok
    return None


#: The files a tokenizer download fetches (the first is required).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)

#: ``name -> directory holding tokenizer.json`` (or ``None``): the download step.
Downloader = Callable[[str], "Path | None"]
_downloader: Downloader | None = None


def set_tokenizer_downloader(downloader: Downloader | None) -> Downloader | None:
    """Replace the download step (``None``: ``huggingface_hub``); returns the previous one."""
    global _downloader
    previous, _downloader = _downloader, downloader
    return previous


def hf_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def hub_download_tokenizer(name: str) -> Path | None:
    """Download the tokenizer files of repository ``name`` into the Hugging Face cache with
    ``huggingface_hub`` (``HF_ENDPOINT``, ``HF_TOKEN`` honoured); ``None`` without it."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError:
        return None
    # read now, not when huggingface_hub was imported: the cache is where we look, too
    options: dict[str, Any] = {
        "token": os.environ.get("HF_TOKEN") or None,
        "endpoint": os.environ.get("HF_ENDPOINT") or None,
        "cache_dir": str(hf_hub_cache_dir()),
    }
    first = Path(hf_hub_download(name, TOKENIZER_FILES[0], **options))
    for extra in TOKENIZER_FILES[1:]:
        with contextlib.suppress(EntryNotFoundError):
            hf_hub_download(name, extra, **options)
    return first.parent


def _tokenizer_kind() -> str:
    kind = os.environ.get("TINKEX_TOKENIZER", "auto").strip().lower() or "auto"
    if kind not in ("auto", "transformers", "tinkex"):
        raise TinkexValidationError(
            "TINKEX_TOKENIZER", f"must be auto, transformers or tinkex, got {kind!r}"
        )
    if kind == "auto":
        return "transformers" if importlib.util.find_spec("transformers") else "tinkex"
    return kind


def _load_file(tokenizer_json: Path, name: str) -> Any:
    if _tokenizer_kind() == "transformers":
        try:
            from transformers import AutoTokenizer  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise TinkexValidationError(
                "TINKEX_TOKENIZER",
                "is 'transformers' but transformers is not installed",
                "pip install 'tinkex[hf]' (or unset TINKEX_TOKENIZER)",
            ) from None
        return AutoTokenizer.from_pretrained(str(tokenizer_json.parent))
    config = tokenizer_json.parent / "tokenizer_config.json"
    return HFTokenizer.from_file(
        tokenizer_json, config if config.is_file() else None, name_or_path=name
    )


def _is_repo_id(name: str) -> bool:
    return (
        name.count("/") == 1
        and not name.startswith(("/", ".", "~"))
        and not Path(name).expanduser().exists()
    )


def load_tokenizer(name: str) -> Any:
    """Local directory, then the Hugging Face cache, then a download (when online);
    ``None`` if none of them has ``name``'s tokenizer."""
    found = load_local_tokenizer(name)
    if found is not None or not _is_repo_id(name) or hf_offline():
        return found
    downloader = _downloader or hub_download_tokenizer
    try:
        directory = downloader(name)
    except Exception as exc:
        _log_download_failure(name, exc)
        return None
    if directory is None or not (Path(directory) / "tokenizer.json").is_file():
        return None
    tok = _load_file(Path(directory) / "tokenizer.json", name)
    with _cache_lock:
        _cache[name] = tok
    return tok


_download_errors: dict[str, str] = {}


def _log_download_failure(name: str, exc: BaseException) -> None:
    text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    _download_errors[name] = f"{type(exc).__name__}: {text}"


def _not_found_message(names: list[str]) -> str:
    looked = "\n  ".join(str(p) for n in names for p in tokenizer_search_paths(n))
    repo = names[0]
    if hf_offline():
        why = "HF_HUB_OFFLINE is set, so nothing was downloaded"
    elif importlib.util.find_spec("huggingface_hub") is None:
        why = "huggingface_hub is not installed, so nothing was downloaded"
    elif repo in _download_errors:
        why = f"the download failed ({_download_errors[repo]})"
    else:
        why = "no download was possible"
    return (
        f"no tokenizer found for {repo!r}: {why}; no plugin resolved it and no "
        f"tokenizer.json was found locally. Looked in:\n  {looked}\n"
        f"Fetch it once with `hf download {repo} tokenizer.json tokenizer_config.json` "
        f"(older huggingface_hub: `huggingface-cli download {repo} tokenizer.json "
        "tokenizer_config.json`; gated repositories need HF_TOKEN), or pass a local "
        "directory that holds tokenizer.json."
    )


def resolve_tokenizer(name: str, hooks: Hooks, fallbacks: tuple[str, ...] = ()) -> Any:
    """The first tokenizer a plugin resolves for ``name`` (then for each of ``fallbacks``);
    raises :class:`TokenizerNotFoundError` naming the places searched when none does."""
    names = [name, *(f for f in fallbacks if f and f != name)]
    for candidate in names:
        tok = hooks.resolve_tokenizer(candidate)
        if tok is not None:
            return tok
    raise TokenizerNotFoundError(_not_found_message(names))
