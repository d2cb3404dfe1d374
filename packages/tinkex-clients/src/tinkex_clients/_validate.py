"""Input validation done before anything is sent: every error names the field and the fix."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from tinkex_types import (
    PER_TOKEN_INPUTS,
    AdamParams,
    CheckpointRef,
    Datum,
    ImageAssetPointerChunk,
    ImageChunk,
    ModelInput,
    SamplingParams,
    TensorData,
    TinkerPath,
    TinkexValidationError,
    check_sampling_params,
    check_tinker_path,
    loss_spec,
    resolve_loss_config,
)
from tinkex_types._tensor import tensor_all_finite

__all__ = [
    "ClientClosedError",
    "as_access_scope",
    "as_adam_params",
    "as_any_tinker_path",
    "as_checkpoint_name",
    "as_checkpoint_ref",
    "as_data",
    "as_load_path",
    "as_loss_fn",
    "as_loss_fn_config",
    "as_model_input",
    "as_non_negative_int",
    "as_positive_int",
    "as_sampling_params",
    "as_tinker_path",
    "as_ttl_seconds",
    "check_loss_inputs",
]


class ClientClosedError(TinkexValidationError):
    """The client (or its ServiceClient) was closed; nothing was sent."""

    def __init__(self, what: str = "ServiceClient") -> None:
        super().__init__(
            "client",
            f"this {what} is closed",
            "create a new ServiceClient (and new training/sampling clients from it)",
        )


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return str(exc)
    err = errors[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    msg = str(err.get("msg", "invalid value"))
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {msg}{more}" if loc else f"{msg}{more}"


def as_data(data: Any, field: str = "data") -> list[Datum]:
    """A non-empty list of :class:`Datum` (dicts are parsed)."""
    if isinstance(data, (str, bytes)) or not isinstance(data, Sequence):
        raise TinkexValidationError(
            field,
            f"must be a list of Datum, got {type(data).__name__}",
            "pass [types.Datum(model_input=..., loss_fn_inputs=...), ...]",
        )
    if len(data) == 0:
        raise TinkexValidationError(field, "is empty", "pass at least one Datum")
    out: list[Datum] = []
    for i, item in enumerate(data):
        if isinstance(item, Datum):
            out.append(item)
            continue
        if isinstance(item, Mapping):
            try:
                out.append(Datum.model_validate(dict(item)))
            except ValidationError as exc:
                raise TinkexValidationError(f"{field}[{i}]", _first_error(exc)) from None
            continue
        raise TinkexValidationError(
            f"{field}[{i}]",
            f"must be a Datum, got {type(item).__name__}",
            "build it with types.Datum(model_input=..., loss_fn_inputs=...)",
        )
    return out


def as_loss_fn(loss_fn: Any, field: str = "loss_fn") -> str:
    """The name of a loss of the loss table (:data:`tinkex_types.LOSSES`)."""
    return loss_spec(loss_fn, field).name


def as_loss_fn_config(
    config: Any, field: str = "loss_fn_config", loss_fn: str | None = None
) -> dict[str, float] | None:
    """``None`` or a mapping of str to numbers (numeric strings are accepted). With
    ``loss_fn``, the keys that loss reads must also pass its table entry
    (:func:`tinkex_types.resolve_loss_config`: e.g. clip thresholds in order)."""
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise TinkexValidationError(
            field, f"must be a mapping of str to float, got {type(config).__name__}"
        )
    out: dict[str, float] = {}
    for key, value in config.items():
        name = str(key)
        if isinstance(value, bool):
            raise TinkexValidationError(f"{field}[{name!r}]", f"must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TinkexValidationError(
                f"{field}[{name!r}]", f"must be a number, got {value!r}"
            ) from None
        if not math.isfinite(number):
            raise TinkexValidationError(f"{field}[{name!r}]", f"must be finite, got {value!r}")
        out[name] = number
    if loss_fn is not None:
        resolve_loss_config(loss_fn, out, field)
    return out


def _model_input_length(model_input: ModelInput) -> int | None:
    """Token count, or None when an image chunk has no ``expected_tokens``."""
    total = 0
    for chunk in model_input.chunks:
        if (
            isinstance(chunk, (ImageChunk, ImageAssetPointerChunk))
            and chunk.expected_tokens is None
        ):
            return None
        total += chunk.length
    return total


def check_loss_inputs(data: Sequence[Datum], loss_fn: str, field: str = "data") -> None:
    """The inputs the loss table requires are present; ``target_tokens`` is aligned with
    the model input; every per-token input (:data:`tinkex_types.PER_TOKEN_INPUTS`) has the
    shape of ``target_tokens``; float inputs are finite (protocol.md §2.8)."""
    spec = loss_spec(loss_fn, "loss_fn")
    for i, datum in enumerate(data):
        where = f"{field}[{i}]"
        length = _model_input_length(datum.model_input)
        if length == 0:
            raise TinkexValidationError(
                f"{where}.model_input", "has no tokens", "give at least one input token"
            )
        inputs = datum.loss_fn_inputs
        for key in spec.required_inputs:
            if key not in inputs:
                raise TinkexValidationError(
                    f"{where}.loss_fn_inputs.{key}",
                    f"is missing (loss {spec.name!r} needs {', '.join(spec.required_inputs)})",
                    f"add {key!r} with one value per input token",
                )
        target = inputs.get("target_tokens")
        if target is not None:
            _check_per_token(inputs, target, length, where)
        _check_finite(inputs, where)


def _check_per_token(
    inputs: Mapping[str, TensorData], target: TensorData, length: int | None, where: str
) -> None:
    if target.dtype != "int64":
        raise TinkexValidationError(
            f"{where}.loss_fn_inputs.target_tokens",
            f"must hold int64 token ids, got {target.dtype}",
        )
    shape = target.effective_shape
    if not shape:
        raise TinkexValidationError(
            f"{where}.loss_fn_inputs.target_tokens", "must have at least one dimension"
        )
    if length is not None and shape[0] != length:
        raise TinkexValidationError(
            f"{where}.loss_fn_inputs.target_tokens",
            f"has {shape[0]} entries but model_input has {length} tokens",
            "give exactly one target per input position (targets are the inputs shifted by one)",
        )
    for key in PER_TOKEN_INPUTS:
        value = inputs.get(key)
        if value is not None and value.effective_shape != shape:
            raise TinkexValidationError(
                f"{where}.loss_fn_inputs.{key}",
                f"has shape {value.effective_shape} but target_tokens has shape {shape}",
                "give one value per target token",
            )


def _check_finite(inputs: Mapping[str, TensorData], where: str) -> None:
    for key, value in inputs.items():
        # JSON has no NaN or infinity: they would travel as null and fail on the server.
        if value.dtype == "float32" and not tensor_all_finite(value):
            raise TinkexValidationError(
                f"{where}.loss_fn_inputs.{key}",
                "holds NaN or infinite values, which JSON cannot carry",
                "replace them with finite numbers (e.g. clip or zero them)",
            )


def as_adam_params(value: Any, field: str = "adam_params") -> AdamParams:
    if isinstance(value, AdamParams):
        return value
    if isinstance(value, Mapping):
        try:
            return AdamParams.model_validate(dict(value))
        except ValidationError as exc:
            raise TinkexValidationError(field, _first_error(exc)) from None
    raise TinkexValidationError(
        field,
        f"must be types.AdamParams, got {type(value).__name__}",
        "pass types.AdamParams(learning_rate=1e-4)",
    )


def as_sampling_params(value: Any, field: str = "sampling_params") -> SamplingParams:
    """A :class:`SamplingParams` (dicts are parsed) that passes
    :func:`tinkex_types.check_sampling_params`, the rules the server applies too."""
    if isinstance(value, Mapping):
        try:
            value = SamplingParams.model_validate(dict(value))
        except ValidationError as exc:
            raise TinkexValidationError(field, _first_error(exc)) from None
    return check_sampling_params(value, field)


def as_model_input(value: Any, field: str = "prompt") -> ModelInput:
    if isinstance(value, ModelInput):
        model_input = value
    elif isinstance(value, Mapping):
        try:
            model_input = ModelInput.model_validate(dict(value))
        except ValidationError as exc:
            raise TinkexValidationError(field, _first_error(exc)) from None
    else:
        raise TinkexValidationError(
            field,
            f"must be types.ModelInput, got {type(value).__name__}",
            "build it with types.ModelInput.from_ints(token_ids)",
        )
    if not model_input.chunks:
        raise TinkexValidationError(field, "has no chunks", "give at least one token")
    return model_input


def as_positive_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TinkexValidationError(field, f"must be an int >= 1, got {value!r}")
    return value


def as_non_negative_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TinkexValidationError(field, f"must be an int >= 0, got {value!r}")
    return value


def as_checkpoint_name(name: Any, field: str = "name") -> str:
    if not isinstance(name, str) or not name.strip():
        raise TinkexValidationError(
            field, f"must be a non-empty string, got {name!r}", "use a name such as 'step-0010'"
        )
    if "/" in name or name.startswith("tinker://"):
        raise TinkexValidationError(
            field,
            f"{name!r} is a path, not a checkpoint name",
            "give a plain name such as 'step-0010'; the server builds the tinker:// path",
        )
    return name


def as_ttl_seconds(ttl: Any, field: str = "ttl_seconds") -> int | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        raise TinkexValidationError(
            field, f"must be a positive int or None, got {ttl!r}", "None means no expiry"
        )
    return ttl


def as_tinker_path(path: Any, field: str = "path", kind: str | None = None) -> TinkerPath:
    """Parse a ``tinker://run/kind/name`` path; ``kind`` restricts the checkpoint kind."""
    if not isinstance(path, str):
        raise TinkexValidationError(
            field, f"must be a tinker:// path string, got {type(path).__name__}"
        )
    try:
        parsed = TinkerPath.parse(path)
    except ValueError as exc:
        raise TinkexValidationError(
            field, str(exc), "use tinker://<training_run_id>/<weights|sampler_weights>/<name>"
        ) from None
    if kind is not None and parsed.kind != kind:
        if kind == "weights":
            fix = "load training state from a save_state() path (tinker://<run>/weights/<name>)"
        else:
            fix = "use a save_weights_for_sampler() path (tinker://<run>/sampler_weights/<name>)"
        raise TinkexValidationError(
            field, f"{path!r} is a {parsed.kind!r} checkpoint, expected {kind!r}", fix
        )
    return parsed


def as_any_tinker_path(path: Any, field: str = "path") -> str:
    """A ``tinker://`` path passed through as given (any server's shape)."""
    try:
        return check_tinker_path(path)
    except (TypeError, ValueError) as exc:
        raise TinkexValidationError(
            field, str(exc), "pass a tinker:// path as the server returned it"
        ) from None


def as_checkpoint_ref(
    path: Any, field: str = "tinker_path", *, need_checkpoint: bool = True
) -> CheckpointRef:
    """Any server's ``tinker://<run>/<checkpoint>`` path, split for a URL."""
    try:
        return CheckpointRef.parse(path, need_checkpoint=need_checkpoint)
    except (TypeError, ValueError) as exc:
        raise TinkexValidationError(
            field, str(exc), "pass a tinker:// checkpoint path as the server returned it"
        ) from None


def as_load_path(path: Any, field: str = "path") -> str:
    """A training-state path: any server's shape; a tinkex-shaped path must be ``weights``."""
    text = as_any_tinker_path(path, field)
    try:
        parsed = TinkerPath.parse(text)
    except ValueError:
        return text  # another server's shape: the server judges it
    if parsed.kind != "weights":
        raise TinkexValidationError(
            field,
            f"{text!r} is a {parsed.kind!r} checkpoint, expected 'weights'",
            "load training state from a save_state() path (tinker://<run>/weights/<name>)",
        )
    return text


def as_access_scope(value: Any, field: str = "access_scope") -> str:
    if value not in ("owned", "accessible"):
        raise TinkexValidationError(field, f"must be 'owned' or 'accessible', got {value!r}")
    return str(value)
