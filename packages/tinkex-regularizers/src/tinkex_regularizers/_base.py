"""The regularizer protocol: options, the batch a regularizer sees, errors, value checks.

The bottom layer of the package (above ``_tensors`` only): ``_spec``, ``_pipeline``,
``_regularizer`` and the built-ins import it; it imports none of them.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import pydantic
import torch

from tinkex_regularizers._tensors import as_tensor, loss_fn_inputs_of
from tinkex_types import TinkexError, TinkexValidationError

__all__ = [
    "BaseLossFn",
    "LossFn",
    "Metrics",
    "RegularizerBatch",
    "RegularizerError",
    "RegularizerOptions",
    "RegularizerProtocol",
    "RegularizerTimeoutError",
    "loss_tensor",
    "to_float",
    "validate_options",
]

#: Metrics are plain numbers keyed by name.
Metrics = dict[str, float]
#: The official ``tinker`` custom-loss signature: ``(data, logprobs) -> (loss, metrics)``.
LossFn = Callable[[list[Any], list[torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]
#: A base loss may also return a bare tensor (no metrics).
BaseLossFn = Callable[[list[Any], list[torch.Tensor]], Any]


class RegularizerError(TinkexError):
    """A regularizer (or the base loss) failed inside a pipeline; ``__cause__`` holds why."""

    def __init__(self, name: str, error: BaseException) -> None:
        self.name = name
        self.error = error
        super().__init__(f"regularizer {name!r} failed: {type(error).__name__}: {error}")


class RegularizerTimeoutError(RegularizerError, TimeoutError):
    """A regularizer did not finish within the pipeline's ``timeout``."""

    def __init__(self, name: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(name, TimeoutError(f"still running after {timeout:g} s"))


class RegularizerOptions(pydantic.BaseModel):
    """Base of every built-in's options: frozen, unknown keys rejected."""

    model_config = pydantic.ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, populate_by_name=True
    )


OptionsT = TypeVar("OptionsT", bound=RegularizerOptions)


def validate_options(
    regularizer: str, options_model: type[OptionsT], options: Mapping[str, Any] | OptionsT | None
) -> OptionsT:
    """Validate ``options`` against ``options_model``.

    Raises :class:`tinkex_types.TinkexValidationError` whose ``field`` is
    ``"<regularizer>.<option>"`` and whose fix lists the valid options.
    """
    if isinstance(options, options_model):
        return options
    raw = dict(options or {})
    try:
        return options_model.model_validate(raw)
    except pydantic.ValidationError as exc:
        valid = ", ".join((info.alias or name) for name, info in options_model.model_fields.items())
        problems = []
        first_field = regularizer
        for i, err in enumerate(exc.errors()):
            loc = str(err["loc"][0]) if err["loc"] else "options"  # the top-level option
            if i == 0:
                first_field = f"{regularizer}.{loc}"
            shown = err.get("input")
            detail = err["msg"]
            if err["type"] != "extra_forbidden" and not isinstance(shown, dict):
                detail += f" (got {shown!r})"
            problems.append(f"{loc}: {detail}" if i else detail)
        raise TinkexValidationError(
            first_field,
            "; ".join(problems),
            f"valid options of {regularizer!r}: {valid or 'none'}",
        ) from None


@dataclass(frozen=True)
class RegularizerBatch:
    """What a regularizer sees: the data and one logprobs tensor per datum.

    ``logprobs[i]`` are the per-token log-probabilities of ``data[i]``'s target tokens (1-D in
    practice; other shapes are flattened by the built-ins). ``reference_logprobs`` (one per
    datum) is an optional batch-wide reference given to the pipeline. ``base_loss`` is the
    pipeline's base loss ``(data, logprobs) -> loss | (loss, metrics)``, which
    :class:`~tinkex_regularizers.GradientPenalty` differentiates.
    """

    data: Sequence[Any]
    logprobs: Sequence[torch.Tensor]
    reference_logprobs: Sequence[torch.Tensor] | None = None
    base_loss: BaseLossFn | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if len(self.data) != len(self.logprobs):
            raise TinkexValidationError(
                "logprobs",
                f"got {len(self.logprobs)} logprobs tensors for {len(self.data)} data",
                "give exactly one logprobs tensor per datum, in the same order",
            )
        for i, lp in enumerate(self.logprobs):
            if not isinstance(lp, torch.Tensor) or not lp.is_floating_point():
                raise TinkexValidationError(
                    f"logprobs[{i}]",
                    f"expected a floating-point torch tensor, got {_describe(lp)}",
                    "pass the per-datum logprobs tensors as given to the loss function",
                )
        if self.reference_logprobs is not None and len(self.reference_logprobs) != len(self.data):
            raise TinkexValidationError(
                "reference_logprobs",
                f"got {len(self.reference_logprobs)} reference tensors for {len(self.data)} data",
                "give one reference tensor per datum",
            )

    def __len__(self) -> int:
        return len(self.data)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the logprobs (the default dtype for an empty batch)."""
        return self.logprobs[0].dtype if self.logprobs else torch.get_default_dtype()

    @property
    def device(self) -> torch.device:
        return self.logprobs[0].device if self.logprobs else torch.device("cpu")

    def zero(self) -> torch.Tensor:
        """A scalar zero in the batch's dtype (the value of any built-in on no data)."""
        return torch.zeros((), dtype=self.dtype, device=self.device)

    def has_field(self, name: str, index: int) -> bool:
        return name in loss_fn_inputs_of(self.data[index])

    def field(self, name: str, index: int, *, match_logprobs: bool = True) -> torch.Tensor:
        """``data[index].loss_fn_inputs[name]`` as a detached tensor in the logprobs' dtype.

        With ``match_logprobs`` its element count must equal that of ``logprobs[index]``.
        """
        inputs = loss_fn_inputs_of(self.data[index])
        where = f"data[{index}].loss_fn_inputs[{name!r}]"
        if name not in inputs:
            have = ", ".join(sorted(inputs)) or "none"
            raise TinkexValidationError(
                where, f"missing (this datum has: {have})", f"add {name!r} to loss_fn_inputs"
            )
        lp = self.logprobs[index]
        tensor = as_tensor(inputs[name], where=where, dtype=lp.dtype, device=lp.device)
        if match_logprobs and tensor.numel() != lp.numel():
            raise TinkexValidationError(
                where,
                f"has {tensor.numel()} elements but logprobs[{index}] has {lp.numel()}",
                "give one value per target token",
            )
        return tensor

    def mask(self, name: str, index: int) -> torch.Tensor:
        """Flat boolean mask ``loss_fn_inputs[name] != 0`` for datum ``index``."""
        return self.field(name, index).reshape(-1) != 0


@runtime_checkable
class RegularizerProtocol(Protocol):
    """What the pipeline needs from a regularizer object (subclassing is optional).

    A registered class must be constructible as ``cls(**options)``.
    """

    name: str

    def compute(self, batch: RegularizerBatch) -> tuple[torch.Tensor, Mapping[str, Any]]:
        """Return a scalar loss tensor (differentiable w.r.t. ``batch.logprobs``) and metrics."""
        ...


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor"
    return type(value).__name__


def to_float(value: Any, where: str) -> float:
    """``value`` (a real number or a one-element tensor) as a float; errors name ``where``."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TinkexValidationError(
                where, f"is a tensor of shape {tuple(value.shape)}", "give a scalar"
            )
        return float(value.detach().reshape(()).item())
    if isinstance(value, numbers.Real):
        return float(value)
    raise TinkexValidationError(where, f"is {type(value).__name__}, not a number", "give a number")


def loss_tensor(result: Any, where: str) -> torch.Tensor:
    """The loss tensor of a loss function's result (``tensor`` or ``(tensor, metrics)``)."""
    loss = result[0] if isinstance(result, tuple) else result
    if not isinstance(loss, torch.Tensor):
        raise TinkexValidationError(
            where, f"returned {type(loss).__name__}, not a tensor", "return (loss_tensor, metrics)"
        )
    if loss.numel() != 1:
        raise TinkexValidationError(
            where, f"returned a tensor of shape {tuple(loss.shape)}", "return a scalar loss"
        )
    return loss.reshape(())
