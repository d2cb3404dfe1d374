"""The future protocol (protocol.md §2.5): submit answers and ``retrieve_future`` bodies."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, overload

from pydantic import BaseModel, Field, field_serializer, field_validator

from tinkex_types._base import QueueState, TaggedWireModel, WireModel
from tinkex_types._errors import RequestErrorCategory
from tinkex_types._responses import (
    CreateModelResponse,
    ForwardBackwardOutput,
    LoadWeightsResponse,
    OptimStepResponse,
    SampleResponse,
    SaveWeightsForSamplerResponse,
    SaveWeightsResponse,
    UnloadModelResponse,
)

__all__ = [
    "REQUEST_TYPES",
    "FutureCompletedMetadataResponse",
    "FutureCompletion",
    "FutureFailed",
    "FutureFinished",
    "FuturePendingResponse",
    "FutureResponse",
    "FutureRetrieveResponse",
    "FuturesRetrieveRequest",
    "FuturesRetrieveResponse",
    "JoinSamplingSessionRequest",
    "JoinSamplingSessionResponse",
    "RequestFailedResponse",
    "RequestType",
    "SamplingSessionFuturesTarget",
    "TryAgainResponse",
    "UntypedAPIFuture",
    "parse_future_response",
]

#: Values of the ``X-Tinker-Request-Type`` header of ``retrieve_future``.
RequestType = Literal[
    "CreateModel",
    "Forward",
    "ForwardBackward",
    "OptimStep",
    "SaveWeights",
    "SaveWeightsForSampler",
    "LoadWeights",
    "Sample",
    "UnloadModel",
]

#: The result model of each request type.
REQUEST_TYPES: dict[str, type[WireModel]] = {
    "CreateModel": CreateModelResponse,
    "Forward": ForwardBackwardOutput,
    "ForwardBackward": ForwardBackwardOutput,
    "OptimStep": OptimStepResponse,
    "SaveWeights": SaveWeightsResponse,
    "SaveWeightsForSampler": SaveWeightsForSamplerResponse,
    "LoadWeights": LoadWeightsResponse,
    "Sample": SampleResponse,
    "UnloadModel": UnloadModelResponse,
}


class UntypedAPIFuture(WireModel):
    """What a submit call answers: ``{"request_id": ..., "model_id"?: ...}``."""

    request_id: str
    model_id: str | None = None
    #: Sampling futures only: one id per requested sample, in the response's sequence
    #: order; each becomes that ``SampledSequence.sequence_id`` (tinker 0.38 requires them).
    sample_sequence_ids: list[str] | None = None


FutureResponse = UntypedAPIFuture


class TryAgainResponse(WireModel):
    """``{"type": "try_again", ...}``: not done yet, poll again (200, 408 or 429 body)."""

    type: Literal["try_again"] = "try_again"
    request_id: str
    queue_state: QueueState = QueueState.ACTIVE
    queue_state_reason: str | None = None
    retry_after_ms: int | None = Field(default=None, ge=0)
    #: tinkex extension (docs/queue.md): the model's requests that run before this one.
    queue_position: int | None = Field(default=None, ge=0)
    #: tinkex extension: ``queue_position`` x the mean of the model's recent step times.
    estimated_wait_s: float | None = Field(default=None, ge=0)

    @field_validator("queue_state", mode="before")
    @classmethod
    def _tolerant_state(cls, value: Any) -> QueueState:
        return QueueState.parse(value)


class FutureCompletedMetadataResponse(WireModel):
    """``{"status": "complete_metadata", "response_payload_size": N}``."""

    status: Literal["complete_metadata"] = "complete_metadata"
    response_payload_size: int = Field(ge=0)


class FuturePendingResponse(WireModel):
    """``{"status": "pending"}`` (Elixir-style servers; tinkex-server never sends it)."""

    status: Literal["pending"] = "pending"
    queue_state: QueueState | None = None
    queue_state_reason: str | None = None

    @field_validator("queue_state", mode="before")
    @classmethod
    def _tolerant_state(cls, value: Any) -> QueueState | None:
        return None if value is None else QueueState.parse(value)


class RequestFailedResponse(WireModel):
    """``{"error": "...", "category": "user" | "server" | "unknown"}``: terminal failure."""

    error: str
    category: RequestErrorCategory = RequestErrorCategory.UNKNOWN

    @field_validator("error", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return str(value.get("message") or value)
        return value if isinstance(value, str) else str(value)

    @field_validator("category", mode="before")
    @classmethod
    def _tolerant_category(cls, value: Any) -> RequestErrorCategory:
        return RequestErrorCategory.parse(value)

    @field_serializer("category")
    def _category_text(self, value: RequestErrorCategory) -> str:
        return value.value


_R = TypeVar("_R", bound=BaseModel)

FutureState = (
    TryAgainResponse
    | FutureCompletedMetadataResponse
    | FuturePendingResponse
    | RequestFailedResponse
)


@overload
def parse_future_response(body: Any, result_type: type[_R]) -> FutureState | _R: ...
@overload
def parse_future_response(body: Any, result_type: None = None) -> FutureState | dict[str, Any]: ...
def parse_future_response(body: Any, result_type: type[BaseModel] | None = None) -> Any:
    """Classify a ``retrieve_future`` 200 body the way the client checks it (§2.5).

    In order: ``type == "try_again"`` → :class:`TryAgainResponse`; ``status ==
    "complete_metadata"`` → :class:`FutureCompletedMetadataResponse`; an ``error`` key or
    ``status == "failed"`` → :class:`RequestFailedResponse`; ``status == "pending"`` →
    :class:`FuturePendingResponse`; ``status == "completed"`` with ``result`` → the
    unwrapped result; anything else is the result. The result is validated as
    ``result_type`` when given (raising pydantic ``ValidationError`` on mismatch), else
    returned as the dict. Raises ``TypeError`` for a body that is not a JSON object.
    """
    if not isinstance(body, dict):
        raise TypeError(f"a future body must be a JSON object, got {type(body).__name__}")
    if body.get("type") == "try_again":
        return TryAgainResponse.model_validate(body)
    status = body.get("status")
    if status == "complete_metadata":
        return FutureCompletedMetadataResponse.model_validate(body)
    if "error" in body or status == "failed":
        failed = dict(body)
        if failed.get("error") is None:
            failed["error"] = "request failed"
        return RequestFailedResponse.model_validate(failed)
    if status == "pending":
        return FuturePendingResponse.model_validate(body)
    result: Any = body
    if status == "completed" and isinstance(body.get("result"), dict):
        result = body["result"]
    if result_type is None:
        return result
    return result_type.model_validate(result)


#: What ``retrieve_future`` may answer (tinker 0.38's name): a state or a result.
FutureRetrieveResponse = Union[  # noqa: UP007 - a type alias of tinker's shape
    TryAgainResponse,
    ForwardBackwardOutput,
    OptimStepResponse,
    SaveWeightsResponse,
    LoadWeightsResponse,
    SaveWeightsForSamplerResponse,
    CreateModelResponse,
    UnloadModelResponse,
    RequestFailedResponse,
]


# -- batch polling (tinker 0.38 ``POST /api/v1/retrieve_futures``) -----------------------


class FutureFinished(TaggedWireModel):
    """A finished request of a batch poll; fetch its payload with ``retrieve_future``."""

    wire_tag: ClassVar[str] = "state"

    state: Literal["finished"] = "finished"
    request_id: str
    #: The payload's uncompressed size, as a metadata-only ``retrieve_future`` reports it.
    response_payload_uncompressed_size: int | None = Field(default=None, ge=0)


class FutureFailed(TaggedWireModel):
    """A failed request of a batch poll (no payload)."""

    wire_tag: ClassVar[str] = "state"

    state: Literal["failed"] = "failed"
    request_id: str


#: One completion of a batch poll, told apart by ``state`` (required).
FutureCompletion = Annotated[FutureFinished | FutureFailed, Field(discriminator="state")]


class SamplingSessionFuturesTarget(WireModel):
    """What a batch poll watches: one (possibly cloned) sampling session; a clone's id is
    ``seq_id // 1_000_000_000`` (0 for the original client)."""

    type: Literal["sampling_session"] = "sampling_session"
    sampling_session_id: str
    cloned_sampler_id: int = Field(default=0, ge=0)


class FuturesRetrieveRequest(WireModel):
    """``POST /api/v1/retrieve_futures``: a long poll for the target's completions after
    ``prev_cursor`` (0: from the start); ``retrieved_request_ids`` may be forgotten."""

    target: SamplingSessionFuturesTarget
    prev_cursor: int = Field(default=0, ge=0)
    timeout: float | None = Field(default=None, ge=0)
    retrieved_request_ids: list[str] = Field(default_factory=list)


class FuturesRetrieveResponse(WireModel):
    """The completions since the cursor, and the cursor to send next."""

    completions: list[FutureCompletion]
    cursor: int = Field(ge=0)


class JoinSamplingSessionRequest(WireModel):
    """``POST /api/v1/join_sampling_session``: an unpickled sampling client asks for its
    clone id."""

    sampling_session_id: str
    type: Literal["join_sampling_session"] = "join_sampling_session"


class JoinSamplingSessionResponse(WireModel):
    """The clone id: unique among the session's clients (the original client is 0)."""

    type: Literal["join_sampling_session"] = "join_sampling_session"
    client_counter: int = Field(ge=0)
