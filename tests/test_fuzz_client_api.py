"""Hypothesis fuzz of the public client API against the real local server (issue 17).

Inputs go through ``tinkex.ServiceClient(base_url="local://")`` and its training and
sampling clients, served in-process by a real :class:`LocalServer` on the built-in tiny
model. For every input, exactly one of these must happen:

* it is refused before anything is sent, by an error naming the field
  (``TinkexValidationError.field``, a pydantic error location, or the message);
* the server refuses it with a 4xx (or a ``request_failed`` of category "user") whose
  message names the field;
* it is served, and what the server's engine received is what was given (no silent
  substitution: learning rates, temperatures, seeds, tokens and loss inputs arrive exactly).

Never a 5xx, a server-category failure, another exception type, or a hang (every wait has a
timeout, and the whole module a pytest-timeout). Each property has its own independent
validity oracle written here from the documented rules, so a model that accepts too much
or too little fails the suite.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import tinkex
from tinkex import types
from tinkex_server._config import ServerConfig
from tinkex_server._engine import Engine
from tinkex_server._local import LocalServer, LocalTransport
from tinkex_types import (
    APIStatusError,
    RequestErrorCategory,
    RequestFailedError,
    TinkexValidationError,
)

pytestmark = pytest.mark.timeout(600)

MODEL = "tinkex/tiny-llama-100k"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT32_MAX = 3.4028234663852886e38
WAIT = 120.0  # seconds any one future may take (a hang fails instead of blocking)

#: ``TINKEX_FUZZ_SCALE=10`` runs ten times the examples; ``TINKEX_FUZZ_RANDOM=1`` draws new
#: examples each run (by default the examples are the same every run: no flaky CI).
SCALE = int(os.environ.get("TINKEX_FUZZ_SCALE", "1"))
FUZZ = settings(
    max_examples=200 * SCALE,
    deadline=None,
    derandomize=not os.environ.get("TINKEX_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- the server, with an engine that records what it was asked to do --------------------------


class RecordingEngine(Engine):
    """The real engine; it also keeps the arguments of the calls the fuzz can observe."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.lock = threading.Lock()
        self.adam: list[Any] = []
        self.samples: list[Any] = []
        self.loras: list[Any] = []
        self.forwards: list[tuple[list[Any], str, Any]] = []

    def optim_step(self, model_id: str, adam_params: Any = None) -> dict[str, float]:
        with self.lock:
            self.adam.append(adam_params)
        return super().optim_step(model_id, adam_params)

    def sample_batch(self, requests: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.samples.extend(requests)
        return super().sample_batch(requests, **kwargs)

    def create_adapter(self, model_id: str, base_model: str, lora: Any = None) -> Any:
        with self.lock:
            self.loras.append(lora)
        return super().create_adapter(model_id, base_model, lora)

    def forward(self, model_id: str, data: Any, loss_fn: str = "", config: Any = None) -> Any:
        with self.lock:
            self.forwards.append((list(data), loss_fn, config))
        return super().forward(model_id, data, loss_fn, config)

    def forward_backward(
        self, model_id: str, data: Any, loss_fn: str = "", config: Any = None
    ) -> Any:
        with self.lock:
            self.forwards.append((list(data), loss_fn, config))
        return super().forward_backward(model_id, data, loss_fn, config)


@dataclass
class World:
    engine: RecordingEngine
    service: tinkex.ServiceClient
    training: Any
    optimizing: Any  # its own model: extreme learning rates may make its weights NaN
    sampler: Any
    vocab: int
    log: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = RecordingEngine()
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
    server = LocalServer(
        ServerConfig(data_dir=data_dir, poll_hold_s=2.0), engine_factory=lambda: engine
    )
    service = tinkex.ServiceClient(base_url="local://", transport=LocalTransport(server))
    try:
        training = service.create_lora_training_client(base_model=MODEL, rank=2, seed=0)
        optimizing = service.create_lora_training_client(base_model=MODEL, rank=2, seed=0)
        sampler = service.create_sampling_client(base_model=MODEL)
        vocab = int(training.get_tokenizer().vocab_size)
        yield World(engine, service, training, optimizing, sampler, vocab)
    finally:
        service.close()
        server.close()
        torch.set_num_threads(threads)


# -- outcomes --------------------------------------------------------------------------------


def _names(exc: BaseException, fields: tuple[str, ...]) -> bool:
    """Whether ``exc`` names one of ``fields`` (its field attribute, locations or message)."""
    texts = [str(exc)]
    if isinstance(exc, TinkexValidationError):
        texts.append(exc.field)
    if isinstance(exc, ValidationError):
        texts += [".".join(str(p) for p in err["loc"]) for err in exc.errors()]
    return any(f in t for f in fields for t in texts)


def _refusal(exc: BaseException) -> str:
    """'client' or 'server' for an acceptable refusal; raises AssertionError otherwise."""
    if isinstance(exc, (TinkexValidationError, ValidationError)):
        return "client"
    if isinstance(exc, APIStatusError):
        assert 400 <= exc.status_code < 500, f"{exc.status_code}: {exc}"
        return "server"
    if isinstance(exc, RequestFailedError):
        assert exc.category == RequestErrorCategory.USER, f"server-side failure: {exc}"
        return "server"
    raise AssertionError(f"not a refusal naming a field: {type(exc).__name__}: {exc}")


def _run(call: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """``call()``, resolving a future it returns (with a timeout)."""
    try:
        out = call()
        if hasattr(out, "result"):
            out = out.result(timeout=WAIT)
        return out, None
    except TimeoutError as exc:  # a hang is a failure, not a refusal
        raise AssertionError(f"no answer within {WAIT} s") from exc
    except Exception as exc:
        return None, exc


def _expect(
    exc: BaseException | None, valid: bool, fields: tuple[str, ...], *, server_may_refuse: bool
) -> str:
    """Check one outcome: "served", or who refused it ("client" or "server")."""
    if exc is None:
        assert valid, f"accepted an invalid input (expected a refusal naming {fields})"
        event("served")
        return "served"
    where = _refusal(exc)
    assert _names(exc, fields), f"refusal does not name {fields}: {exc}"
    if valid:
        # A valid-per-model value may still be refused by the server's own limits (context
        # room, max rank, vocabulary), but never by the client.
        assert where == "server", f"the client refused a valid input: {exc}"
        assert server_may_refuse, f"the server refused a valid input: {exc}"
    event(f"refused by the {where}")
    return where


# -- strategies: values that are right, wrong, and right-but-extreme ------------------------------

non_numbers = st.sampled_from([None, True, False, "1", "nan", [], {}])
non_finite = st.sampled_from([math.inf, -math.inf, math.nan])
huge_ints = st.sampled_from([2**63, -(2**63) - 1, 2**64, 2**70, -(2**70)])


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any, low: int = INT64_MIN, high: int = INT64_MAX) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _in(v: Any, *, ge: float | None = None, gt: float | None = None, lt: float | None = None,
        le: float | None = None) -> bool:  # fmt: skip
    if not _is_number(v) or not math.isfinite(v):
        return False
    return (
        (ge is None or v >= ge)
        and (gt is None or v > gt)
        and (lt is None or v < lt)
        and (le is None or v <= le)
    )


def _float_values(extreme: list[float]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.floats(min_value=0.0, max_value=1.0),
        st.sampled_from(extreme),
        st.floats(allow_nan=False, allow_infinity=False, width=64),
        non_finite,
        non_numbers,
        st.integers(min_value=-3, max_value=3),
    )


# -- AdamParams through optim_step -----------------------------------------------------------

ADAM_RULES: dict[str, Callable[[Any], bool]] = {
    "learning_rate": lambda v: _in(v, ge=0.0),
    "beta1": lambda v: _in(v, ge=0.0, lt=1.0),
    "beta2": lambda v: _in(v, ge=0.0, lt=1.0),
    "eps": lambda v: _in(v, gt=0.0),
    "weight_decay": lambda v: _in(v, ge=0.0),
    "grad_clip_norm": lambda v: _in(v, ge=0.0),
}
ADAM_EXTREMES = [0.0, 5e-324, 1e-46, 1e-300, 1e300, 1e39, 3e38, math.nextafter(1.0, 0.0), 1.0, -0.0]


#: Values that follow the rules (half the examples), extremes included.
adam_valid = st.fixed_dictionaries(
    {},
    optional={
        "learning_rate": st.floats(0.0, 10.0) | st.sampled_from([0.0, 5e-324, 1e-300, 3e38]),
        "beta1": st.floats(0.0, 1.0, exclude_max=True),
        "beta2": st.floats(0.0, 1.0, exclude_max=True) | st.just(math.nextafter(1.0, 0.0)),
        "eps": st.floats(1e-30, 1.0) | st.sampled_from([2.0**-149, 1e-12, 3e38]),
        "weight_decay": st.floats(0.0, 10.0) | st.just(0),
        "grad_clip_norm": st.floats(0.0, 1e6) | st.just(1e300),
    },
)
adam_any = st.dictionaries(st.sampled_from(sorted(ADAM_RULES)), _float_values(ADAM_EXTREMES))


@FUZZ
@given(params=adam_valid | adam_any, as_model=st.booleans())
def test_fuzz_adam_params(world: World, params: dict[str, Any], as_model: bool) -> None:
    note(f"adam params: {params!r} (as_model={as_model})")
    bad = tuple(k for k, v in params.items() if not ADAM_RULES[k](v))
    valid = not bad
    before = len(world.engine.adam)

    def call() -> Any:
        given_params = types.AdamParams(**params) if as_model else params
        return world.optimizing.optim_step(given_params)

    result, exc = _run(call)
    # Finite but beyond what float32 weights can take (1e300, eps 5e-324): the server's.
    outcome = _expect(
        exc, valid, bad or ("learning_rate", "eps", "weight_decay"), server_may_refuse=True
    )
    if outcome == "served":
        assert len(world.engine.adam) == before + 1
        got = world.engine.adam[-1]
        defaults = types.AdamParams()
        for name in ADAM_RULES:
            want = float(params.get(name, getattr(defaults, name)))
            assert float(getattr(got, name)) == want, (name, want, got)
        assert result.metrics["learning_rate:mean"] == float(
            params.get("learning_rate", defaults.learning_rate)
        )
    elif outcome == "client":
        assert len(world.engine.adam) == before  # nothing was sent
    else:
        assert valid, exc  # the models refuse every number out of the documented rules


# -- SamplingParams through sample ----------------------------------------------------------


def _stop_ok(stop: Any) -> bool:
    if stop is None:
        return True
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, list):
        return False
    strings = [s for s in items if isinstance(s, str)]
    if len(strings) not in (0, len(items)):
        return False
    if strings:
        return all(strings)
    return all(_is_int(i, 0) for i in items)


SAMPLING_RULES: dict[str, Callable[[Any], bool]] = {
    "max_tokens": lambda v: v is None or _is_int(v, 1),
    "seed": lambda v: v is None or _is_int(v),
    "temperature": lambda v: _in(v, ge=0.0),
    "top_k": lambda v: _is_int(v, -1),
    "top_p": lambda v: _in(v, gt=0.0, le=1.0),
    "stop": _stop_ok,
}

sampling_values: dict[str, st.SearchStrategy[Any]] = {
    "max_tokens": st.one_of(
        st.none(), st.integers(1, 6), st.sampled_from([0, -1, 10**9, 1.5, 2.0, True]), huge_ints
    ),
    "seed": st.one_of(
        st.none(), st.integers(INT64_MIN, INT64_MAX), st.sampled_from([1.0, True]), huge_ints
    ),
    "temperature": _float_values([0.0, 5e-324, 1e-300, 1e-30, 1e300, 2.5]),
    "top_k": st.one_of(st.integers(-3, 60), st.sampled_from([INT64_MAX, 1.5, True]), huge_ints),
    "top_p": _float_values([5e-324, 1e-30, 1.0, math.nextafter(1.0, 2.0)]),
    "stop": st.one_of(
        st.none(),
        st.text(max_size=3),
        st.lists(st.text(max_size=3), max_size=3),
        st.lists(st.integers(-2, 300), max_size=3),
        st.sampled_from([[1, "a"], [True], [2**63], [1.5], 7]),
    ),
}


sampling_valid = st.fixed_dictionaries(
    {},
    optional={
        "max_tokens": st.none() | st.integers(1, 6),
        "seed": st.none() | st.integers(INT64_MIN, INT64_MAX),
        "temperature": st.floats(0.0, 5.0) | st.sampled_from([0, 5e-324, 1e-300, 1e300]),
        "top_k": st.integers(-1, 60) | st.just(INT64_MAX),
        "top_p": st.floats(0.0, 1.0, exclude_min=True) | st.sampled_from([5e-324, 1]),
        "stop": st.none()
        | st.text(min_size=1, max_size=3)
        | st.lists(st.text(min_size=1, max_size=3), max_size=3)
        | st.lists(st.integers(0, 2000), max_size=3),
    },
)


@settings(FUZZ, max_examples=150 * SCALE)
@given(
    params=sampling_valid | st.fixed_dictionaries({}, optional=sampling_values),
    as_model=st.booleans(),
)
def test_fuzz_sampling_params(world: World, params: dict[str, Any], as_model: bool) -> None:
    params.setdefault("max_tokens", 3)  # keep the tiny model's work small
    note(f"sampling params: {params!r} (as_model={as_model})")
    bad = tuple(k for k, v in params.items() if not SAMPLING_RULES[k](v))
    valid = not bad
    before = len(world.engine.samples)
    prompt = types.ModelInput.from_ints([1, 2, 3])

    def call() -> Any:
        given_params = types.SamplingParams(**params) if as_model else params
        return world.sampler.sample(prompt, 1, given_params)

    result, exc = _run(call)
    # The server may refuse a valid max_tokens that does not fit the context.
    outcome = _expect(exc, valid, bad or ("max_tokens",), server_may_refuse=True)
    if outcome != "served":
        return
    request = world.engine.samples[before]
    assert request.temperature == float(params.get("temperature", 1.0))
    assert request.top_p == float(params.get("top_p", 1.0))
    assert request.top_k == params.get("top_k", -1)
    if params.get("seed") is not None:
        assert request.seed == params["seed"]
    if params.get("max_tokens") is not None:
        assert request.max_tokens == params["max_tokens"]
    assert len(result.sequences) == 1
    assert len(result.sequences[0].tokens) <= request.max_tokens


# -- LoRA configuration through create_lora_training_client --------------------------------


@settings(FUZZ, max_examples=60 * SCALE)
@given(
    rank=st.one_of(
        st.integers(1, 8), st.sampled_from([0, -1, 1.5, 2.0, True, None, "4", 2**31]), huge_ints
    ),
    seed=st.one_of(st.none(), st.integers(INT64_MIN, INT64_MAX), st.sampled_from([1.5, True])),
    trains=st.tuples(st.booleans(), st.booleans(), st.booleans()),
)
def test_fuzz_lora_config(
    world: World, rank: Any, seed: Any, trains: tuple[bool, bool, bool]
) -> None:
    bad = []
    if not _is_int(rank, 1):
        bad.append("rank")
    if not (seed is None or _is_int(seed)):
        bad.append("seed")
    if not any(trains):
        bad.append("train_")
    note(f"lora: rank={rank!r} seed={seed!r} trains={trains}")
    before = len(world.engine.loras)

    def call() -> Any:
        return world.service.create_lora_training_client(
            base_model=MODEL,
            rank=rank,
            seed=seed,
            train_mlp=trains[0],
            train_attn=trains[1],
            train_unembed=trains[2],
        )

    client, exc = _run(call)
    # A rank the model cannot hold is the server's to refuse (naming rank).
    outcome = _expect(exc, not bad, tuple(bad) or ("rank",), server_may_refuse=True)
    if outcome == "served":
        got = world.engine.loras[before]
        assert (got.rank, got.seed) == (rank, seed)
        assert (got.train_mlp, got.train_attn, got.train_unembed) == trains
        client.unload_model().result(timeout=WAIT)
    elif outcome == "client":
        assert len(world.engine.loras) == before


# -- Datum, ModelInput, TensorData, loss names and configs through forward(_backward) ------------

FAULTS = [
    None,
    "token",
    "target",
    "weight",
    "short_weights",
    "missing_target",
    "nested_weights",
    "loss_fn",
    "loss_config",
    "loss_config_order",
    "ppo_inputs",
]
BAD_TOKENS = [-1, 2**63, 1.5, True, None, "3"]
BAD_TARGETS = [1.5, None, True, 2**63, "3", math.nan]
BAD_WEIGHTS = [None, math.inf, -math.inf, math.nan, 1e39, -1e39, True, "x"]


@FUZZ
@given(
    n=st.integers(1, 6),
    data=st.data(),
    fault=st.none() | st.sampled_from(FAULTS[1:]),
    backward=st.booleans(),
)
def test_fuzz_datum_and_losses(
    world: World, n: int, data: st.DataObject, fault: str | None, backward: bool
) -> None:
    token = st.integers(0, world.vocab - 1)
    tokens = data.draw(st.lists(token, min_size=n, max_size=n))
    targets: list[Any] = data.draw(st.lists(token, min_size=n, max_size=n))
    weight = st.floats(width=32, allow_nan=False, allow_infinity=False) | st.sampled_from([0.0])
    weights: Any = data.draw(st.lists(weight, min_size=n, max_size=n))
    loss_fn, config = "cross_entropy", None
    at = data.draw(st.integers(0, n - 1))
    fields: tuple[str, ...] = ()
    if fault == "token":
        tokens[at] = data.draw(st.sampled_from([*BAD_TOKENS, world.vocab]))
        fields = ("tokens", "model_input", "chunks", "prompt")
    elif fault == "target":
        targets[at] = data.draw(st.sampled_from([*BAD_TARGETS, world.vocab, -1]))
        fields = ("target_tokens",)
    elif fault == "weight":
        weights[at] = data.draw(st.sampled_from(BAD_WEIGHTS))
        fields = ("weights",)
    elif fault == "short_weights":
        weights = weights[:-1]
        fields = ("weights",)
    elif fault == "nested_weights":
        weights = [weights, [*weights[:-1], [1.0]]]
        fields = ("weights",)
    elif fault == "loss_fn":
        loss_fn = data.draw(st.sampled_from(["", "nope", "CROSS_ENTROPY", "custom", "x" * 300]))
        fields = ("loss_fn",)
    elif fault == "loss_config":
        loss_fn = "ppo"
        config = {"clip_low_threshold": data.draw(st.sampled_from([math.inf, math.nan, "x"]))}
        fields = ("clip_low_threshold", "loss_fn_config")
    elif fault == "loss_config_order":
        loss_fn = "ppo"
        config = {"clip_low_threshold": 1.5, "clip_high_threshold": 0.5}
        fields = ("clip_low_threshold", "clip_high_threshold")
    elif fault == "ppo_inputs":
        loss_fn = "ppo"
        fields = ("logprobs", "advantages")
    inputs: dict[str, Any] = {"target_tokens": targets, "weights": weights}
    if fault == "missing_target":
        del inputs["target_tokens"]
        fields = ("target_tokens",)
    note(f"{fault=} {tokens=} {inputs=} {loss_fn=} {config=}")
    before = len(world.engine.forwards)

    def call() -> Any:
        datum = types.Datum(model_input=types.ModelInput.from_ints(tokens), loss_fn_inputs=inputs)
        run = world.training.forward_backward if backward else world.training.forward
        return run([datum], loss_fn, config)

    result, exc = _run(call)
    # Out-of-vocabulary tokens are valid numbers: the server refuses them (naming them).
    outcome = _expect(exc, fault is None, fields or ("data",), server_may_refuse=False)
    if outcome == "client":
        assert len(world.engine.forwards) == before  # nothing was sent
    if outcome != "served":
        return
    got, got_loss, _ = world.engine.forwards[before]
    assert got_loss == loss_fn
    (datum,) = got
    assert list(datum.tokens) == tokens
    assert _values(datum.loss_fn_inputs["target_tokens"]) == targets
    assert _values(datum.loss_fn_inputs["weights"]) == [float(w) for w in weights]
    assert len(result.loss_fn_outputs) == 1  # the loss itself may be anything (inf, NaN)


def _values(tensor: Any) -> list[Any]:
    """The flat values of a loss input as the engine got it (TensorData, tensor or list)."""
    if isinstance(tensor, torch.Tensor):
        return list(tensor.flatten().tolist())
    return list(getattr(tensor, "data", tensor))


# -- tinker:// paths through create_sampling_client and load_state ------------------------------

paths = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "tinker://",
            "tinker:///",
            "tinker://run",
            "tinker://run/sampler_weights",
            "tinker://run/sampler_weights/",
            "tinker://run/weights/../../etc/passwd",
            "tinker://run/sampler_weights/..",
            "tinker://run/other/name",
            "tinker://run/sampler_weights/name/extra",
            "tinker://r%00n/sampler_weights/x",
            "tinker://" + "a" * 5000 + "/sampler_weights/x",
            "TINKER://run/sampler_weights/x",
            "https://example.com/x",
            "tinker://run\n/sampler_weights/x",
            "tinker://rün/sampler_weights/ẋ",
        ]
    ),
    st.builds(
        "tinker://{}/{}/{}".format,
        st.text(min_size=1, max_size=8),
        st.sampled_from(["weights", "sampler_weights"]),
        st.text(min_size=1, max_size=8),
    ),
)


@settings(FUZZ, max_examples=150 * SCALE)
@given(path=paths, kind=st.sampled_from(["sampler", "load_state"]))
def test_fuzz_tinker_paths(world: World, path: str, kind: str) -> None:
    def call() -> Any:
        if kind == "sampler":
            client = world.service.create_sampling_client(model_path=path)
            prompt = types.ModelInput.from_ints([1])
            return client.sample(prompt, 1, types.SamplingParams(max_tokens=1))
        return world.training.load_state(path)

    _, exc = _run(call)
    # None of these paths names a checkpoint that exists: each must be refused, naming the
    # path (a 404 for a well-formed one that does not exist).
    assert exc is not None, f"{path!r} was accepted"
    _refusal(exc)
    status = getattr(exc, "status_code", None)
    assert status == 404 or _names(exc, ("path", "tinker://")), f"{path!r}: {exc}"
