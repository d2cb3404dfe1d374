"""Optimizer families (tinker 0.38 ``tinker.types.optimizer``).

* :data:`OptimizerConfig` is fixed when a training model is created
  (``CreateModelRequest.optimizer_config``): ``{"type": "adamw"}`` (the default) or
  ``{"type": "dimuon", "version": 1}``. A family this package does not know parses as
  :class:`OptimizerConfigBase`, keeping its extra keys (a newer server's answer still parses).
* :data:`OptimParams` are the per-step hyper-parameters of ``optim_step``:
  :class:`~tinkex_types.AdamParams` (sent as ``adam_params``) or the parameters of another
  family such as :class:`DimuonParams` (sent as ``optimizer_params``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Discriminator, Field, GetJsonSchemaHandler, Tag
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from tinkex_types._base import TaggedWireModel
from tinkex_types._numbers import FiniteFloat, float_rule
from tinkex_types._params import AdamParams

__all__ = [
    "OPTIMIZER_FAMILIES",
    "AdamOptimizerConfig",
    "DimuonOptimizerConfig",
    "DimuonParams",
    "OptimParams",
    "OptimParamsBase",
    "OptimizerConfig",
    "OptimizerConfigBase",
    "SamplingClientKind",
    "params_family",
]

#: Which weights a sampling client made from a save uses: ``snapshot`` (fixed weights, the
#: default) or ``inflight`` (the training model's shared, updated weights).
SamplingClientKind = Literal["snapshot", "inflight"]

#: The optimizer families tinker 0.38 defines.
OPTIMIZER_FAMILIES: tuple[str, ...] = ("adamw", "dimuon")


class OptimizerConfigBase(TaggedWireModel):
    """An optimizer family, named by ``type``; other keys are kept (newer families)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(min_length=1)


class AdamOptimizerConfig(OptimizerConfigBase):
    """AdamW (the default family)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["adamw"] = "adamw"


class DimuonOptimizerConfig(OptimizerConfigBase):
    """The Dimuon optimizer (version 1)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["dimuon"] = "dimuon"
    version: Literal[1] = 1


class _AnyOf:
    """JSON schema of a family union: ``anyOf`` (the catch-all member overlaps the named
    ones, so a ``oneOf`` would refuse every valid value)."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        if "oneOf" in schema:
            schema["anyOf"] = schema.pop("oneOf")
            schema.pop("discriminator", None)
        return schema


def _config_tag(value: Any) -> str:
    kind = value.get("type", "adamw") if isinstance(value, dict) else getattr(value, "type", None)
    if isinstance(value, OptimizerConfigBase) and type(value) is OptimizerConfigBase:
        return "other"
    if kind in (None, "adamw"):
        return "adamw"
    return "dimuon" if kind == "dimuon" else "other"


#: ``CreateModelRequest.optimizer_config`` and the optimizer of a model's info.
OptimizerConfig = Annotated[
    Union[  # noqa: UP007 - pydantic tagged union
        Annotated[AdamOptimizerConfig, Tag("adamw")],
        Annotated[DimuonOptimizerConfig, Tag("dimuon")],
        Annotated[OptimizerConfigBase, Tag("other")],
    ],
    Discriminator(_config_tag),
    _AnyOf(),
]


class OptimParamsBase(TaggedWireModel):
    """Per-step parameters of a non-Adam family, named by ``type``; other keys are kept."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(min_length=1)


class DimuonParams(OptimParamsBase):
    """Hyper-parameters of one Dimuon step (every number finite)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["dimuon"] = "dimuon"
    learning_rate: Annotated[float, float_rule(ge=0.0)]
    grad_clip_norm: FiniteFloat = 0.0
    """Maximum global gradient norm; 0 or less disables clipping."""
    beta1: Annotated[float, float_rule(ge=0.0, lt=1.0)] = 0.9
    """Momentum EMA coefficient, in [0, 1)."""


def params_family(value: Any) -> str:
    """``adam``, ``dimuon`` or ``other``: the family of per-step parameters (a dict without
    ``type`` is Adam's)."""
    return _params_tag(value)


def _params_tag(value: Any) -> str:
    if isinstance(value, AdamParams):
        return "adam"
    if isinstance(value, OptimParamsBase):
        return "dimuon" if isinstance(value, DimuonParams) else "other"
    kind = value.get("type") if isinstance(value, dict) else None
    if kind is None:
        return "adam"
    return "dimuon" if kind == "dimuon" else "other"


#: ``OptimStepRequest.optim_params``: :class:`AdamParams` or another family's parameters.
OptimParams = Annotated[
    Union[  # noqa: UP007 - pydantic tagged union
        Annotated[AdamParams, Tag("adam")],
        Annotated[DimuonParams, Tag("dimuon")],
        Annotated[OptimParamsBase, Tag("other")],
    ],
    Discriminator(_params_tag),
    _AnyOf(),
]
