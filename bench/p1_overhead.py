"""P1 client overhead: per-request time above the raw-httpx floor, tinkex vs the official
client, in both wire generations.

Every side talks to the same ``tinkex serve`` subprocess (127.0.0.1, tmp data dir). One
round is N ``get_info``, N one-token ``sample`` and N one-datum (32-token)
``forward_backward`` calls, each waited for before the next. The sides:

* the floor: a raw keep-alive ``httpx.Client`` speaking the JSON protocol by hand (what the
  server and loopback cost with no SDK at all);
* JSON generation: tinkex (``protocol="json"``) vs tinker 0.16.1 (in this process);
* protobuf generation: tinkex (``protocol="protobuf"``) vs tinker 0.38.0, which runs in a
  subprocess with its own venv (``bench/_official.py``) because it cannot be installed
  next to 0.16.1.

Rounds alternate (the order rotates every round). A client's overhead per call kind is its
mean time per call minus the floor's; the row's figure is the worst of the three ratios
tinkex overhead / official overhead (target ≤ 0.5×). The floor is JSON for both
generations: with one 32-token datum, the protobuf body's server-side decoding differs from
JSON's by microseconds (P9 measures decoding on a 64 × 2048 batch).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from bench._clients import SMALL_MODEL, RawClient, close_quietly, tinker_service, tinkex_service
from bench._harness import Context, Row, log, rounds_within
from bench._server import API_KEY

KEY = "p1"
TITLE = "client overhead above the raw-httpx floor"
OP: Final = "<="
TARGET = 0.5
UNIT = "×"

PROMPT = [1, 17, 42, 99, 7]
FB_TOKENS = 32
KINDS = ("info", "sample", "fb")
OFFICIAL_PROTOBUF = "0.38.0"


def _fb_tokens() -> list[int]:
    return [(7 * i) % 500 + 3 for i in range(FB_TOKENS + 1)]


class _Side:
    """One client's round: N get_info, N one-token samples, N one-datum forward_backward."""

    def __init__(self, name: str, calls: dict[str, Callable[[int], Any]]) -> None:
        self.name = name
        self.calls = calls
        self.times: dict[str, list[float]] = {k: [] for k in KINDS}

    def round(self, n: int) -> None:
        for kind in KINDS:
            fn = self.calls[kind]
            start = time.perf_counter()
            for i in range(n):
                fn(i)
            self.times[kind].append(time.perf_counter() - start)

    def reset(self) -> None:
        self.times = {k: [] for k in KINDS}

    def ms(self, kind: str, per: int) -> float:
        return sum(self.times[kind]) / per * 1e3


class _WorkerSide(_Side):
    """The official client in its own venv, driven over a pipe."""

    def __init__(self, name: str, worker: Any) -> None:
        super().__init__(name, {})
        self.worker = worker

    def round(self, n: int) -> None:
        got = self.worker.round(n)
        for kind in KINDS:
            self.times[kind].append(got[kind])


def _sdk_side(name: str, service: Any, types: Any, training_kwargs: dict[str, Any]) -> _Side:
    training = service.create_lora_training_client(SMALL_MODEL, rank=4, **training_kwargs)
    sampler = service.create_sampling_client(base_model=SMALL_MODEL)
    prompt = types.ModelInput.from_ints(PROMPT)
    seq = _fb_tokens()
    datum = types.Datum(
        model_input=types.ModelInput.from_ints(seq[:-1]),
        loss_fn_inputs={"target_tokens": seq[1:], "weights": [1.0] * FB_TOKENS},
    )
    return _Side(
        name,
        {
            "info": lambda i: training.get_info(),
            "sample": lambda i: sampler.sample(
                prompt, 1, types.SamplingParams(max_tokens=1, seed=i)
            ).result(),
            "fb": lambda i: training.forward_backward([datum], "cross_entropy").result(),
        },
    )


def _tinkex_side(url: str, protocol: str) -> tuple[_Side, Any]:
    import tinkex_types

    service = tinkex_service(url, protocol=protocol)
    return _sdk_side(f"tinkex {protocol}", service, tinkex_types, {}), service


def _tinker_side(url: str) -> tuple[_Side, Any]:
    from tinker import types as T

    service = tinker_service(url)
    return _sdk_side("tinker 0.16.1", service, T, {}), service


def _tinker_proto_side(url: str) -> tuple[_Side, Any]:
    from bench._official import OfficialWorker

    worker = OfficialWorker(OFFICIAL_PROTOBUF, url, API_KEY, SMALL_MODEL)
    return _WorkerSide(f"tinker {worker.reported_version}", worker), worker


def _raw_side(url: str) -> tuple[_Side, Any]:
    raw = RawClient(url)
    model_id = raw.create_model(SMALL_MODEL, rank=4)
    sampler = raw.create_sampler(SMALL_MODEL)
    seq = _fb_tokens()
    return _Side(
        "raw httpx",
        {
            "info": lambda i: raw.get_info(model_id),
            "sample": lambda i: raw.sample(sampler, PROMPT, 1, seed=i),
            "fb": lambda i: raw.forward_backward(model_id, seq),
        },
    ), raw


#: An official overhead under this (ms) is floor noise: it is taken as this, so the ratio
#: stays finite and large (a miss), never a division by ~0.
MIN_OVERHEAD_MS = 0.05


def _ratio(ours: float, theirs: float) -> float:
    """tinkex overhead / official overhead (a negative overhead, i.e. under the floor's
    noise, counts as 0 for tinkex and as ``MIN_OVERHEAD_MS`` for the official client)."""
    return max(ours, 0.0) / max(theirs, MIN_OVERHEAD_MS)


def _row(gen: str, ours: _Side, theirs: _Side, floor: _Side, per: int) -> Row:
    ratios: dict[str, float] = {}
    parts: list[str] = []
    label = {"info": "get_info", "sample": "sample", "fb": "forward_backward"}
    for kind in KINDS:
        f = floor.ms(kind, per)
        o = ours.ms(kind, per) - f
        t = theirs.ms(kind, per) - f
        ratios[kind] = _ratio(o, t)
        parts.append(f"{label[kind]} +{o:.2f}/+{t:.2f} ms over {f:.2f} ({ratios[kind]:.2f}×)")
    value = max(ratios.values())
    detail = f"{ours.name} vs {theirs.name}: " + "; ".join(parts) + f" ({per} of each)"
    return Row(
        key=f"{KEY}-{gen}",
        title=f"{TITLE}, {gen} (worst of 3 calls, tinkex/{theirs.name})",
        value=value,
        unit=UNIT,
        op=OP,
        target=TARGET,
        detail=detail,
        extra={
            "requests_per_kind": per,
            "ratios": ratios,
            "ms": {s.name: {k: s.ms(k, per) for k in KINDS} for s in (ours, theirs, floor)},
        },
    )


def run(ctx: Context) -> list[Row]:
    n, rounds = (3, 1) if ctx.tiny else (30, 4)
    url = ctx.server().base_url
    log(f"p1: {rounds} rounds x {n} each of get_info, sample(1 token), forward_backward")
    makers = [
        lambda: _tinkex_side(url, "json"),
        lambda: _tinker_side(url),
        lambda: _raw_side(url),
        lambda: _tinkex_side(url, "protobuf"),
        lambda: _tinker_proto_side(url),
    ]
    sides: list[_Side] = []
    closers: list[Any] = []
    try:
        for make in makers:
            side, closer = make()
            sides.append(side)
            closers.append(closer)
            side.round(min(n, 5))  # warm-up: connections, caches, lazy imports
            side.reset()
        for r in rounds_within(rounds, 150, KEY):
            shift = r % len(sides)
            for side in sides[shift:] + sides[:shift]:
                side.round(n)
    finally:
        for closer in closers:
            close_quietly(closer)
    tx_json, tk_json, raw, tx_proto, tk_proto = sides
    per = len(raw.times["info"]) * n
    return [
        _row("json", tx_json, tk_json, raw, per),
        _row("protobuf", tx_proto, tk_proto, raw, per),
    ]
