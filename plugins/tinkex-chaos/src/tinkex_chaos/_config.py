"""``ChaosConfig``: which faults to inject, how often, where; parsed from ``TINKEX_CHAOS``."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field, fields

from tinkex_types import TinkexValidationError

__all__ = ["ENV_VAR", "FAULT_KINDS", "ChaosConfig"]

ENV_VAR = "TINKEX_CHAOS"

#: Every fault kind, in the order they are drawn for one request.
FAULT_KINDS = (
    "error",  # a 5xx answered before the request reaches the server
    "reset_after_send",  # the server processed the request; the client never sees the answer
    "rate_limit",  # 429 with Retry-After, before the server
    "timeout",  # 408 before the server
    "truncate",  # the server answered; the body is cut off mid-stream
)

_RATE_FIELDS = {
    "error": "error_rate",
    "reset_after_send": "reset_after_send_rate",
    "rate_limit": "rate_limit_rate",
    "timeout": "timeout_rate",
    "truncate": "truncate_rate",
}


@dataclass(frozen=True)
class ChaosConfig:
    """What to inject. Rates are probabilities per HTTP attempt, drawn from a seeded RNG.

    ``endpoints`` and ``exclude`` are glob patterns matched against the request path
    (``/api/v1/forward_backward``); an empty ``endpoints`` means every path.
    ``latency_ms`` is an inclusive range of added delay per attempt.
    """

    seed: int = 0
    error_rate: float = 0.0
    reset_after_send_rate: float = 0.0
    rate_limit_rate: float = 0.0
    timeout_rate: float = 0.0
    truncate_rate: float = 0.0
    latency_ms: tuple[int, int] = (0, 0)
    retry_after_s: float = 0.0
    error_status: int = 503
    endpoints: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    enabled: bool = field(default=True)

    def __post_init__(self) -> None:
        for name in _RATE_FIELDS.values():
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
                raise TinkexValidationError(name, f"must be a probability in [0, 1], got {value!r}")
        total = self.total_fault_rate
        if total > 1.0:
            raise TinkexValidationError(
                "error_rate",
                f"the fault rates add up to {total:.3f}, more than 1",
                "lower some of the *_rate values",
            )
        lo, hi = self.latency_ms
        if lo < 0 or hi < lo:
            raise TinkexValidationError(
                "latency_ms", f"must be a range lo..hi with 0 <= lo <= hi, got {lo}..{hi}"
            )
        if not 500 <= self.error_status <= 599:
            raise TinkexValidationError(
                "error_status", f"must be a 5xx status, got {self.error_status}"
            )
        if self.retry_after_s < 0:
            raise TinkexValidationError("retry_after_s", "must be >= 0")

    @property
    def total_fault_rate(self) -> float:
        return float(sum(getattr(self, name) for name in _RATE_FIELDS.values()))

    def rate(self, kind: str) -> float:
        return float(getattr(self, _RATE_FIELDS[kind]))

    def applies_to(self, path: str) -> bool:
        """Whether faults may be injected into a request for ``path``."""
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in self.exclude):
            return False
        return not self.endpoints or any(
            fnmatch.fnmatchcase(path, pattern) for pattern in self.endpoints
        )

    @classmethod
    def parse(cls, text: str) -> ChaosConfig:
        """Parse ``"seed=7,error_rate=0.1,latency_ms=0..200,endpoints=/api/v1/asample"``.

        Lists (``endpoints``, ``exclude``) are separated by ``|``. Unknown keys and bad
        values raise :class:`tinkex_types.TinkexValidationError` naming the key.
        """
        known = {f.name for f in fields(cls)}
        values: dict[str, object] = {}
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, raw = part.partition("=")
            key, raw = key.strip(), raw.strip()
            if not sep:
                raise TinkexValidationError(ENV_VAR, f"{part!r} is not key=value")
            if key not in known:
                raise TinkexValidationError(
                    ENV_VAR, f"unknown key {key!r}", f"known keys: {', '.join(sorted(known))}"
                )
            try:
                values[key] = _convert(key, raw)
            except ValueError as exc:
                raise TinkexValidationError(f"{ENV_VAR}.{key}", str(exc)) from None
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls) -> ChaosConfig | None:
        """The configuration in ``TINKEX_CHAOS``, or ``None`` when it is unset or empty."""
        raw = os.environ.get(ENV_VAR, "").strip()
        if not raw or raw.lower() in {"0", "off", "false", "no"}:
            return None
        return cls.parse(raw)


def _convert(key: str, raw: str) -> object:
    if key in {"seed", "error_status"}:
        return int(raw)
    if key == "enabled":
        return raw.lower() in {"1", "true", "yes", "on"}
    if key in {"endpoints", "exclude"}:
        return tuple(p.strip() for p in raw.split("|") if p.strip())
    if key == "latency_ms":
        lo, sep, hi = raw.partition("..")
        low = int(lo)
        return (low, int(hi) if sep else low)
    value = float(raw)
    return value
