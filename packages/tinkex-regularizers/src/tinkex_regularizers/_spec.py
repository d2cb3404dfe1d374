"""``RegularizerSpec``: one weighted term of a pipeline, and resolution by name."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from tinkex_regularizers._base import RegularizerBatch, RegularizerProtocol
from tinkex_types import Hooks, PluginError, TinkexValidationError, get_hooks

__all__ = ["FunctionRegularizer", "RegularizerSpec", "resolve_regularizer"]


class FunctionRegularizer:
    """Adapts a plain ``fn(data, logprobs) -> loss | (loss, metrics)`` to the protocol."""

    def __init__(self, fn: Callable[[list[Any], list[torch.Tensor]], Any], name: str) -> None:
        self.fn = fn
        self.name = name

    def compute(self, batch: RegularizerBatch) -> tuple[torch.Tensor, Mapping[str, Any]]:
        result = self.fn(list(batch.data), list(batch.logprobs))
        if isinstance(result, tuple):
            if len(result) != 2:
                raise TinkexValidationError(
                    f"regularizer {self.name!r}",
                    f"returned a tuple of {len(result)} items",
                    "return a loss tensor or (loss_tensor, metrics)",
                )
            return result[0], result[1] or {}
        return result, {}

    def __repr__(self) -> str:
        return f"FunctionRegularizer({getattr(self.fn, '__qualname__', self.fn)!r})"


def resolve_regularizer(
    regularizer: str, options: Mapping[str, Any] | None = None, *, hooks: Hooks | None = None
) -> RegularizerProtocol:
    """Instantiate the regularizer registered as ``regularizer`` with ``options``.

    Unknown names raise :class:`tinkex_types.PluginError` listing the registered names;
    bad options raise :class:`tinkex_types.TinkexValidationError` naming the option.
    """
    registry = (hooks or get_hooks()).regularizers()
    cls = registry.get(regularizer)
    try:
        instance = cls(**dict(options or {}))
    except TinkexValidationError:
        raise
    except TypeError as exc:
        raise TinkexValidationError(
            f"{regularizer}.options", f"rejected by {cls!r}: {exc}", "check the option names"
        ) from exc
    if not callable(getattr(instance, "compute", None)):
        raise PluginError(
            f"regularizer {regularizer!r} is registered as {cls!r}, which has no "
            "compute(batch) method; it must follow tinkex_regularizers.RegularizerProtocol"
        )
    return instance  # type: ignore[no-any-return]


@dataclass(frozen=True, init=False)
class RegularizerSpec:
    """One term ``weight · regularizer`` of a pipeline, reported under ``name``.

    ``regularizer`` is an object with ``compute(batch)`` (a built-in instance, a registered
    class's instance) or a plain function ``fn(data, logprobs) -> loss | (loss, metrics)``.
    ``weight`` is a finite number ≥ 0; ``name`` defaults to the regularizer's ``name``
    (required for lambdas).
    """

    regularizer: RegularizerProtocol
    weight: float
    name: str

    def __init__(self, regularizer: Any, *, weight: float, name: str | None = None) -> None:
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise TinkexValidationError(
                "weight", f"must be a number, got {type(weight).__name__}", "e.g. weight=0.1"
            )
        w = float(weight)
        if not math.isfinite(w) or w < 0:
            raise TinkexValidationError(
                "weight",
                f"must be finite and >= 0, got {weight!r}",
                "use a non-negative weight (flip signs inside the regularizer, e.g. "
                "entropy mode='maximize')",
            )
        if name is None:
            name = getattr(regularizer, "name", None) or getattr(regularizer, "__name__", None)
        if not isinstance(name, str) or not name or name == "<lambda>":
            raise TinkexValidationError(
                "name", f"must be a non-empty string, got {name!r}", "give name='my_term'"
            )
        if isinstance(regularizer, type):
            raise TinkexValidationError(
                "regularizer",
                f"got the class {regularizer.__name__}, not an instance",
                f"instantiate it ({regularizer.__name__}(...)) or use RegularizerSpec.from_name",
            )
        if not callable(getattr(regularizer, "compute", None)):
            if not callable(regularizer):
                raise TinkexValidationError(
                    "regularizer",
                    f"{regularizer!r} is neither a regularizer instance nor a function",
                    "give an instance (e.g. L2(lambda_=0.1)), fn(data, logprobs), or use "
                    "RegularizerSpec.from_name('l2', weight=...)",
                )
            regularizer = FunctionRegularizer(regularizer, name)
        object.__setattr__(self, "regularizer", regularizer)
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "name", name)

    @classmethod
    def from_name(
        cls,
        regularizer: str,
        /,
        *,
        weight: float,
        name: str | None = None,
        hooks: Hooks | None = None,
        **options: Any,
    ) -> RegularizerSpec:
        """Resolve ``regularizer`` through the ``tinkex_register_regularizers`` registry.

        ``RegularizerSpec.from_name("l2", weight=0.1, center="mean")``. ``name`` defaults to
        the registered name; ``hooks`` defaults to :func:`tinkex_types.get_hooks`.
        """
        instance = resolve_regularizer(regularizer, options, hooks=hooks)
        return cls(instance, weight=weight, name=name or regularizer)

    @classmethod
    def coerce(cls, value: Any, *, hooks: Hooks | None = None) -> RegularizerSpec:
        """A spec from a spec, or from a mapping ``{"regularizer": "l2", "weight": 0.1,
        "name"?: ..., "options"?: {...}}`` (config files, CLI flags)."""
        if isinstance(value, RegularizerSpec):
            return value
        if isinstance(value, Mapping):
            extra = set(value) - {"regularizer", "weight", "name", "options"}
            if extra or "regularizer" not in value or "weight" not in value:
                raise TinkexValidationError(
                    "regularizers",
                    f"bad spec mapping {dict(value)!r}",
                    "use keys regularizer, weight, and optionally name, options",
                )
            reg = value["regularizer"]
            opts = dict(value.get("options") or {})
            if isinstance(reg, str):
                return cls.from_name(
                    reg, weight=value["weight"], name=value.get("name"), hooks=hooks, **opts
                )
            if opts:
                raise TinkexValidationError(
                    "options", "only apply to a regularizer given by name", "drop options"
                )
            return cls(reg, weight=value["weight"], name=value.get("name"))
        raise TinkexValidationError(
            "regularizers",
            f"expected a RegularizerSpec or a mapping, got {type(value).__name__}",
            "use RegularizerSpec.from_name('l2', weight=0.1)",
        )

    def compute(self, batch: RegularizerBatch) -> tuple[torch.Tensor, Mapping[str, Any]]:
        """The unweighted ``(loss, metrics)`` of the regularizer on ``batch``."""
        return self.regularizer.compute(batch)
