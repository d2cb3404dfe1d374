"""``Regularizer``: the base class of the built-ins and of third-party regularizers.

A registered class is all a client gets from the ``tinkex_register_regularizers`` registry
(clients never import this package), so the class carries :meth:`Regularizer.spec` and
:meth:`Regularizer.pipeline`. That makes this module the top of the package's core:
it imports ``_base``, ``_spec`` and ``_pipeline``; the built-ins import it; nothing below
imports it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, cast

import torch

from tinkex_regularizers._base import (
    Metrics,
    OptionsT,
    RegularizerBatch,
    RegularizerOptions,
    validate_options,
)
from tinkex_regularizers._pipeline import RegularizerPipeline
from tinkex_regularizers._spec import RegularizerSpec

__all__ = ["Regularizer"]


class Regularizer(ABC, Generic[OptionsT]):
    """Base class of the built-ins; third parties may subclass it too.

    Subclasses set ``name`` and ``Options`` (a :class:`RegularizerOptions` model) and
    implement :meth:`compute`. ``Regularizer(**options)`` or ``Regularizer(options_model)``
    validates the options (errors name the option).
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[RegularizerOptions]] = RegularizerOptions
    options: OptionsT

    def __init__(
        self, options: Mapping[str, Any] | RegularizerOptions | None = None, /, **kwargs: Any
    ) -> None:
        if options is not None and kwargs:
            raise TypeError("give the options either as one object or as keywords, not both")
        given: Mapping[str, Any] | RegularizerOptions | None = (
            options if options is not None else kwargs
        )
        self.options = cast(
            OptionsT, validate_options(self.name or type(self).__name__, self.Options, given)
        )

    @abstractmethod
    def compute(self, batch: RegularizerBatch) -> tuple[torch.Tensor, Metrics]:
        """Return ``(scalar loss tensor, metrics)`` for ``batch``."""

    def __call__(
        self, data: Sequence[Any], logprobs: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, Metrics]:
        """Compute on ``(data, logprobs)`` directly (the custom-loss function signature)."""
        return self.compute(RegularizerBatch(data=list(data), logprobs=list(logprobs)))

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}={v!r}"
            for k, v in self.options.model_dump(exclude_defaults=True, by_alias=True).items()
        )
        return f"{type(self).__name__}({shown})"

    # -- reachable from a registry entry (clients never import this package) ----------
    @classmethod
    def spec(cls, *, weight: float, name: str | None = None, **options: Any) -> RegularizerSpec:
        """A :class:`~tinkex_regularizers.RegularizerSpec` of this regularizer."""
        return RegularizerSpec(regularizer=cls(**options), weight=weight, name=name or cls.name)

    @staticmethod
    def pipeline(*args: Any, **kwargs: Any) -> RegularizerPipeline:
        """Build a :class:`~tinkex_regularizers.RegularizerPipeline` (same arguments)."""
        return RegularizerPipeline(*args, **kwargs)
