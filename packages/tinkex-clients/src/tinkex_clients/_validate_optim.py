"""Checks of tinker 0.38's optimizer arguments and of ``user_metadata`` (errors name the
argument and the fix)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from tinkex_clients._validate import as_adam_params
from tinkex_types import (
    AdamOptimizerConfig,
    AdamParams,
    OptimizerConfig,
    OptimizerConfigBase,
    OptimParams,
    OptimParamsBase,
    TinkexValidationError,
)

__all__ = ["as_optim_params", "as_optimizer_config", "as_user_metadata"]

_CONFIG: TypeAdapter[Any] = TypeAdapter(OptimizerConfig)
_PARAMS: TypeAdapter[Any] = TypeAdapter(OptimParams)


def _foreign(value: Any) -> Any:
    """An official tinker model (another package's pydantic class) as a dict."""
    dump = getattr(value, "model_dump", None)
    return dump() if callable(dump) else value


def as_user_metadata(value: Any, field: str = "user_metadata") -> dict[str, str] | None:
    """``None`` or a dict of str to str."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TinkexValidationError(
            field, f"must be a dict of str to str, got {type(value).__name__}"
        )
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise TinkexValidationError(
                f"{field}[{key!r}]",
                f"keys and values must be strings, got {item!r}",
                "convert values with str()",
            )
        out[key] = item
    return out


def as_optimizer_config(value: Any, field: str = "optimizer") -> OptimizerConfigBase:
    """``None`` (AdamW), an :data:`OptimizerConfig` or its dict."""
    if value is None:
        return AdamOptimizerConfig()
    if isinstance(value, OptimizerConfigBase):
        return value
    value = _foreign(value)
    if not isinstance(value, Mapping):
        raise TinkexValidationError(
            field,
            f"must be an optimizer config, got {type(value).__name__}",
            "pass types.AdamOptimizerConfig() (the default) or types.DimuonOptimizerConfig()",
        )
    try:
        config: OptimizerConfigBase = _CONFIG.validate_python(dict(value))
    except ValidationError as exc:
        raise TinkexValidationError(field, str(exc.errors()[0]["msg"])) from None
    return config


def as_optim_params(value: Any, field: str = "optim_params") -> AdamParams | OptimParamsBase:
    """:class:`AdamParams`, another family's parameters (:class:`DimuonParams`...) or the
    dict of either."""
    if isinstance(value, AdamParams | OptimParamsBase):
        return value
    value = _foreign(value)
    if isinstance(value, Mapping) and value.get("type") not in (None, "adam", "adamw"):
        try:
            params: OptimParamsBase = _PARAMS.validate_python(dict(value))
        except ValidationError as exc:
            raise TinkexValidationError(field, str(exc.errors()[0]["msg"])) from None
        return params
    if isinstance(value, Mapping):
        value = {k: v for k, v in value.items() if k != "type"}
    return as_adam_params(value, field)
