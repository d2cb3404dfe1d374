"""Hook implementations of tinkex_regularizers: a built-in plugin
(``tinkex_types.DEFAULT_PLUGINS``, also the entry point ``regularizers`` of group ``tinkex``).

The built-in regularizers register through the same hook as third-party ones.
"""

from __future__ import annotations

from tinkex_types import RegisterRegularizer, hookimpl


@hookimpl
def tinkex_register_regularizers(register: RegisterRegularizer) -> None:
    """Register ``l1``, ``l2``, ``elastic_net``, ``entropy``, ``kl_divergence``,
    ``consistency``, ``orthogonality`` and ``gradient_penalty``."""
    from tinkex_regularizers._builtins import BUILTINS  # torch loads only now

    for name, cls in BUILTINS.items():
        register(name, cls)
