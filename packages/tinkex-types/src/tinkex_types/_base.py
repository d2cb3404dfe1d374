"""The shared base of every wire model and the small enums of the protocol."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

__all__ = [
    "LOSS_FN_TYPES",
    "CheckpointType",
    "EventType",
    "ImageFormat",
    "LossFnType",
    "QueueState",
    "Severity",
    "StopReason",
    "TensorDtype",
    "WireModel",
]

#: The losses the JSON generation (0.16.1) knows.
LossFnType = Literal["cross_entropy", "importance_sampling", "ppo", "cispo", "dro"]
LOSS_FN_TYPES: tuple[str, ...] = get_args(LossFnType)

#: Why a sampled sequence ended: ``stop`` (EOS or a stop sequence) or ``length`` (max_tokens).
StopReason = Literal["length", "stop"]
#: The two dtypes of :class:`TensorData` on the wire.
TensorDtype = Literal["int64", "float32"]
#: ``training`` (``weights/...``, from ``save_state``) or ``sampler`` (``sampler_weights/...``).
CheckpointType = Literal["training", "sampler"]
ImageFormat = Literal["png", "jpeg"]
#: Telemetry event kinds (the ``event`` key of a telemetry event).
EventType = Literal["SESSION_START", "SESSION_END", "UNHANDLED_EXCEPTION", "GENERIC_EVENT"]
Severity = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class QueueState(StrEnum):
    """The state of the queue a future waits in (``try_again`` answers, 408/429 bodies)."""

    ACTIVE = "active"
    PAUSED_RATE_LIMIT = "paused_rate_limit"
    PAUSED_CAPACITY = "paused_capacity"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: object) -> QueueState:
        """Parse tolerantly: case and surrounding space are ignored, unknown text is UNKNOWN."""
        if isinstance(value, QueueState):
            return value
        text = str(value).strip().lower().replace(" ", "_") if value is not None else ""
        for member in cls:
            if member.value == text:
                return member
        return cls.UNKNOWN


class WireModel(BaseModel):
    """Base of every tinkex wire model.

    * Unknown keys are ignored when parsing (server rule 3, and the 0.16.1 response rule).
    * ``null`` for a field that has a non-null default means "absent": the default applies
      (server rule 1).
    * Dumping (``model_dump``/``model_dump_json``/:meth:`to_json_dict`) omits fields whose
      value is ``None``, except the fields named in ``wire_nulls``, which the protocol sends
      as explicit ``null`` (``project_id``, ``ttl_seconds``, ``loss_fn_config``...).
    * Infinity and NaN are written as the JSON constants ``Infinity``/``NaN`` (as Python's
      ``json`` module does), never silently as ``null``.
    """

    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        protected_namespaces=(),
        ser_json_inf_nan="constants",
        validate_default=False,
    )

    #: Fields sent as an explicit ``null`` when they are ``None``.
    wire_nulls: ClassVar[frozenset[str]] = frozenset()
    #: Fields never written (e.g. the ``type`` of chunks, which 0.16.1 never sends and
    #: which servers recognise by keys).
    wire_omit: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        drop: list[str] = []
        for name, field in cls.model_fields.items():
            if field.is_required():
                continue
            default = field.get_default(call_default_factory=False)
            if default is None:
                continue
            for key in (name, field.alias):
                if key is not None and key in data and data[key] is None:
                    drop.append(key)
        if not drop:
            return data
        return {k: v for k, v in data.items() if k not in drop}

    # No return annotation on purpose: with one, pydantic would publish it (``Any``) as the
    # serialization JSON schema instead of the fields (the server's OpenAPI needs them).
    @model_serializer(mode="wrap")
    def _wire_serialize(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo):  # type: ignore[no-untyped-def]
        out = handler(self)
        if isinstance(out, dict):
            keep = self.wire_nulls
            omit = self.wire_omit
            for key in [k for k, v in out.items() if (v is None and k not in keep) or k in omit]:
                del out[key]
        return out

    def to_json_dict(self, *, exclude_unset: bool = False) -> dict[str, Any]:
        """The JSON object to send, as plain Python data.

        By default every field is written with its default filled in (the tinkex choice
        of protocol.md §2.15). ``exclude_unset=True`` reproduces the 0.16.1 client exactly:
        only fields that were set (explicitly or by parsing) are written.
        """
        out = self.model_dump(mode="json", by_alias=True, exclude_unset=exclude_unset)
        assert isinstance(out, dict)
        return out

    def to_json(self, *, exclude_unset: bool = False) -> str:
        """:meth:`to_json_dict` as compact JSON text (``NaN``/``Infinity`` as constants)."""
        return self.model_dump_json(by_alias=True, exclude_unset=exclude_unset)

    @classmethod
    def from_json(cls, raw: str | bytes | dict[str, Any]) -> Self:
        """Parse JSON text or an already-decoded JSON object."""
        if isinstance(raw, dict):
            return cls.model_validate(raw)
        return cls.model_validate_json(raw)
