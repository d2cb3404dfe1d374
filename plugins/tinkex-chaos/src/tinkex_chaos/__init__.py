"""tinkex-chaos: deterministic fault injection for tinkex transports.

Switch it on with ``TINKEX_CHAOS="seed=7,error_rate=0.1,reset_after_send_rate=0.05"`` or
:func:`enable`; it is off (and costs nothing: no wrapper is installed) unless asked for.
"""

from tinkex_chaos._config import ENV_VAR, FAULT_KINDS, ChaosConfig
from tinkex_chaos._state import current_config, disable, enable, reset_stats, shared_stats, stats
from tinkex_chaos._transport import ChaosStats, ChaosTransport

__all__ = [
    "ENV_VAR",
    "FAULT_KINDS",
    "ChaosConfig",
    "ChaosStats",
    "ChaosTransport",
    "current_config",
    "disable",
    "enable",
    "reset_stats",
    "shared_stats",
    "stats",
]
