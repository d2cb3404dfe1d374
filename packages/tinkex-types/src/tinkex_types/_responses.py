"""Response bodies and future results of the JSON generation (protocol.md §2.4, §2.7, §2.12).

Parsing is tolerant: unknown keys are ignored and ``type`` keys are not required. The
``type`` discriminators are tinker 0.38's: defaulted (and written) where tinker defaults
them, ``None`` (and not written) where tinker's are optional.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from tinkex_types import _sample_arrays as arrays
from tinkex_types._base import PositionalWireModel, StopReason, WireModel
from tinkex_types._checkpoints import Cursor, ListSessionsResponse
from tinkex_types._optimizer import AdamOptimizerConfig, OptimizerConfig
from tinkex_types._tensor import TensorData

__all__ = [
    "CreateModelResponse",
    "CreateSamplingSessionResponse",
    "CreateSessionResponse",
    "EmptyResponse",
    "ForwardBackwardOutput",
    "GetInfoResponse",
    "GetSamplerResponse",
    "GetServerCapabilitiesResponse",
    "HealthResponse",
    "ListSessionsPage",
    "LoadWeightsResponse",
    "ModelData",
    "OptimStepResponse",
    "PromptAltTokens",
    "SampleResponse",
    "SampleStreamChunk",
    "SampledSequence",
    "SaveWeightsForSamplerResponse",
    "SaveWeightsResponse",
    "SessionHeartbeatAck",
    "SessionHeartbeatResponse",
    "SupportedModel",
    "UnloadModelResponse",
    "WeightsInfoResponse",
]


# -- session ---------------------------------------------------------------------------


class CreateSessionResponse(WireModel):
    session_id: str
    info_message: str | None = None
    warning_message: str | None = None
    error_message: str | None = None
    type: Literal["create_session"] = "create_session"


class SessionHeartbeatResponse(WireModel):
    """Any object (``{}`` parses); written as ``{"type": "session_heartbeat"}``."""

    type: Literal["session_heartbeat"] = "session_heartbeat"


class HealthResponse(WireModel):
    status: str = "ok"


class SupportedModel(WireModel):
    """One entry of ``get_server_capabilities`` (a plain string is read as ``model_name``)."""

    model_name: str | None = None
    model_id: str | None = None
    arch: str | None = None
    max_context_length: int | None = None
    trainable: bool | None = None
    sampleable: bool | None = None


class GetServerCapabilitiesResponse(WireModel):
    supported_models: list[SupportedModel] = Field(default_factory=list)

    @field_validator("supported_models", mode="before")
    @classmethod
    def _strings_are_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"model_name": v} if isinstance(v, str) else v for v in value]
        return value

    def model_names(self) -> list[str]:
        """The model names, skipping entries without one."""
        return [m.model_name for m in self.supported_models if m.model_name]


# -- models ----------------------------------------------------------------------------


class CreateModelResponse(WireModel):
    """Result of the ``create_model`` future."""

    model_id: str
    type: Literal["create_model"] = "create_model"


class ModelData(WireModel):
    arch: str | None = None
    model_name: str | None = None
    tokenizer_id: str | None = None


class GetInfoResponse(WireModel):
    model_id: str
    model_data: ModelData
    is_lora: bool | None = None
    lora_rank: int | None = None
    model_name: str | None = None
    optimizer_config: OptimizerConfig = Field(default_factory=AdamOptimizerConfig)
    type: Literal["get_info"] | None = None


class UnloadModelResponse(WireModel):
    model_id: str
    type: Literal["unload_model"] | None = None


# -- training --------------------------------------------------------------------------


class ForwardBackwardOutput(PositionalWireModel):
    """Result of ``forward`` and ``forward_backward``: one output per datum, in order."""

    positional_fields: ClassVar[tuple[str, ...]] = (
        "loss_fn_output_type",
        "loss_fn_outputs",
        "metrics",
    )

    loss_fn_output_type: str = "ArrayRecord"
    loss_fn_outputs: list[dict[str, TensorData]] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)


class OptimStepResponse(WireModel):
    metrics: dict[str, float] | None = None


# -- weights ---------------------------------------------------------------------------


class SaveWeightsResponse(WireModel):
    path: str
    """``tinker://<model_id>/weights/<name>``."""
    type: Literal["save_weights"] | None = None


class SaveWeightsForSamplerResponse(WireModel):
    """Named saves return ``path``; unnamed saves return ``sampling_session_id`` only."""

    path: str | None = None
    sampling_session_id: str | None = None
    type: Literal["save_weights_for_sampler"] | None = None


class LoadWeightsResponse(WireModel):
    path: str | None = None
    #: The model the weights were loaded onto (0.38 creates it when loading).
    model_id: str | None = None
    type: Literal["load_weights"] | None = None


class WeightsInfoResponse(WireModel):
    base_model: str
    optimizer_config: OptimizerConfig = Field(default_factory=AdamOptimizerConfig)
    is_lora: bool
    lora_rank: int | None = None
    train_unembed: bool | None = None
    train_mlp: bool | None = None
    train_attn: bool | None = None


# -- sampling --------------------------------------------------------------------------


class CreateSamplingSessionResponse(WireModel):
    sampling_session_id: str
    type: Literal["create_sampling_session"] = "create_sampling_session"


class GetSamplerResponse(WireModel):
    """GET /api/v1/samplers/{sampler_id}."""

    sampler_id: str
    base_model: str
    model_path: str | None = None


#: The top-k candidates at one position: ``(token_id, logprob)`` pairs, most likely first.
TopkEntry = list[tuple[int, float]]


def _topk_pairs(value: Any) -> Any:
    """Accept ``{"token_id", "logprob"}`` objects as well as pairs at each position."""
    if not isinstance(value, list):
        return value
    out: list[Any] = []
    for position in value:
        if isinstance(position, list):
            out.append(
                [(p["token_id"], p["logprob"]) if isinstance(p, dict) else p for p in position]
            )
        else:
            out.append(position)
    return out


class SampledSequence(PositionalWireModel):
    """One sampled sequence. Built from lists, or (as in tinker 0.38) from numpy arrays:
    ``SampledSequence(stop_reason, sequence_id, tokens_np, logprobs_np, topk_logprobs_np)``;
    ``tokens_np``/``logprobs_np``/``topk_logprobs_np`` read them back as arrays."""

    positional_fields: ClassVar[tuple[str, ...]] = (
        "stop_reason",
        "sequence_id",
        "tokens_np",
        "logprobs_np",
        "topk_logprobs_np",
    )
    init_only: ClassVar[tuple[str, ...]] = ("tokens_np", "logprobs_np", "topk_logprobs_np")
    init_defaults: ClassVar[frozenset[str]] = frozenset({"tokens"})

    stop_reason: StopReason
    tokens: list[int]
    logprobs: list[float] | None = None
    #: Top-k logprobs at each generated position (SDK 0.38 ``topk_sample_logprobs``;
    #: protobuf ``topk_sampled_logprobs``). ``None`` (never written) when not requested.
    topk_logprobs: list[TopkEntry | None] | None = None
    #: Session-scoped id of this sequence (tinker 0.38): taken from the ``/asample``
    #: answer's ``sample_sequence_ids`` by the client; never written by servers here.
    sequence_id: str | None = None

    @field_validator("topk_logprobs", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        return _topk_pairs(value)

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        tokens, logprobs, topk = (data.pop(n, None) for n in cls.init_only)
        if tokens is not None:
            data.setdefault("tokens", arrays.list_of(tokens, "tokens_np"))
        if logprobs is not None:
            data.setdefault("logprobs", arrays.list_of(logprobs, "logprobs_np"))
        if topk is not None:
            data.setdefault("topk_logprobs", arrays.topk_lists(topk, "topk_logprobs_np"))
        data.setdefault("tokens", [])
        return data

    @property
    def tokens_np(self) -> Any:
        """The tokens as an int32 numpy array."""
        return arrays.int_array(self.tokens)

    @property
    def logprobs_np(self) -> Any:
        """The logprobs as a float32 numpy array (``None`` when not requested)."""
        return None if self.logprobs is None else arrays.float_array(list(self.logprobs))

    @property
    def topk_logprobs_np(self) -> arrays.TopkLogprobs | None:
        """The top-k logprobs as ``(len(tokens), k)`` matrices (``None`` when not requested)."""
        return None if self.topk_logprobs is None else arrays.topk_arrays(self.topk_logprobs)

    @model_validator(mode="after")
    def _aligned(self) -> SampledSequence:
        if self.logprobs is not None and len(self.logprobs) != len(self.tokens):
            raise ValueError(
                f"logprobs has {len(self.logprobs)} entries but tokens has "
                f"{len(self.tokens)}: give one logprob per generated token"
            )
        return self


class PromptAltTokens(PositionalWireModel):
    """Draws from the next-token distribution at each prompt position after the first
    (SDK 0.38 ``prompt_alt_tokens_k``): two ``[len(prompt) - 1, k]`` tensors."""

    positional_fields: ClassVar[tuple[str, ...]] = ("tokens", "logprobs")

    tokens: TensorData
    logprobs: TensorData


class SampleResponse(PositionalWireModel):
    """Result of the ``asample`` future.

    The last three fields come from SDK 0.38 (protobuf results only); they are ``None``,
    and never written, when absent. Like tinker 0.38 it takes ``prompt_logprobs_np`` (NaN:
    not computed) and ``topk_prompt_logprobs_np`` (top-k matrices) too, by position or
    keyword, and reads them back under those names.
    """

    positional_fields: ClassVar[tuple[str, ...]] = (
        "sequences",
        "prompt_logprobs_np",
        "topk_prompt_logprobs_np",
        "target_prompt_logprobs",
        "prompt_cache_hit_tokens",
        "prompt_alt_tokens",
    )
    init_only: ClassVar[tuple[str, ...]] = ("prompt_logprobs_np", "topk_prompt_logprobs_np")

    sequences: list[SampledSequence]
    prompt_logprobs: list[float | None] | None = None
    topk_prompt_logprobs: list[TopkEntry | None] | None = None
    #: Prompt tokens served from the prefix cache (protobuf ``prompt_cache_hit_tokens``).
    prompt_cache_hit_tokens: int | None = None
    #: Logprobs of the ids of ``SampleRequest.target_prompt_logprobs`` (same shape).
    target_prompt_logprobs: TensorData | None = None
    prompt_alt_tokens: PromptAltTokens | None = None

    @field_validator("topk_prompt_logprobs", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        return _topk_pairs(value)

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        logprobs, topk = (data.pop(n, None) for n in cls.init_only)
        if logprobs is not None:
            data.setdefault(
                "prompt_logprobs", arrays.prompt_logprobs_list(logprobs, "prompt_logprobs_np")
            )
        if topk is not None:
            data.setdefault(
                "topk_prompt_logprobs", arrays.topk_lists(topk, "topk_prompt_logprobs_np")
            )
        return data

    @property
    def prompt_logprobs_np(self) -> Any:
        """The prompt logprobs as a float32 numpy array, NaN where not computed (``None``
        when not requested)."""
        if self.prompt_logprobs is None:
            return None
        return arrays.float_array(list(self.prompt_logprobs))

    @property
    def topk_prompt_logprobs_np(self) -> arrays.TopkLogprobs | None:
        """The prompt's top-k logprobs as ``(len(prompt), k)`` matrices."""
        if self.topk_prompt_logprobs is None:
            return None
        return arrays.topk_arrays(self.topk_prompt_logprobs)


class SampleStreamChunk(WireModel):
    """One server-sent event of ``POST /api/v1/stream_sample`` (tinkex extension; 0.16.1
    never streams). ``event_type`` is ``error`` with an ``error`` key, ``done`` with a
    ``finish_reason``, else ``token``."""

    token: str | None = None
    token_id: int | None = None
    index: int | None = None
    logprob: float | None = None
    finish_reason: str | None = None
    total_tokens: int | None = None
    error: str | None = None

    @property
    def event_type(self) -> Literal["token", "done", "error"]:
        if self.error is not None:
            return "error"
        if self.finish_reason is not None:
            return "done"
        return "token"


# -- answers of the local server (tinkex-server) -----------------------------------------


class SessionHeartbeatAck(SessionHeartbeatResponse):
    """What tinkex-server answers to a heartbeat: ``{"type": "session_heartbeat"}``."""


class EmptyResponse(WireModel):
    """``{}``: the answer of REST calls that only change something (delete, publish, ttl)."""


class ListSessionsPage(ListSessionsResponse):
    """GET /api/v1/sessions of tinkex-server: the session ids and the page cursor."""

    cursor: Cursor | None = None
