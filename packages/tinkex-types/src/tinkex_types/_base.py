"""The shared base of every wire model and the small enums of the protocol."""

from __future__ import annotations

import inspect
import types
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from tinkex_types._numbers import NumberRule

__all__ = [
    "LOSS_FN_TYPES",
    "CheckpointType",
    "EventType",
    "ImageFormat",
    "LossFnType",
    "PositionalWireModel",
    "QueueState",
    "Severity",
    "StopReason",
    "TaggedWireModel",
    "TensorDtype",
    "WireModel",
]

#: The loss names the official client (0.38) can send. Which of them a server computes is
#: the loss table's business (:data:`tinkex_types.LOSSES`); requests are checked against it.
LossFnType = Literal[
    "cross_entropy",
    "importance_sampling",
    "ppo",
    "cispo",
    "dro",
    "gspo",
    "stable_reinforce",
    "custom",
]
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


#: Per model class: the keys (names and aliases) of optional fields whose default is not
#: ``None`` (a static default or a factory), where an incoming ``null`` means "absent".
#: Computed once per class: ``FieldInfo.get_default`` inspects factory signatures each call.
_NULL_MEANS_DEFAULT: dict[type[BaseModel], tuple[str, ...]] = {}


def _null_default_keys(cls: type[BaseModel]) -> tuple[str, ...]:
    keys: list[str] = []
    for name, field in cls.model_fields.items():
        if field.is_required():
            continue
        if field.default_factory is None and field.default is None:
            continue
        if any(isinstance(rule, NumberRule) for rule in field.metadata):
            continue  # a strict number: null is an error, not "absent" (see _numbers)
        for key in (name, field.alias):
            if key is not None and key not in keys:
                keys.append(key)
    return tuple(keys)


class WireModel(BaseModel):
    """Base of every tinkex wire model.

    * Unknown keys are ignored when parsing (server rule 3, and the 0.16.1 response rule).
    * ``null`` for a field that has a non-null default means "absent": the default applies
      (server rule 1), except on strict number fields (:class:`~tinkex_types.NumberRule`,
      e.g. ``AdamParams.learning_rate``), where ``null`` is refused naming the field: an
      encoder that writes NaN or infinity as ``null`` must not turn them into the default.
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
    #: True for a model that may keep a field out of ``__dict__`` until it is read (a list
    #: held as a numpy array, ``tinkex_types._lazy``): every dump calls
    #: :meth:`_wire_complete` first.
    wire_lazy: ClassVar[bool] = False

    def _wire_complete(self) -> None:
        """Put every field's value into ``__dict__`` (nothing to do here)."""

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        keys = _NULL_MEANS_DEFAULT.get(cls)
        if keys is None:
            keys = _NULL_MEANS_DEFAULT[cls] = _null_default_keys(cls)
        drop = [key for key in keys if key in data and data[key] is None]
        if not drop:
            return data
        return {k: v for k, v in data.items() if k not in drop}

    # No return annotation on purpose: with one, pydantic would publish it (``Any``) as the
    # serialization JSON schema instead of the fields (the server's OpenAPI needs them).
    @model_serializer(mode="wrap")
    def _wire_serialize(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo):  # type: ignore[no-untyped-def]
        if self.wire_lazy:
            self._wire_complete()
        out = handler(self)
        if isinstance(out, dict):
            keep = self.wire_nulls
            omit = self.wire_omit
            for key in [k for k, v in out.items() if (v is None and k not in keep) or k in omit]:
                del out[key]
            out = self._wire_finish(out)
        return out

    def _wire_finish(self, out: dict[str, Any]) -> dict[str, Any]:
        """Last change to the dumped object (e.g. a key chosen by the value's type).
        A class that overrides it is dumped by pydantic, not by the fast path."""
        return out

    def to_json_dict(self, *, exclude_unset: bool = False) -> dict[str, Any]:
        """The JSON object to send, as plain Python data.

        By default every field is written with its default filled in (the tinkex choice
        of protocol.md §2.15). ``exclude_unset=True`` reproduces the 0.16.1 client exactly:
        only fields that were set (explicitly or by parsing) are written.
        """
        if not exclude_unset and _plan(type(self)) is not None:
            try:
                return _fast_dump(self)
            except _NotPlain:
                pass
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


class TaggedWireModel(WireModel):
    """A member of a union whose members are told apart by one field (``wire_tag``): that
    field is written even when it was never set, also by ``to_json_dict(exclude_unset=True)``,
    so that the dump parses back as the same member."""

    wire_tag: ClassVar[str] = "type"

    def model_post_init(self, context: Any, /) -> None:
        self.__pydantic_fields_set__.add(self.wire_tag)


class _Factory:
    """The default shown in a signature for a field with a default factory."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


class PositionalWireModel(WireModel):
    """A wire model that also takes its first fields by position, in the order of
    ``positional_fields`` (as tinker 0.38's dataclass models do: ``Datum(model_input,
    loss_fn_inputs)``). Its signature says so; more positions than that is a TypeError."""

    #: The fields that may be given by position, in order (constructor-only parameters of
    #: ``init_only`` may be among them).
    positional_fields: ClassVar[tuple[str, ...]] = ()
    #: Constructor-only parameters (default ``None``) that :meth:`_prepare` turns into fields.
    init_only: ClassVar[tuple[str, ...]] = ()
    #: Required fields the constructor fills in itself when they are not given (shown with a
    #: default in the signature); parsing still requires them.
    init_defaults: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, /, *args: Any, **data: Any) -> None:
        if args:
            names = self.positional_fields
            cls = type(self).__name__
            if len(args) > len(names):
                raise TypeError(
                    f"{cls}() takes at most {len(names)} positional arguments "
                    f"({', '.join(names) or 'none'}) but {len(args)} were given: pass the "
                    "others by keyword"
                )
            for name, value in zip(names, args, strict=False):
                if name in data:
                    raise TypeError(f"{cls}() got multiple values for argument {name!r}")
                data[name] = value
        if self.init_only or self.init_defaults:
            data = self._prepare(data)
        super().__init__(**data)

    # Tell pydantic this is the plain ``BaseModel.__init__`` as far as parsing goes:
    # ``model_validate`` must not call it (parsing takes no positions, fills no defaults,
    # and stays a pure pydantic-core call).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Turn the ``init_only`` parameters into fields and fill ``init_defaults``."""
        return data

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.__signature__ = _positional_signature(cls)


def _positional_signature(cls: type[PositionalWireModel]) -> inspect.Signature:
    params: list[inspect.Parameter] = []
    fields = cls.model_fields
    unknown = [n for n in cls.positional_fields if n not in fields and n not in cls.init_only]
    if unknown:
        raise TypeError(f"{cls.__name__}.positional_fields names no field: {unknown}")
    names = [*fields, *cls.init_only]
    order = [*cls.positional_fields, *(n for n in names if n not in cls.positional_fields)]
    for name in order:
        kind = (
            inspect.Parameter.POSITIONAL_OR_KEYWORD
            if name in cls.positional_fields
            else inspect.Parameter.KEYWORD_ONLY
        )
        if name not in fields:
            params.append(inspect.Parameter(name, kind, default=None))
            continue
        field = fields[name]
        default: Any
        if name in cls.init_defaults:
            default = _FACTORY
        elif field.is_required():
            default = inspect.Parameter.empty
        elif field.default_factory is not None:
            default = _FACTORY
        else:
            default = field.default
        params.append(inspect.Parameter(name, kind, default=default, annotation=field.annotation))
    return inspect.Signature(params, return_annotation=None)


# -- fast to_json_dict -----------------------------------------------------------------------
# ``model_dump(mode="json")`` copies every list element by element and calls back into Python
# once per model for the wire rules: for a forward_backward batch of 64 x 2048 tokens that was
# most of the client's encoding time. Models whose fields hold only plain JSON types (numbers,
# strings, bools, None, literals, lists, str-keyed dicts, and such models) are dumped here by
# reading their attributes instead; lists of scalars are shared with the model, not copied.
# The output equals ``model_dump(mode="json", by_alias=True)``. A model of any other shape,
# or a value of an unexpected type (e.g. a subclass instance, which pydantic would dump by the
# declared type), makes the whole dump fall back to pydantic.


class _NotPlain(Exception):
    """A value the fast dump does not handle: use pydantic for the whole model."""


_SCALARS: frozenset[type] = frozenset({str, int, float, bool, type(None)})
#: Stands for a model class that is not plain in a set of model classes.
_OPAQUE = object()
#: Per class: ((attribute, output key, model classes the value may hold), ...), or None when
#: the class is not plain. An empty class set means the value is returned as it is.
_PLANS: dict[type[BaseModel], tuple[tuple[str, str, frozenset[object]], ...] | None] = {}


def _annotation_models(annotation: Any) -> frozenset[object] | None:
    """The wire model classes that values of ``annotation`` may hold (empty: none), or
    None if ``annotation`` allows anything but plain JSON types."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return _annotation_models(args[0])
    if annotation in (int, float, str, bool, type(None), None):
        return frozenset()
    if origin is Literal:
        plain = all(a is None or type(a) in (str, int, bool) for a in args)
        return frozenset() if plain else None
    if origin is Union or origin is types.UnionType or origin is list:
        found: set[object] = set()
        for arg in args:
            sub = _annotation_models(arg)
            if sub is None:
                return None
            found |= sub
        return frozenset(found)
    if origin is dict:
        return _annotation_models(args[1]) if args and args[0] is str else None
    if isinstance(annotation, type) and issubclass(annotation, WireModel):
        # A model that is not plain itself (e.g. ImageChunk in the chunk union) keeps the
        # value walked; meeting one at run time falls back to pydantic.
        return frozenset({annotation if _plan(annotation) is not None else _OPAQUE})
    return None


def _plan(cls: type[BaseModel]) -> tuple[tuple[str, str, frozenset[object]], ...] | None:
    if cls in _PLANS:
        return _PLANS[cls]
    _PLANS[cls] = None  # while computing (a self-referencing model is not plain)
    _PLANS[cls] = plan = _make_plan(cls)
    return plan


def _make_plan(cls: type[BaseModel]) -> tuple[tuple[str, str, frozenset[object]], ...] | None:
    decorators = cls.__pydantic_decorators__
    if decorators.field_serializers or decorators.computed_fields:
        return None
    if set(decorators.model_serializers) != {"_wire_serialize"}:
        return None
    for klass in cls.__mro__:
        if klass is WireModel:
            break
        if "_wire_serialize" in vars(klass) or "_wire_finish" in vars(klass):
            return None
    config = cls.model_config
    if config.get("ser_json_inf_nan") != "constants" or config.get("extra") == "allow":
        return None
    plan: list[tuple[str, str, frozenset[object]]] = []
    for name, field in cls.model_fields.items():
        if field.exclude:
            return None
        models = _annotation_models(field.annotation)
        if models is None:
            return None
        plan.append((name, field.serialization_alias or field.alias or name, models))
    return tuple(plan)


def _convert(value: Any, models: frozenset[object]) -> Any:
    kind = type(value)
    if kind in models:
        return _fast_dump(value)
    if kind is list:
        return [_convert(v, models) for v in value]
    if kind is dict:
        return {k: _convert(v, models) for k, v in value.items()}
    if kind in _SCALARS:
        return value
    raise _NotPlain


def _fast_dump(model: Any) -> dict[str, Any]:
    plan = _PLANS.get(type(model))
    if plan is None:
        raise _NotPlain
    if model.wire_lazy:
        model._wire_complete()
    attrs = model.__dict__
    keep = model.wire_nulls
    omit = model.wire_omit
    out: dict[str, Any] = {}
    for name, key, models in plan:
        if key in omit:
            continue
        try:
            value = attrs[name]
        except KeyError:
            raise _NotPlain from None
        if models:
            value = _convert(value, models)
        if value is None and key not in keep:
            continue
        out[key] = value
    return out
