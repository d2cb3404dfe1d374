"""Process-wide chaos switch: an explicit :func:`enable` wins over ``TINKEX_CHAOS``."""

from __future__ import annotations

import threading

from tinkex_chaos._config import ChaosConfig
from tinkex_chaos._transport import ChaosStats

__all__ = ["current_config", "disable", "enable", "reset_stats", "shared_stats", "stats"]

_lock = threading.Lock()
_explicit: ChaosConfig | None = None
_explicit_set = False
_stats = ChaosStats()


def enable(config: ChaosConfig | str) -> ChaosConfig:
    """Turn chaos on for transports created from now on (a string is parsed)."""
    global _explicit, _explicit_set
    parsed = ChaosConfig.parse(config) if isinstance(config, str) else config
    with _lock:
        _explicit, _explicit_set = parsed, True
    return parsed


def disable() -> None:
    """Turn chaos off for transports created from now on (also ignores ``TINKEX_CHAOS``)."""
    global _explicit, _explicit_set
    with _lock:
        _explicit, _explicit_set = None, True


def current_config() -> ChaosConfig | None:
    """What new transports get: the explicit setting, else ``TINKEX_CHAOS``, else ``None``."""
    with _lock:
        if _explicit_set:
            return _explicit
    return ChaosConfig.from_env()


def shared_stats() -> ChaosStats:
    """Counters shared by every transport the plugin wrapped."""
    return _stats


def stats() -> dict[str, int]:
    """What was injected so far, by kind."""
    return _stats.snapshot()


def reset_stats() -> None:
    """Zero the shared counters and forget an explicit enable/disable."""
    global _stats, _explicit, _explicit_set
    with _lock:
        _stats = ChaosStats()
        _explicit, _explicit_set = None, False
