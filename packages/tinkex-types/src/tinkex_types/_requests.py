"""Request bodies (protocol.md §2.4, §4.3), as tinkex sends them.

Every model also parses what the official 0.16.1 client sends: no ``type`` keys, explicit
``null`` for unset optional values, unknown keys ignored. Like tinker 0.38, the models carry
their ``type`` discriminator (defaulted; a body with another value is refused) and write it;
0.16.1 never sends it (``to_json_dict(exclude_unset=True)`` leaves it out too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AliasChoices,
    Discriminator,
    Field,
    SerializeAsAny,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tinkex_types._base import PositionalWireModel, WireModel
from tinkex_types._datum import Datum
from tinkex_types._errors import TinkexValidationError
from tinkex_types._losses import LOSSES
from tinkex_types._model_input import ModelInput
from tinkex_types._numbers import FiniteFloat, Int64, int_rule
from tinkex_types._optimizer import (
    AdamOptimizerConfig,
    DimuonParams,
    OptimizerConfig,
    OptimParams,
    OptimParamsBase,
    SamplingClientKind,
    params_family,
)
from tinkex_types._params import AdamParams, LoraConfig, SamplingParams
from tinkex_types._tensor import TensorData

__all__ = [
    "CreateModelRequest",
    "CreateSamplingSessionRequest",
    "CreateSessionRequest",
    "ForwardBackwardInput",
    "ForwardBackwardRequest",
    "ForwardRequest",
    "FutureRetrieveRequest",
    "GetInfoRequest",
    "LoadWeightsRequest",
    "OptimStepRequest",
    "SampleRequest",
    "SaveWeightsForSamplerRequest",
    "SaveWeightsRequest",
    "SessionHeartbeatRequest",
    "SetCheckpointTtlRequest",
    "UnloadModelRequest",
    "WeightsInfoRequest",
]


def _check_name(name: str | None) -> str | None:
    if name is None:
        return None
    if not name:
        raise ValueError("the checkpoint name is empty: give a non-empty name")
    if "/" in name:
        raise ValueError(
            f"checkpoint name {name!r} contains '/': give a plain name such as 'step-0010', "
            "not a path"
        )
    return name


# -- session ---------------------------------------------------------------------------


class CreateSessionRequest(WireModel):
    """POST /api/v1/create_session."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"project_id"})

    tags: list[str] = Field(default_factory=list)
    user_metadata: dict[str, Any] = Field(default_factory=dict)
    sdk_version: str
    project_id: str | None = None
    #: A human-readable session name (not unique; display and search only).
    display_name: str | None = None
    type: Literal["create_session"] = "create_session"


class SessionHeartbeatRequest(WireModel):
    """POST /api/v1/session_heartbeat."""

    session_id: str
    type: Literal["session_heartbeat"] = "session_heartbeat"


# -- models ----------------------------------------------------------------------------


class CreateModelRequest(WireModel):
    """POST /api/v1/create_model (answered with a future whose result is
    :class:`CreateModelResponse`)."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"user_metadata"})

    session_id: str
    model_seq_id: Annotated[int, int_rule(ge=0)]
    base_model: str = Field(min_length=1)
    user_metadata: dict[str, Any] | None = None
    lora_config: LoraConfig = Field(default_factory=LoraConfig)
    #: The optimizer family, fixed for the model's lifetime (AdamW unless given).
    optimizer_config: OptimizerConfig = Field(default_factory=AdamOptimizerConfig)
    type: Literal["create_model"] = "create_model"


class GetInfoRequest(WireModel):
    """POST /api/v1/get_info."""

    model_id: str
    type: Literal["get_info"] = "get_info"


class UnloadModelRequest(WireModel):
    """POST /api/v1/unload_model."""

    model_id: str
    type: Literal["unload_model"] = "unload_model"


# -- training --------------------------------------------------------------------------


class ForwardBackwardInput(PositionalWireModel):
    """The batch of ``forward``/``forward_backward``: data, loss name and loss config."""

    positional_fields: ClassVar[tuple[str, ...]] = ("data", "loss_fn", "loss_fn_config")

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"loss_fn_config"})

    data: list[Datum]
    #: A name of the loss table (:data:`tinkex_types.LOSSES`); others are refused by name.
    loss_fn: str
    loss_fn_config: dict[str, FiniteFloat] | None = None
    #: Config values of the 0.38 map (protobuf field 7) that ``loss_fn_config`` cannot hold:
    #: strings (numbers are accepted too). The whole config is
    #: ``{**loss_fn_config, **loss_fn_config_v2}``. ``None`` (never written) when absent.
    loss_fn_config_v2: dict[str, FiniteFloat | str] | None = None

    @field_validator("loss_fn")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        # "custom": a loss created with create_custom_loss (loss_fn_config names its loss_id).
        if value not in LOSSES and value != "custom":
            raise ValueError(f"unknown loss {value!r}; the known losses are {', '.join(LOSSES)}")
        return value


class ForwardRequest(PositionalWireModel):
    """POST /api/v1/forward (no gradient is accumulated)."""

    positional_fields: ClassVar[tuple[str, ...]] = ("forward_input", "model_id", "seq_id")

    forward_input: ForwardBackwardInput
    model_id: str
    seq_id: Int64 | None = None


class ForwardBackwardRequest(PositionalWireModel):
    """POST /api/v1/forward_backward."""

    positional_fields: ClassVar[tuple[str, ...]] = (
        "forward_backward_input",
        "model_id",
        "seq_id",
    )

    forward_backward_input: ForwardBackwardInput
    model_id: str
    seq_id: Int64 | None = None
    #: ``True``: a forward pass only (how SDKs >= 0.25 send ``forward``, protobuf field 6).
    #: ``None`` (never written) otherwise.
    forward_only: bool | None = None


_OTHER_FAMILIES: TypeAdapter[OptimParamsBase] = TypeAdapter(
    Annotated[
        Annotated[DimuonParams, Tag("dimuon")] | Annotated[OptimParamsBase, Tag("other")],
        Discriminator(params_family),
    ]
)


def _optim_family(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Adam's parameters through the field's own schema (errors at ``adam_params.<name>``);
    another family (``type`` other than ``adamw``) through its model, its errors named
    under the key that was sent (``optimizer_params: learning_rate: ...``)."""
    if params_family(value) == "adam":
        return handler(value)
    try:
        return _OTHER_FAMILIES.validate_python(value)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"][1:])
            problems.append(f"{loc}: {err['msg']}" if loc else str(err["msg"]))
        raise PydanticCustomError(
            "tinkex_optim_params", "{problem}", {"problem": "; ".join(problems)}
        ) from None


if TYPE_CHECKING:
    _OptimParamsField = OptimParams
else:
    _OptimParamsField = Annotated[AdamParams, SerializeAsAny(), WrapValidator(_optim_family)]


class OptimStepRequest(WireModel):
    """POST /api/v1/optim_step.

    ``optim_params`` is read from ``optim_params``, ``adam_params`` (every SDK) or
    ``optimizer_params`` (0.38, non-Adam families) and written as ``adam_params`` when it
    is :class:`AdamParams`, else as ``optimizer_params`` (as tinker 0.38 writes it).
    """

    optim_params: _OptimParamsField = Field(
        default_factory=AdamParams,
        validation_alias=AliasChoices("optim_params", "adam_params", "optimizer_params"),
    )
    model_id: str
    seq_id: Int64 | None = None
    type: Literal["optim_step"] = "optim_step"

    if TYPE_CHECKING:  # the keywords the validation aliases accept, for type checkers

        def __init__(
            self,
            *,
            optim_params: OptimParams = ...,
            adam_params: AdamParams = ...,
            optimizer_params: OptimParams = ...,
            model_id: str,
            seq_id: int | None = None,
            type: Literal["optim_step"] = "optim_step",
        ) -> None: ...

    def _wire_finish(self, out: dict[str, Any]) -> dict[str, Any]:
        if "optim_params" in out:
            params = out.pop("optim_params")
            key = "adam_params" if isinstance(self.optim_params, AdamParams) else "optimizer_params"
            out[key] = params
        return out

    @property
    def adam_params(self) -> AdamParams:
        """``optim_params`` when they are Adam's; another family is a
        :class:`TinkexValidationError` naming ``optim_params.type``."""
        params = self.optim_params
        if isinstance(params, AdamParams):
            return params
        raise TinkexValidationError(
            "optim_params.type",
            f"is {params.type!r}; this operation takes AdamParams only",
            "use AdamParams (adam_params)",
        )


# -- weights ---------------------------------------------------------------------------


class SaveWeightsRequest(WireModel):
    """POST /api/v1/save_weights: ``path`` is the checkpoint *name* (no ``/``)."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"ttl_seconds"})

    model_id: str
    path: str | None = None
    seq_id: Int64 | None = None
    ttl_seconds: Annotated[int, int_rule(ge=1)] | None = None
    #: Replace a checkpoint of the same name instead of failing.
    overwrite: bool = False
    #: Metadata attached to the checkpoint (string values).
    user_metadata: dict[str, str] | None = None
    type: Literal["save_weights"] = "save_weights"

    @field_validator("path")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        return _check_name(value)


class SaveWeightsForSamplerRequest(WireModel):
    """POST /api/v1/save_weights_for_sampler: named (``path``) or unnamed
    (``sampling_session_seq_id``, no ``path``)."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"ttl_seconds"})

    model_id: str
    path: str | None = None
    sampling_session_seq_id: Annotated[int, int_rule(ge=0)] | None = None
    #: ``snapshot`` (fixed weights) or ``inflight`` (the model's shared, updated weights).
    kind: SamplingClientKind = "snapshot"
    seq_id: Int64 | None = None
    ttl_seconds: Annotated[int, int_rule(ge=1)] | None = None
    #: Metadata attached to the checkpoint (string values).
    user_metadata: dict[str, str] | None = None
    type: Literal["save_weights_for_sampler"] = "save_weights_for_sampler"

    @field_validator("path")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        return _check_name(value)


class LoadWeightsRequest(WireModel):
    """POST /api/v1/load_weights: restore a ``tinker://…/weights/…`` checkpoint; the
    optimizer state only when ``optimizer`` is true.

    Two addressings: ``model_id`` (+ ``seq_id``) loads into an existing model; ``session_id``
    + ``model_seq_id`` (tinker 0.38) creates the model ``<session_id>:train:<model_seq_id>``
    from the checkpoint (``base_model``, ``user_metadata`` and ``optimizer_config`` then
    apply). Exactly one of the two must be given.
    """

    model_id: str | None = None
    seq_id: Int64 | None = None
    session_id: str | None = None
    model_seq_id: Annotated[int, int_rule(ge=0)] | None = None
    base_model: str | None = None
    user_metadata: dict[str, Any] | None = None
    path: str
    optimizer: bool = False
    optimizer_config: OptimizerConfig | None = None
    #: Access token for a checkpoint of another account (hosted service). Never shown
    #: in reprs.
    weights_access_token: str | None = Field(default=None, repr=False)
    type: Literal["load_weights"] = "load_weights"

    @field_validator("path")
    @classmethod
    def _tinker_uri(cls, value: str) -> str:
        if not value.startswith("tinker://"):
            raise ValueError(f"path must be a tinker:// URI, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_addressing(self) -> Self:
        legacy = self.model_id is not None
        creating = self.session_id is not None or self.model_seq_id is not None
        if legacy == creating:
            raise ValueError(
                "give either model_id (load into an existing model) or session_id and "
                "model_seq_id (create the model from the checkpoint), not both"
            )
        if creating and (self.session_id is None or self.model_seq_id is None):
            raise ValueError("session_id and model_seq_id come together: give both")
        return self


# -- sampling --------------------------------------------------------------------------


class CreateSamplingSessionRequest(WireModel):
    """POST /api/v1/create_sampling_session (``base_model`` or ``model_path``)."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"base_model", "model_path"})

    session_id: str
    sampling_session_seq_id: Annotated[int, int_rule(ge=0)]
    base_model: str | None = None
    model_path: str | None = None
    type: Literal["create_sampling_session"] = "create_sampling_session"

    @field_validator("model_path")
    @classmethod
    def _tinker_uri(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("tinker://"):
            raise ValueError(f"model_path must be a tinker:// URI, got {value!r}")
        return value


class SampleRequest(WireModel):
    """POST /api/v1/asample (answered with a future whose result is SampleResponse)."""

    num_samples: Annotated[int, int_rule(ge=1)] = 1
    prompt: ModelInput
    sampling_params: SamplingParams = Field(default_factory=SamplingParams)
    sampling_session_id: str | None = None
    base_model: str | None = None
    model_path: str | None = None
    seq_id: Int64 | None = None
    prompt_logprobs: bool = False
    topk_prompt_logprobs: Annotated[int, int_rule(ge=0)] = 0
    #: Top-k logprobs at each sampled position (``SampledSequence.topk_logprobs``).
    topk_sample_logprobs: Annotated[int, int_rule(ge=0)] = 0
    #: int64 ids ``[len(prompt) - 1, K]`` whose prompt logprobs to return (-1: none).
    target_prompt_logprobs: TensorData | None = None
    #: Draws per prompt position after the first (``SampleResponse.prompt_alt_tokens``).
    prompt_alt_tokens_k: Annotated[int, int_rule(ge=0)] = 0
    #: Score only the last N prompt tokens (needs ``prompt_logprobs``).
    prompt_logprobs_last_n: Annotated[int, int_rule(ge=1)] | None = None
    #: Record stability information per sequence (StableReinforce training).
    record_stability_info: bool | None = None
    type: Literal["sample"] = "sample"

    @model_validator(mode="after")
    def _addressed(self) -> Self:
        if (
            self.sampling_session_id is None
            and self.base_model is None
            and (self.model_path is None)
        ):
            raise ValueError(
                "give sampling_session_id (or base_model / model_path) to say which sampler to use"
            )
        return self


# -- futures ---------------------------------------------------------------------------


class FutureRetrieveRequest(WireModel):
    """POST /api/v1/retrieve_future."""

    request_id: str
    allow_metadata_only: bool = False


# -- REST ------------------------------------------------------------------------------


class WeightsInfoRequest(WireModel):
    """POST /api/v1/weights_info."""

    tinker_path: str


class SetCheckpointTtlRequest(WireModel):
    """PUT …/checkpoints/{kind}/{name}/ttl: a positive TTL, or ``null`` to remove it."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"ttl_seconds"})

    ttl_seconds: Annotated[int, int_rule(ge=1)] | None = None
