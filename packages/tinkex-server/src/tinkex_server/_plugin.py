"""Hook implementations of tinkex_server (loaded through the `tinkex` entry point group).

Keep this module cheap to import: it is loaded whenever a plugin manager is built, so
torch and the engine are only imported inside the hooks that need them.
"""

from __future__ import annotations

from typing import Any

from tinkex_types import hookimpl


@hookimpl
def tinkex_resolve_tokenizer(name: str) -> Any | None:
    """Tokenizers of the built-in models and of local Hugging Face-layout directories."""
    from tinkex_server._tokenizer import resolve_tokenizer

    return resolve_tokenizer(name)


from tinkex_server._hooks_api import tinkex_register_commands, tinkex_register_transports  # noqa: E402

__all__ = ["tinkex_register_commands", "tinkex_register_transports", "tinkex_resolve_tokenizer"]
