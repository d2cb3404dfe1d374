"""Hook implementations of tinkex_chaos (loaded through the ``tinkex`` entry point group).

The wrapper is installed only when chaos is configured (:func:`tinkex_chaos.enable` or the
``TINKEX_CHAOS`` environment variable); otherwise this hook returns ``None`` and requests
take the plain transport path.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from tinkex_chaos._state import current_config, shared_stats
from tinkex_chaos._transport import ChaosTransport
from tinkex_types import AsyncTransport, TransportConfig, hookimpl


@hookimpl
def tinkex_wrap_transport(
    transport: AsyncTransport, config: TransportConfig
) -> AsyncTransport | None:
    """Wrap ``transport`` in a :class:`ChaosTransport` when chaos is enabled (and the
    transport is an ``httpx.AsyncBaseTransport``, the only kind it can delegate to)."""
    chaos = current_config()
    if chaos is None or not chaos.enabled or not isinstance(transport, httpx.AsyncBaseTransport):
        return None
    base_url = getattr(config, "base_url", None)
    base_path = urlsplit(base_url).path if isinstance(base_url, str) else ""
    return ChaosTransport(transport, chaos, stats=shared_stats(), base_path=base_path)
