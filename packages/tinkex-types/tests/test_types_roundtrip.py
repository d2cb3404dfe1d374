"""Every wire model survives JSON unchanged (hypothesis, strategies derived from the fields)."""

from __future__ import annotations

import enum
import types
import typing
from datetime import UTC, datetime
from typing import Any

import annotated_types as at
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

import tinkex_types
from tinkex_types import LOSSES, TensorData, WireModel

WIRE_MODELS: list[type[WireModel]] = sorted(
    (
        obj
        for name in tinkex_types.__all__
        if isinstance(obj := getattr(tinkex_types, name), type)
        and issubclass(obj, WireModel)
        and obj is not WireModel
    ),
    key=lambda cls: cls.__name__,
)

SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), finite, st.text())
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def tensor_data(draw: st.DrawFn) -> TensorData:
    dtype = draw(st.sampled_from(["int64", "float32"]))
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    n = 1
    for d in shape:
        n *= d
    elem = (
        st.integers(-(2**63), 2**63 - 1)
        if dtype == "int64"
        else st.floats(allow_nan=False, width=32)
    )
    data = draw(st.lists(elem, min_size=n, max_size=n))
    use_shape = draw(st.booleans()) or len(shape) != 1
    return TensorData(data=data, dtype=dtype, shape=shape if use_shape else None)


def _bounded_int(meta: list[Any]) -> st.SearchStrategy[int]:
    lo, hi = -(2**40), 2**40
    for m in meta:
        if isinstance(m, at.Ge):
            lo = max(lo, int(m.ge))
        elif isinstance(m, at.Gt):
            lo = max(lo, int(m.gt) + 1)
        elif isinstance(m, at.Le):
            hi = min(hi, int(m.le))
        elif isinstance(m, at.Lt):
            hi = min(hi, int(m.lt) - 1)
    return st.integers(lo, hi)


def _bounded_float(meta: list[Any]) -> st.SearchStrategy[float]:
    kwargs: dict[str, Any] = {"allow_nan": False}
    for m in meta:
        if isinstance(m, at.Ge):
            kwargs["min_value"] = float(m.ge)
        elif isinstance(m, at.Gt):
            kwargs["min_value"], kwargs["exclude_min"] = float(m.gt), True
        elif isinstance(m, at.Le):
            kwargs["max_value"] = float(m.le)
        elif isinstance(m, at.Lt):
            kwargs["max_value"], kwargs["exclude_max"] = float(m.lt), True
    return st.floats(**kwargs)


def strategy_for(tp: Any, meta: list[Any] | None = None) -> st.SearchStrategy[Any]:
    meta = meta or []
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        inner, *extra = args
        return strategy_for(inner, meta + [m for m in extra if isinstance(m, at.BaseMetadata)])
    if origin in (typing.Union, types.UnionType):
        return st.one_of([strategy_for(a, meta) for a in args])
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is list:
        min_size = next((m.min_length for m in meta if isinstance(m, at.MinLen)), 0)
        return st.lists(strategy_for(args[0]), min_size=min_size, max_size=3)
    if origin is dict:
        return st.dictionaries(st.text(max_size=8), strategy_for(args[1]), max_size=3)
    if origin is tuple:
        return st.tuples(*(strategy_for(a) for a in args))
    if tp is type(None):
        return st.none()
    if tp is Any:
        return json_value
    if tp is bool:
        return st.booleans()
    if tp is int:
        return _bounded_int(meta)
    if tp is float:
        return _bounded_float(meta)
    if tp is str:
        min_size = next((m.min_length for m in meta if isinstance(m, at.MinLen)), 0)
        return st.text(min_size=min_size, max_size=12)
    if tp is bytes:
        return st.binary(max_size=16)
    if tp is datetime:
        return st.one_of(
            st.datetimes(timezones=st.just(UTC)),
            st.datetimes(),
        )
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if tp is TensorData:
        return tensor_data()
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return model_strategy(tp)
    raise NotImplementedError(f"no strategy for {tp!r}")


def _tinker_path() -> st.SearchStrategy[str]:
    part = st.text(st.characters(categories=["L", "N"], include_characters=":-_."), min_size=1)
    return st.builds(
        lambda run, kind, name: f"tinker://{run}/{kind}/{name}",
        part,
        st.sampled_from(["weights", "sampler_weights"]),
        part,
    )


_OVERRIDES: dict[str, st.SearchStrategy[Any]] = {
    "model_path": st.one_of(st.none(), _tinker_path()),
    "tinker_path": _tinker_path(),
    "loss_fn": st.sampled_from(sorted(LOSSES)),
}


@st.composite
def _custom_loss_graph(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """A well-formed custom loss graph (the models check its shape) and its parameters."""
    extra = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(lambda n: n != "logprobs")
    names = ["logprobs", *draw(st.lists(extra, max_size=3, unique=True))]
    nodes: list[dict[str, Any]] = [{"op": "placeholder", "name": n, "target": n} for n in names]
    values = list(names)
    for i in range(draw(st.integers(0, 3))):
        arg = draw(json_scalar)
        ref = {"ref": draw(st.sampled_from(values))}
        nodes.append(
            {"op": "call_function", "name": f"n{i}", "target": "operator.add", "args": [ref, arg]}
        )
        values.append(f"n{i}")
    out = {"tuple": [{"ref": values[-1]}, {"dict": {}}]}
    nodes.append({"op": "output", "name": "output", "target": "output", "args": [out]})
    return {"nodes": nodes}, names


@st.composite
def _create_custom_loss(draw: st.DrawFn) -> Any:
    graph, names = draw(_custom_loss_graph())
    ranks = [draw(st.sampled_from([1, 2]))] + [draw(st.sampled_from([0, 1, 2])) for _ in names[1:]]
    return tinkex_types.CreateCustomLossRequest(
        session_id=draw(st.text()),
        custom_loss_seq_id=draw(st.integers(0, 2**40)),
        name=draw(st.text()),
        inputs=[{"name": n, "rank": r} for n, r in zip(names, ranks, strict=True)],
        graph=graph,
    )


#: Models whose fields constrain each other (a graph's references, its inputs).
_WHOLE_MODELS: dict[str, st.SearchStrategy[Any]] = {
    "CustomLossGraph": _custom_loss_graph().map(
        lambda pair: tinkex_types.CustomLossGraph.model_validate(pair[0])
    ),
    "CreateCustomLossRequest": _create_custom_loss(),
}


def model_strategy(cls: type[BaseModel]) -> st.SearchStrategy[Any]:
    if cls.__name__ in _WHOLE_MODELS:
        return _WHOLE_MODELS[cls.__name__]
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for name, field in cls.model_fields.items():
        if name in _OVERRIDES:
            strat = _OVERRIDES[name]
        else:
            strat = strategy_for(field.annotation, list(field.metadata))
        if name == "path" and cls.__name__ == "LoadWeightsRequest":
            strat = _tinker_path()
        if not field.is_required():
            strat = st.one_of(st.just(...), strat)
        fields[name] = strat

    def build(values: dict[str, Any]) -> Any:
        kwargs = {k: v for k, v in values.items() if v is not ...}
        try:
            return cls(**kwargs)
        except ValidationError:
            return None

    return st.fixed_dictionaries(fields).map(build).filter(lambda m: m is not None)


def test_every_public_wire_model_is_covered() -> None:
    names = {cls.__name__ for cls in WIRE_MODELS}
    # the core of protocol.md §2.4 is there
    for required in [
        "CreateSessionRequest", "CreateModelRequest", "ForwardBackwardRequest",
        "ForwardRequest", "OptimStepRequest", "SaveWeightsRequest", "LoadWeightsRequest",
        "SaveWeightsForSamplerRequest", "CreateSamplingSessionRequest", "SampleRequest",
        "FutureRetrieveRequest", "TelemetrySendRequest", "WeightsInfoRequest",
        "ForwardBackwardOutput", "SampleResponse", "TryAgainResponse",
        "RequestFailedResponse", "Checkpoint", "TrainingRun", "TrainingRunsResponse",
        "CheckpointsListResponse", "GetInfoResponse", "GetServerCapabilitiesResponse",
    ]:  # fmt: skip
        assert required in names
    assert len(WIRE_MODELS) >= 60


@pytest.mark.parametrize("cls", WIRE_MODELS, ids=lambda c: c.__name__)
def test_json_schema_exists(cls: type[WireModel]) -> None:
    # the server's OpenAPI document is generated from these models
    for mode in ("validation", "serialization"):
        schema = cls.model_json_schema(mode=mode)
        assert schema["type"] == "object"
        assert set(schema.get("properties", {})) == set(cls.model_fields)


@pytest.mark.parametrize("cls", WIRE_MODELS, ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_json_round_trip(cls: type[WireModel], data: st.DataObject) -> None:
    model = data.draw(model_strategy(cls))
    text = model.to_json()
    again = cls.model_validate_json(text)
    assert again == model
    assert again.to_json() == text
    # the dict form parses the same way and 0.16.1-style (exclude_unset) output too
    assert cls.model_validate(model.to_json_dict()) == model
    assert cls.model_validate(model.to_json_dict(exclude_unset=True)) == model


@SETTINGS
@given(td=tensor_data())
def test_tensor_data_json_round_trip_keeps_dtype_and_values(td: TensorData) -> None:
    back = TensorData.model_validate_json(td.to_json())
    assert back.dtype == td.dtype
    assert back.data == td.data
    assert all(type(v) is (int if td.dtype == "int64" else float) for v in back.data)
    assume(td.size > 0)
