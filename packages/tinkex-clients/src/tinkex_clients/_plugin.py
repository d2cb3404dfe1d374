"""Hook implementations of tinkex_clients: a built-in plugin (``tinkex_types.DEFAULT_PLUGINS``,
also the entry point ``clients`` of group ``tinkex``).

* ``tinkex_resolve_tokenizer`` (``trylast``): the default -- ``tokenizer.json`` from a local
  path, the Hugging Face cache, or a download through ``huggingface_hub`` when online
  (:func:`tinkex_clients.load_tokenizer`). Other plugins (e.g. tinkex-server for its
  built-in models) answer first.
"""

from __future__ import annotations

from tinkex_clients._tokenizers import load_tokenizer
from tinkex_types import Tokenizer, hookimpl

__all__ = ["tinkex_resolve_tokenizer"]


@hookimpl(trylast=True)
def tinkex_resolve_tokenizer(name: str) -> Tokenizer | None:
    tok: Tokenizer | None = load_tokenizer(name)
    return tok
