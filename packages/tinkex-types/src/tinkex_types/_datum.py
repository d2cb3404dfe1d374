"""Datum: one training example (model input plus named loss inputs)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import Field, ValidationError, field_validator, model_validator

from tinkex_types._base import PositionalWireModel, TaggedWireModel, TensorDtype
from tinkex_types._errors import TinkexValidationError
from tinkex_types._lazy import fill_model
from tinkex_types._model_input import ModelInput
from tinkex_types._numbers import FLOAT32_MAX
from tinkex_types._tensor import RefusedTensor, TensorData, tensor_first_non_finite

__all__ = [
    "LOSS_FN_INPUT_DTYPES",
    "Datum",
    "LossFnInputs",
    "LossFnOutput",
    "PromptProvenanceSpan",
    "ProvenanceSpan",
    "ProvenanceSpans",
    "SampledProvenanceSpan",
    "to_tensor_data",
]

LossFnInputs = dict[str, TensorData]
LossFnOutput = dict[str, TensorData]

#: dtype given to plain lists under these keys (as the official SDK does).
LOSS_FN_INPUT_DTYPES: dict[str, TensorDtype] = {
    "target_tokens": "int64",
    "weights": "float32",
    "advantages": "float32",
    "logprobs": "float32",
    "clip_low_threshold": "float32",
    "clip_high_threshold": "float32",
}


def _is_numpy(value: object) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "dtype")


def _is_torch(value: object) -> bool:
    mod = type(value).__module__
    return (mod == "torch" or mod.startswith("torch.")) and hasattr(value, "detach")


def to_tensor_data(value: Any, key: str | None = None) -> Any:
    """Convert a list, tuple, numpy array or torch tensor to :class:`TensorData`.

    Plain lists get the dtype of ``key`` from :data:`LOSS_FN_INPUT_DTYPES`, or else
    int64 when every element is an int and float32 otherwise. Nested lists keep their
    shape. TensorData, dicts and anything else are returned unchanged (for validation).
    """
    if isinstance(value, TensorData):
        return value
    if _is_torch(value):
        return TensorData.from_torch(value)
    if _is_numpy(value):
        return TensorData.from_numpy(value)
    if isinstance(value, (list, tuple)):
        dtype = LOSS_FN_INPUT_DTYPES.get(key) if key is not None else None
        return TensorData.from_list(value, dtype)  # which copies it
    return value


class ProvenanceSpan(TaggedWireModel):
    """A run of a datum's tokens that reproduces positions ``[offset, offset + length)`` of
    a sampled sequence's prompt (``source="prompt"``) or of its sampled tokens
    (``"sampled"``). SDK 0.38 sends these for ``stable_reinforce`` (protobuf only)."""

    source: Literal["prompt", "sampled"]
    sequence_id: str = Field(min_length=1)
    offset: int = Field(default=0, ge=0)
    length: int = Field(ge=0)

    wire_tag: ClassVar[str] = "source"


class PromptProvenanceSpan(ProvenanceSpan):
    """A run of tokens given as sampling input: positions ``[offset, offset + length)`` of
    the prompt of the request that sampled sequence ``sequence_id`` (tinker 0.38)."""

    source: Literal["prompt"] = "prompt"


class SampledProvenanceSpan(ProvenanceSpan):
    """A run of tokens one sequence sampled: positions ``[offset, offset + length)`` of the
    sampled tokens of ``sequence_id`` (tinker 0.38)."""

    source: Literal["sampled"] = "sampled"


#: One span of a Datum's provenance, told apart by ``source``.
ProvenanceSpanItem = Annotated[
    PromptProvenanceSpan | SampledProvenanceSpan, Field(discriminator="source")
]
#: Consecutive runs tiling one Datum field (see :meth:`Datum.with_provenance`).
ProvenanceSpans = list[ProvenanceSpanItem]

_SPAN_KINDS: dict[str, type[ProvenanceSpan]] = {
    "prompt": PromptProvenanceSpan,
    "sampled": SampledProvenanceSpan,
}


def _span_kind(value: Any) -> Any:
    """A plain :class:`ProvenanceSpan` (as decoders build them) as its kind's class;
    anything else is left to validation."""
    if type(value) is ProvenanceSpan and value.source in _SPAN_KINDS:
        return _SPAN_KINDS[value.source].model_construct(
            _fields_set=set(value.model_fields_set), **dict(value)
        )
    return value


def _check_tiling(field: str, spans: list[ProvenanceSpan], length: int) -> None:
    total = sum(span.length for span in spans)
    if total != length:
        raise TinkexValidationError(
            field,
            f"the spans cover {total} positions but the field has {length}",
            "give runs whose lengths add up to the field's length exactly",
        )


class Datum(PositionalWireModel):
    """``{"model_input": ModelInput, "loss_fn_inputs": {name: TensorData}}``.

    ``loss_fn_inputs`` also accepts lists, numpy arrays and torch tensors and converts them
    (``target_tokens`` -> int64; ``weights``, ``advantages``, ``logprobs`` and the clip
    thresholds -> float32; other keys by their values). Every input must hold finite
    numbers (float32 inputs within the float32 range): a bad one is a validation error
    naming ``loss_fn_inputs.<key>``, on the client and on the server alike.
    """

    positional_fields: ClassVar[tuple[str, ...]] = (
        "model_input",
        "loss_fn_inputs",
        "model_input_spans",
        "loss_fn_input_spans",
    )

    model_input: ModelInput
    loss_fn_inputs: dict[str, TensorData] = Field(default_factory=dict)
    #: Provenance of the input tokens and of the loss rows (``target_tokens``): consecutive
    #: runs tiling each (SDK 0.38). ``None`` (never written) when absent.
    model_input_spans: ProvenanceSpans | None = None
    loss_fn_input_spans: ProvenanceSpans | None = None

    def __init__(self, /, *args: Any, **data: Any) -> None:
        # The common call, ``Datum(model_input=ModelInput, loss_fn_inputs={str: values})``
        # (or by position), is converted and checked here as validation would, without
        # pydantic's per-model work; anything else, or a refused input, takes that path.
        if len(args) + len(data) == 2 and len(args) <= 2 and type(self) is Datum:
            named = dict(zip(self.positional_fields, args, strict=False))
            if not named.keys() & data.keys():
                named.update(data)
                model_input = named.get("model_input")
                inputs = named.get("loss_fn_inputs")
                if type(model_input) is ModelInput and type(inputs) is dict:
                    converted = {k: _loss_input(v, k) for k, v in inputs.items()}
                    if all(type(k) is str and type(v) is TensorData for k, v in converted.items()):
                        fields = {"model_input": model_input, "loss_fn_inputs": converted}
                        fill_model(self, {**fields, **_NO_SPANS}, set(fields))
                        return
                    data = (
                        {**data, "loss_fn_inputs": converted} if "loss_fn_inputs" in data else data
                    )
                    args = tuple(converted if v is inputs else v for v in args)
        super().__init__(*args, **data)

    # As PositionalWireModel: model_validate never calls __init__.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @field_validator("model_input_spans", "loss_fn_input_spans", mode="before")
    @classmethod
    def _span_kinds(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [_span_kind(v) for v in value]
        return value

    def with_provenance(
        self, model_input: list[ProvenanceSpan], loss_fn_inputs: list[ProvenanceSpan]
    ) -> Self:
        """A copy carrying provenance: ``model_input`` spans tile the input tokens,
        ``loss_fn_inputs`` spans tile ``loss_fn_inputs["target_tokens"]`` (when it is 1-D).
        A miscounted tiling is a :class:`TinkexValidationError` naming the argument."""
        _check_tiling("with_provenance.model_input", model_input, self.model_input.length)
        targets = self.loss_fn_inputs.get("target_tokens")
        shape = None if targets is None else targets.effective_shape
        if shape is not None and len(shape) == 1:
            _check_tiling("with_provenance.loss_fn_inputs", loss_fn_inputs, shape[0])
        data = dict(self.__dict__)
        data["model_input_spans"] = list(model_input)
        data["loss_fn_input_spans"] = list(loss_fn_inputs)
        return type(self).model_validate(data)

    @model_validator(mode="before")
    @classmethod
    def _convert_inputs(cls, data: Any) -> Any:
        if isinstance(data, dict):
            inputs = data.get("loss_fn_inputs")
            if isinstance(inputs, dict):
                data = dict(data)
                data["loss_fn_inputs"] = {k: _loss_input(v, k) for k, v in inputs.items()}
        return data


_NO_SPANS: dict[str, Any] = {"model_input_spans": None, "loss_fn_input_spans": None}


def _loss_input(value: Any, key: Any) -> Any:
    """``value`` as a checked TensorData, or a :class:`RefusedTensor` saying why not (so
    the error is reported at ``loss_fn_inputs.<key>``); anything else is left to pydantic.

    Loss inputs must be finite numbers that fit float32 (float32 inputs) or int64: a NaN
    or an infinity would train on garbage, and a float64 beyond float32 would silently
    become infinity on the server.
    """
    try:
        tensor = to_tensor_data(value, key if isinstance(key, str) else None)
        if isinstance(tensor, dict):  # the JSON form: checked here to check finiteness
            tensor = TensorData.model_validate(tensor)
    except ValidationError as exc:
        return RefusedTensor(_describe(exc))
    except (TypeError, ValueError, OverflowError) as exc:
        return RefusedTensor(str(exc))
    if isinstance(tensor, TensorData) and tensor.is_sparse:
        tensor = tensor.densified()  # sparse CSR (SDK 0.38): unlisted entries are 0
    if isinstance(tensor, TensorData) and tensor.dtype == "float32":
        bad = tensor_first_non_finite(tensor)
        if bad is not None:
            return RefusedTensor(
                f"data[{bad}] is {tensor.data[bad]!r}: loss inputs must be finite numbers "
                f"within the float32 range (|x| <= {FLOAT32_MAX:.8g}); NaN and infinity are "
                "refused (replace them, e.g. clip or zero them)"
            )
    return tensor


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)
