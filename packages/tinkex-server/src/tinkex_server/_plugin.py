"""Hook implementations of tinkex_server: a built-in plugin (``tinkex_types.DEFAULT_PLUGINS``,
also the entry point ``server`` of group ``tinkex``).

Keep this module cheap to import: it is loaded whenever a plugin manager is built, so
torch and the engine are only imported inside the hooks that need them.
"""

from __future__ import annotations

from tinkex_types import Tokenizer, hookimpl


@hookimpl
def tinkex_resolve_tokenizer(name: str) -> Tokenizer | None:
    """Tokenizers of the built-in models and of local Hugging Face-layout directories."""
    from tinkex_server._tokenizer import resolve_tokenizer

    return resolve_tokenizer(name)


from tinkex_server._hooks_api import tinkex_register_commands, tinkex_register_transports  # noqa: E402

__all__ = ["tinkex_register_commands", "tinkex_register_transports", "tinkex_resolve_tokenizer"]
