"""P1 client overhead per request: tinkex vs the official tinker 0.16.1 client.

Both clients talk to the same ``tinkex serve`` subprocess (127.0.0.1, tmp data dir). One
round is N ``get_info`` calls followed by N one-token ``sample`` calls, each waited for
before the next (so the time is per-request latency, client + loopback + server). Rounds
alternate between the clients (the order flips every round); the figure is the ratio of
the summed wall times. A raw keep-alive ``httpx.Client`` speaking the protocol by hand runs
the same rounds: its time is the server's own share, which no client can go under.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from bench._clients import SMALL_MODEL, RawClient, close_quietly, tinker_service, tinkex_service
from bench._harness import Context, Row, log, rounds_within

KEY = "p1"
TITLE = "client overhead per request"
OP: Final = "<="
TARGET = 0.5
UNIT = "×"

PROMPT = [1, 17, 42, 99, 7]


class _Side:
    """One client's round: N get_info, then N one-token samples."""

    def __init__(
        self, name: str, get_info: Callable[[], Any], sample: Callable[[int], Any]
    ) -> None:
        self.name = name
        self.get_info = get_info
        self.sample = sample
        self.info_s: list[float] = []
        self.sample_s: list[float] = []

    def round(self, n: int) -> None:
        start = time.perf_counter()
        for _ in range(n):
            self.get_info()
        mid = time.perf_counter()
        for i in range(n):
            self.sample(i)
        end = time.perf_counter()
        self.info_s.append(mid - start)
        self.sample_s.append(end - mid)

    @property
    def total(self) -> float:
        return sum(self.info_s) + sum(self.sample_s)


def _tinkex_side(url: str) -> tuple[_Side, Any]:
    from tinkex_types import ModelInput, SamplingParams

    service = tinkex_service(url)
    training = service.create_lora_training_client(SMALL_MODEL, rank=4)
    sampler = service.create_sampling_client(base_model=SMALL_MODEL)
    prompt = ModelInput.from_ints(PROMPT)

    def sample(i: int) -> Any:
        params = SamplingParams(max_tokens=1, seed=i)
        return sampler.sample(prompt, 1, params).result()

    return _Side("tinkex", training.get_info, sample), service


def _tinker_side(url: str) -> tuple[_Side, Any]:
    from tinker import types as T

    service = tinker_service(url)
    training = service.create_lora_training_client(SMALL_MODEL, rank=4)
    sampler = service.create_sampling_client(base_model=SMALL_MODEL)
    prompt = T.ModelInput.from_ints(PROMPT)

    def sample(i: int) -> Any:
        params = T.SamplingParams(max_tokens=1, seed=i)
        return sampler.sample(prompt, 1, params).result()

    return _Side("tinker", training.get_info, sample), service


def _raw_side(url: str) -> tuple[_Side, Any]:
    raw = RawClient(url)
    model_id = raw.create_model(SMALL_MODEL, rank=4)
    sampler = raw.create_sampler(SMALL_MODEL)

    def get_info() -> Any:
        return raw.get_info(model_id)

    def sample(i: int) -> Any:
        return raw.sample(sampler, PROMPT, 1, seed=i)

    return _Side("raw httpx", get_info, sample), raw


def run(ctx: Context) -> Row:
    n, rounds = (3, 1) if ctx.tiny else (40, 5)
    url = ctx.server().base_url
    log(f"p1: {rounds} rounds x ({n} get_info + {n} sample(max_tokens=1)) per client")
    sides: list[_Side] = []
    closers: list[Any] = []
    try:
        for make in (_tinkex_side, _tinker_side, _raw_side):
            side, closer = make(url)
            sides.append(side)
            closers.append(closer)
            side.round(min(n, 5))  # warm-up: connections, caches, lazy imports
            side.info_s.clear()
            side.sample_s.clear()
        for r in rounds_within(rounds, 90, KEY):
            order = sides if r % 2 == 0 else [sides[1], sides[0], sides[2]]
            for side in order:
                side.round(n)
    finally:
        for closer in closers:
            close_quietly(closer)
    tx, tk, raw = sides
    ratio = tx.total / tk.total
    per = len(tx.info_s) * n

    def ms(values: list[float]) -> float:
        return sum(values) / per * 1e3

    detail = (
        f"per request get_info/sample: tinkex {ms(tx.info_s):.1f}/{ms(tx.sample_s):.1f} ms, "
        f"tinker {ms(tk.info_s):.1f}/{ms(tk.sample_s):.1f} ms, "
        f"raw httpx floor {ms(raw.info_s):.1f}/{ms(raw.sample_s):.1f} ms "
        f"(floor/tinker {raw.total / tk.total:.2f}×; {per} of each)"
    )
    return Row(
        key=KEY,
        title=f"{TITLE} (wall time tinkex/tinker)",
        value=ratio,
        unit=UNIT,
        op=OP,
        target=TARGET,
        detail=detail,
        extra={
            "requests_per_kind": per,
            "total_s": {s.name: s.total for s in sides},
            "floor_over_tinker": raw.total / tk.total,
            "get_info_ms": {s.name: ms(s.info_s) for s in sides},
            "sample_ms": {s.name: ms(s.sample_s) for s in sides},
        },
    )
