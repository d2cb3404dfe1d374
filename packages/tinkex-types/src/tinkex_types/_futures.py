"""The future protocol (protocol.md §2.5): submit answers and ``retrieve_future`` bodies."""

from __future__ import annotations

from typing import Any, Literal, TypeVar, overload

from pydantic import BaseModel, Field, field_serializer, field_validator

from tinkex_types._base import QueueState, WireModel
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
    "FuturePendingResponse",
    "FutureResponse",
    "RequestFailedResponse",
    "RequestType",
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
