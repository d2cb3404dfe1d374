"""P1 client overhead: per-request time above the raw-httpx floor, tinkex vs the official
client, in both wire generations.

Every side talks to the same ``tinkex serve`` subprocess (127.0.0.1, tmp data dir). One
round is N ``get_info``, N one-token ``sample`` and N one-datum (32-token)
``forward_backward`` calls, each waited for before the next. The sides:

* two floors, one per generation: a raw keep-alive ``httpx.Client`` doing by hand the wire
  work that generation's official client does, with no SDK around it (what the server and
  loopback cost): ``raw`` as 0.16.1 (JSON bodies and results, a ``get_info`` request per
  call) and ``raw-protobuf`` as 0.38.0 (``get_info`` answered from the value fetched when
  the client was created, as 0.38 does, so no request; ``sample`` and
  ``forward_backward`` results asked for as protobuf; ``forward_backward`` bodies sent as
  zstd-compressed protobuf, as the server's client flags tell 0.38 to);
* JSON generation: tinkex (``protocol="json"``) vs tinker 0.16.1, over the ``raw`` floor;
* protobuf generation: tinkex (``protocol="protobuf"``) vs tinker 0.38.0, whose process
  runs the python of its own venv (``bench/_official.py``): it cannot be installed next to
  0.16.1; over the ``raw-protobuf`` floor.

Every side runs ``bench/p1_worker.py`` in a process of its own, driven round by round over
a pipe, so no client pays for another's background threads on a shared GIL.

Rounds alternate (the order rotates every round). A client's overhead per call kind is its
mean time per call minus its generation's floor; the row's figure is the worst of the three
ratios tinkex overhead / official overhead (target ≤ 0.5×). (With a JSON floor for both
generations, 0.38.0 came out under the floor: its ``get_info`` sends no request and its
protobuf results cost the server less to write than JSON ones.)
"""

from __future__ import annotations

from typing import Any, Final

from bench._clients import SMALL_MODEL
from bench._harness import Context, Row, log, rounds_within
from bench._server import API_KEY

KEY = "p1"
TITLE = "client overhead above the raw-httpx floor"
OP: Final = "<="
TARGET = 0.5
UNIT = "×"

KINDS = ("info", "sample", "fb")
OFFICIAL_PROTOBUF = "0.38.0"


class _Side:
    """One client in its own process (``bench/p1_worker.py``), its wall times per call kind."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.name: str = worker.name
        self.times: dict[str, list[float]] = {k: [] for k in KINDS}

    def round(self, n: int) -> None:
        got = self.worker.round(n)
        for kind in KINDS:
            self.times[kind].append(got[kind])

    def reset(self) -> None:
        self.times = {k: [] for k in KINDS}

    def ms(self, kind: str, per: int) -> float:
        return sum(self.times[kind]) / per * 1e3


#: (p1_worker kind, official release for its own venv or None for this python), in the
#: order tinkex JSON, tinker 0.16.1, JSON floor, tinkex protobuf, tinker 0.38.0, 0.38 floor.
SIDES: Final = (
    ("tinkex-json", None),
    ("tinker", None),
    ("raw", None),
    ("tinkex-protobuf", None),
    ("tinker", OFFICIAL_PROTOBUF),
    ("raw-protobuf", None),
)


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
    from bench._official import OfficialWorker

    n, rounds = (3, 1) if ctx.tiny else (30, 4)
    url = ctx.server().base_url
    log(f"p1: {rounds} rounds x {n} each of get_info, sample(1 token), forward_backward")
    sides: list[_Side] = []
    try:
        for kind, version in SIDES:
            side = _Side(OfficialWorker(kind, url, API_KEY, SMALL_MODEL, version))
            sides.append(side)
            side.round(min(n, 5))  # warm-up: connections, caches, lazy imports
            side.reset()
        for r in rounds_within(rounds, 150, KEY):
            shift = r % len(sides)
            for side in sides[shift:] + sides[:shift]:
                side.round(n)
    finally:
        for side in sides:
            side.worker.close()
    tx_json, tk_json, raw, tx_proto, tk_proto, raw_proto = sides
    per = len(raw.times["info"]) * n
    return [
        _row("json", tx_json, tk_json, raw, per),
        _row("protobuf", tx_proto, tk_proto, raw_proto, per),
    ]
