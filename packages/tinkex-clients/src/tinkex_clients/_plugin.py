"""Hook implementations of tinkex_clients: a built-in plugin (``tinkex_types.DEFAULT_PLUGINS``,
also the entry point ``clients`` of group ``tinkex``).

* ``tinkex_resolve_tokenizer`` (``trylast``): the offline default -- ``tokenizer.json`` from a
  local path or the Hugging Face cache. Other plugins (e.g. tinkex-server for its built-in
  models) answer first.
"""

from __future__ import annotations

from tinkex_clients._tokenizers import load_local_tokenizer
from tinkex_types import Tokenizer, hookimpl

__all__ = ["tinkex_resolve_tokenizer"]


@hookimpl(trylast=True)
def tinkex_resolve_tokenizer(name: str) -> Tokenizer | None:
    return load_local_tokenizer(name)
