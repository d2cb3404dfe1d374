"""Rows, targets, the results table and small timing helpers shared by every benchmark."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    from bench._server import ServerProcess

__all__ = [
    "Context",
    "Row",
    "Size",
    "format_table",
    "log",
    "median",
    "percentile",
    "rounds_within",
]

Size = Literal["tiny", "default"]


def log(message: str) -> None:
    """Progress line on stderr (the table goes to stdout)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between order statistics."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class Row:
    """One line of the results table.

    ``value`` is the figure compared with ``target`` using ``op``: a ratio (``unit`` ``×``)
    or an absolute figure where the issue sets one (ms, MB). ``detail`` holds the raw
    measurements the figure was computed from. A row whose ``value`` is not finite never
    passes.
    """

    key: str
    title: str
    value: float
    unit: str
    op: Literal["<=", ">="]
    target: float
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def passed(self) -> bool:
        if self.error is not None or not math.isfinite(self.value):
            return False
        if self.op == "<=":
            return self.value <= self.target
        return self.value >= self.target

    @property
    def status(self) -> str:
        if self.error is not None:
            return "ERROR"
        return "pass" if self.passed else "MISS"

    def value_text(self) -> str:
        return _fmt(self.value, self.unit)

    def target_text(self) -> str:
        sign = "≤" if self.op == "<=" else "≥"
        return f"{sign} {_fmt(self.target, self.unit)}"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        out["status"] = self.status
        for key in ("value", "target"):
            if not math.isfinite(out[key]):
                out[key] = None  # strict JSON
        return out


def _fmt(value: float, unit: str) -> str:
    if not math.isfinite(value):
        return "n/a"
    if unit == "×":
        return f"{value:.2f}×" if value < 100 else f"{value:.0f}×"
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:.{digits}f} {unit}"


def format_table(rows: list[Row], *, markdown: bool = False) -> str:
    """The results as an aligned text table (or a Markdown table)."""
    header = ["bench", "what", "result", "target", "status", "measured"]
    body = [
        [
            r.key.upper(),
            r.title,
            r.value_text(),
            r.target_text(),
            r.status,
            r.error if r.error is not None else r.detail,
        ]
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(line[i]) for line in body)) for i, h in enumerate(header[:-1])]
    out = []
    for line in [header, *body]:
        cells = [c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)]
        out.append("  ".join([*cells, line[-1]]).rstrip())
    out.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(header[-1]))
    return "\n".join(out)


class Context:
    """What a benchmark gets: the size, a scratch directory and the shared server.

    The ``tinkex serve`` subprocess is started on first use and shared by every benchmark
    of one run (each benchmark creates its own models on it), then stopped by :meth:`close`.
    """

    def __init__(self, size: Size, workdir: Path | None = None, *, keep: bool = False) -> None:
        self.size: Size = size
        self._own_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix="tinkex-bench-")) if workdir is None else workdir
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._server: ServerProcess | None = None
        self.torch_threads = max(1, min(os.cpu_count() or 1, 2))

    @property
    def tiny(self) -> bool:
        return self.size == "tiny"

    def scratch(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def server(self) -> ServerProcess:
        if self._server is None:
            from bench._server import ServerProcess

            self._server = ServerProcess(
                self.workdir / "server-data", torch_threads=self.torch_threads
            )
            log("starting tinkex serve ...")
            started = time.perf_counter()
            self._server.start()
            log(
                f"tinkex serve listening on {self._server.base_url} "
                f"({time.perf_counter() - started:.1f} s)"
            )
        return self._server

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._own_workdir and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def timed(sink: list[float]) -> Iterator[None]:
    """Append the wall time (perf_counter seconds) of the block to ``sink``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        sink.append(time.perf_counter() - start)


def rounds_within(rounds: int, budget_s: float, what: str) -> Iterator[int]:
    """``range(rounds)``, but no new round starts once ``budget_s`` seconds have passed
    (the first round always runs): keeps the whole suite under its time limit on a busy
    machine. A shortened run is logged."""
    start = time.perf_counter()
    for r in range(rounds):
        if r and time.perf_counter() - start > budget_s:
            log(f"{what}: stopping after {r} of {rounds} rounds (time budget {budget_s:.0f} s)")
            return
        yield r


def best_of(fn: Callable[[], object], repeat: int) -> list[float]:
    """Wall times of ``repeat`` calls of ``fn``."""
    times: list[float] = []
    for _ in range(repeat):
        with timed(times):
            fn()
    return times
