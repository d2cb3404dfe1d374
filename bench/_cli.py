"""Command line: run the selected benchmarks and print one table."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

from bench import BENCHMARKS, OPT_IN
from bench._harness import Context, Row, format_table, log

__all__ = ["main", "run_benchmarks"]


def _module(key: str) -> ModuleType:
    return importlib.import_module(BENCHMARKS[key])


def _error_row(mod: ModuleType, key: str, exc: BaseException) -> Row:
    return Row(
        key=key,
        title=str(getattr(mod, "TITLE", key)),
        value=math.nan,
        unit=str(getattr(mod, "UNIT", "×")),
        op=getattr(mod, "OP", ">="),
        target=float(getattr(mod, "TARGET", math.nan)),
        error=f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
    )


def run_benchmarks(keys: list[str], ctx: Context) -> list[Row]:
    """Run ``keys`` in order with ``ctx``; a failing benchmark becomes an ERROR row.

    A benchmark's ``run`` returns one row or a list of rows (e.g. one per wire generation)."""
    rows: list[Row] = []
    for key in keys:
        started = time.perf_counter()
        log(f"== {key}")
        try:
            mod = _module(key)
        except Exception as exc:  # an unimportable benchmark is an ERROR row too
            traceback.print_exc()
            rows.append(
                Row(key, key, math.nan, "×", ">=", math.nan, error=f"{type(exc).__name__}: {exc}")
            )
            continue
        try:
            got = mod.run(ctx)
            produced: list[Row] = got if isinstance(got, list) else [got]
        except Exception as exc:
            traceback.print_exc()
            produced = [_error_row(mod, key, exc)]
        elapsed = time.perf_counter() - started
        for row in produced:
            row.extra["elapsed_s"] = round(elapsed, 2)
            log(
                f"{row.key}: {row.value_text()} (target {row.target_text()}) {row.status} "
                f"[{elapsed:.1f} s]"
            )
        rows.extend(produced)
    return rows


def _loadavg() -> tuple[float, float, float]:
    """The 1/5/15-minute load averages (NaN where the OS has none): a busy machine skews
    ratios."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return (math.nan, math.nan, math.nan)


def _load_text(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.1f}" for x in load)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="tinkex benchmarks: each prints its ratio, the target and pass/MISS.",
    )
    p.add_argument(
        "benchmarks",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run ({', '.join(BENCHMARKS)}; default: all but the opt-in "
        f"{', '.join(sorted(OPT_IN))})",
    )
    p.add_argument(
        "--size",
        choices=["tiny", "default"],
        default="default",
        help="tiny: seconds-long smoke sizes (numbers not meaningful); default: the issue sizes",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument(
        "--workdir", type=Path, default=None, help="scratch directory (default: a new temp dir)"
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument(
        "--strict", action="store_true", help="exit with status 1 when a target is missed"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    default = [k for k in BENCHMARKS if k not in OPT_IN]
    keys = [k.lower() for k in args.benchmarks] or default
    if "all" in keys:  # "all" keeps the opt-in benchmarks that were named beside it
        keys = [k for k in BENCHMARKS if k not in OPT_IN or k in keys]
    unknown = [k for k in keys if k not in BENCHMARKS]
    if unknown:
        _parser().error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    started = time.perf_counter()
    load_before = _loadavg()
    log(f"load average 1/5/15 min before: {_load_text(load_before)}")
    with Context(args.size, args.workdir, keep=args.keep) as ctx:
        rows = run_benchmarks(keys, ctx)
    total = time.perf_counter() - started
    cpus = os.cpu_count()
    load_after = _loadavg()
    print(
        f"tinkex benchmarks (size={args.size}; {cpus} CPUs, Python {platform.python_version()}; "
        f"{total:.0f} s; load average 1/5/15 min {_load_text(load_before)} before, "
        f"{_load_text(load_after)} after)"
    )
    print(format_table(rows, markdown=args.markdown))
    if args.json is not None:
        payload = {
            "size": args.size,
            "cpus": cpus,
            "python": platform.python_version(),
            "total_s": round(total, 1),
            "loadavg": {
                "before": [round(x, 2) for x in load_before],
                "after": [round(x, 2) for x in load_after],
            },
            "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
            "rows": [r.to_json() for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    if any(r.error is not None for r in rows):
        return 2
    if args.strict and not all(r.passed for r in rows):
        return 1
    return 0
