"""Request bodies of the JSON generation (protocol.md §2.4), as tinkex sends them.

Every model also parses what the official 0.16.1 client sends: no ``type`` keys, explicit
``null`` for unset optional values, unknown keys ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Self

from pydantic import Field, field_validator, model_validator

from tinkex_types._base import WireModel
from tinkex_types._datum import Datum
from tinkex_types._losses import LOSSES
from tinkex_types._model_input import ModelInput
from tinkex_types._numbers import FiniteFloat, Int64, int_rule
from tinkex_types._params import AdamParams, LoraConfig, SamplingParams

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


class SessionHeartbeatRequest(WireModel):
    """POST /api/v1/session_heartbeat."""

    session_id: str


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


class GetInfoRequest(WireModel):
    """POST /api/v1/get_info."""

    model_id: str


class UnloadModelRequest(WireModel):
    """POST /api/v1/unload_model."""

    model_id: str


# -- training --------------------------------------------------------------------------


class ForwardBackwardInput(WireModel):
    """The batch of ``forward``/``forward_backward``: data, loss name and loss config."""

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


class ForwardRequest(WireModel):
    """POST /api/v1/forward (no gradient is accumulated)."""

    forward_input: ForwardBackwardInput
    model_id: str
    seq_id: Int64 | None = None


class ForwardBackwardRequest(WireModel):
    """POST /api/v1/forward_backward."""

    forward_backward_input: ForwardBackwardInput
    model_id: str
    seq_id: Int64 | None = None
    #: ``True``: a forward pass only (how SDKs >= 0.25 send ``forward``, protobuf field 6).
    #: ``None`` (never written) otherwise.
    forward_only: bool | None = None


class OptimStepRequest(WireModel):
    """POST /api/v1/optim_step."""

    adam_params: AdamParams = Field(default_factory=AdamParams)
    model_id: str
    seq_id: Int64 | None = None


# -- weights ---------------------------------------------------------------------------


class SaveWeightsRequest(WireModel):
    """POST /api/v1/save_weights: ``path`` is the checkpoint *name* (no ``/``)."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"ttl_seconds"})

    model_id: str
    path: str | None = None
    seq_id: Int64 | None = None
    ttl_seconds: Annotated[int, int_rule(ge=1)] | None = None

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
    seq_id: Int64 | None = None
    ttl_seconds: Annotated[int, int_rule(ge=1)] | None = None

    @field_validator("path")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        return _check_name(value)


class LoadWeightsRequest(WireModel):
    """POST /api/v1/load_weights: restore a ``tinker://…/weights/…`` checkpoint; the
    optimizer state only when ``optimizer`` is true."""

    model_id: str
    path: str
    optimizer: bool = False
    seq_id: Int64 | None = None

    @field_validator("path")
    @classmethod
    def _tinker_uri(cls, value: str) -> str:
        if not value.startswith("tinker://"):
            raise ValueError(f"path must be a tinker:// URI, got {value!r}")
        return value


# -- sampling --------------------------------------------------------------------------


class CreateSamplingSessionRequest(WireModel):
    """POST /api/v1/create_sampling_session (``base_model`` or ``model_path``)."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"base_model", "model_path"})

    session_id: str
    sampling_session_seq_id: Annotated[int, int_rule(ge=0)]
    base_model: str | None = None
    model_path: str | None = None

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
