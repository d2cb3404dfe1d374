"""One backoff formula for every retrying loop of tinkex.

``Backoff(initial, maximum, jitter)`` gives the delay before retry ``attempt`` (0-based):
``min(initial * multiplier**attempt, maximum)``, then scaled by a random factor. Two jitter
shapes exist because the official client uses both: ``"down"`` draws the factor from
``[1 - jitter, 1]`` (never above the cap), ``"both"`` from ``[1 - jitter, 1 + jitter]``
clamped to ``[0, maximum]``. ``jitter=0`` is deterministic.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tinkex_types._errors import TinkexValidationError

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """An immutable exponential backoff with jitter (see the module docstring)."""

    initial: float = 0.5
    maximum: float = 10.0
    jitter: float = 0.25
    multiplier: float = 2.0
    jitter_mode: Literal["down", "both"] = "down"

    def __post_init__(self) -> None:
        for name in ("initial", "maximum", "multiplier"):
            value = getattr(self, name)
            if isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise TinkexValidationError(
                    name, f"must be a finite number >= 0, got {value!r}", "e.g. 0.5"
                )
        if self.maximum < self.initial:
            raise TinkexValidationError(
                "maximum", f"{self.maximum} is below initial {self.initial}", "raise maximum"
            )
        if not 0.0 <= self.jitter <= 1.0:
            raise TinkexValidationError(
                "jitter", f"must be within [0, 1], got {self.jitter!r}", "e.g. 0.25"
            )

    def cap(self, attempt: int) -> float:
        """The delay of ``attempt`` before jitter: ``min(initial * multiplier**n, maximum)``."""
        n = min(max(int(attempt), 0), 64)
        try:
            raw = self.initial * (self.multiplier**n)
        except OverflowError:
            raw = math.inf
        return min(raw, self.maximum)

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry ``attempt``, always within ``[0, maximum]``."""
        base = self.cap(attempt)
        if self.jitter == 0.0:
            return base
        u = min(max(rng(), 0.0), 1.0)
        if self.jitter_mode == "down":
            return base * (1.0 - self.jitter * u)
        spread = base * self.jitter * (2.0 * u - 1.0)
        return min(max(base + spread, 0.0), self.maximum)
