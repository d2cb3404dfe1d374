"""Hook implementations of tinkex_regularizers (loaded through the ``tinkex`` entry point group).

The built-in regularizers register through the same hook as third-party ones.
"""

from __future__ import annotations

from tinkex_types import hookimpl
from tinkex_types.hookspecs import RegisterNamed


@hookimpl
def tinkex_register_regularizers(register: RegisterNamed) -> None:
    """Register ``l1``, ``l2``, ``elastic_net``, ``entropy``, ``kl_divergence``,
    ``consistency``, ``orthogonality`` and ``gradient_penalty``."""
    from tinkex_regularizers._builtins import BUILTINS  # torch loads only now

    for name, cls in BUILTINS.items():
        register(name, cls)
