"""Run the compatibility driver for every official ``tinker`` release and print a table.

Run it from the repo root with a python that has tinkex-server installed (it starts
``tinkex serve`` with that python, once per release, each with a fresh data directory)::

    hatch run hatch-test.py3.11:python tests/compat/run_all.py
    hatch run hatch-test.py3.11:python tests/compat/run_all.py --python 0.38.0=/work/venvs/t0.38.0/bin/python
    python3 tests/compat/run_all.py --url http://127.0.0.1:8000   # a server already running

Each release runs in its own venv: ``--python VERSION=PATH`` names an existing one, otherwise
one is built with ``pip install tinker==VERSION`` and cached (see
``compat_harness.venv_root``). Reports are written as JSON to ``--out`` (default
``<repo>/tmp/compat-reports``); the Markdown table on stdout lists, per release, the steps
that failed and the first error. Exit status 0 only if every release passed every step.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import compat_harness as harness


def _python_for(version: str, given: dict[str, str]) -> str:
    if version in given:
        return given[version]
    return str(harness.official_python(version))


def _run_one(version: str, python: str, url: str | None, timeout: float) -> dict[str, Any]:
    if url:
        return harness.run_driver(python, url, timeout=timeout)
    with tempfile.TemporaryDirectory(prefix=f"compat-{version}-") as workdir:
        with harness.serve(Path(workdir)) as served:
            return harness.run_driver(python, served.url, timeout=timeout)


def _row(version: str, report: dict[str, Any]) -> str:
    steps = report.get("steps", [])
    failed = [s for s in steps if not s.get("ok")]
    roots = [s for s in failed if not str(s.get("error", "")).startswith("DependencyFailed")]
    status = "all ok" if not failed else f"{len(failed)}/{len(steps)} failed"
    causes = "<br>".join(f"`{s['step']}`: {str(s.get('error'))[:160]}" for s in roots) or "—"
    return f"| {version} | {status} | {causes} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", nargs="*", default=list(harness.VERSIONS))
    parser.add_argument("--python", action="append", default=[], metavar="VERSION=PATH")
    parser.add_argument("--url", default=None, help="use this server instead of starting one")
    parser.add_argument("--timeout", type=float, default=60.0, help="per client call, seconds")
    parser.add_argument("--out", type=Path, default=harness.ROOT / "tmp" / "compat-reports")
    args = parser.parse_args()
    given = dict(item.split("=", 1) for item in args.python)
    args.out.mkdir(parents=True, exist_ok=True)

    rows = ["| tinker | result | failing steps (root causes) |", "|---|---|---|"]
    all_ok = True
    for version in args.versions:
        try:
            report = _run_one(version, _python_for(version, given), args.url, args.timeout)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            report = {
                "tinker_version": version,
                "ok": False,
                "steps": [{"step": "harness", "ok": False, "error": error}],
            }
        (args.out / f"{version}.json").write_text(json.dumps(report, indent=2))
        all_ok = all_ok and bool(report.get("ok"))
        rows.append(_row(version, report))
        print(harness.failure_lines(report), file=sys.stderr)
    print("\n".join(rows))
    print(f"\nreports: {args.out}", file=sys.stderr)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
