"""``tinkex conformance [URL]``: run the whole Tinker loop against a server and report every
call as ok / failed (with the server's status and message) / not offered / skipped.

The steps are in :mod:`tinkex_cli._conformance_steps` and :mod:`tinkex_cli._conformance_rest`;
the engine (selection, outcomes, cleanup) in :mod:`tinkex_cli._conformance`. Exit code 0 only
when no row failed.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections import Counter
from typing import Any

import click

from tinkex_cli._conformance import (
    Probe,
    Row,
    Step,
    cleanup,
    close_service,
    plan,
    run_one,
    run_steps,
    unknown_selectors,
)
from tinkex_cli._conformance_rest import rest_steps
from tinkex_cli._conformance_steps import (
    CLOSE_STEP,
    UNLOAD_STEP,
    sampling_steps,
    session_steps,
    training_steps,
)
from tinkex_cli._context import CLIState, format_option, pass_state
from tinkex_cli._errors import ExitCode
from tinkex_cli._output import Output

__all__ = ["all_steps", "conformance_command"]

GENERATIONS = ("auto", "json", "protobuf")
#: Retries of one failed request unless --max-retries / TINKEX_MAX_RETRIES say otherwise:
#: a conformance run should see failures, not wait them out.
DEFAULT_RETRIES = 2
_LABELS = {"ok": "ok", "failed": "FAILED", "not_offered": "not offered", "skipped": "skipped"}


def all_steps() -> list[Step]:
    """Every step, in table order (``close`` last)."""
    return [
        *session_steps(),
        *training_steps(),
        *sampling_steps(),
        *rest_steps(),
        UNLOAD_STEP,
        CLOSE_STEP,
    ]


def _selectors(values: tuple[str, ...]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _config(state: CLIState, url: str | None, generation: str | None) -> tuple[Any, str]:
    """The client configuration for ``url`` and the generation it will speak (``Config``'s
    ``protocol``: the option, else ``TINKEX_PROTOCOL``, else auto; JSON for a client
    without that setting)."""
    if url is not None:
        state.base_url = url
    if state.max_retries is None and "TINKEX_MAX_RETRIES" not in os.environ:
        state.max_retries = DEFAULT_RETRIES
    config = state.config()
    if "protocol" in {f.name for f in dataclasses.fields(config)}:
        if generation is not None:
            config = config.replace(protocol=generation)
        return config, str(getattr(config, "protocol", "json"))
    if generation == "protobuf":
        raise click.UsageError(
            "--generation protobuf: this tinkex client speaks the JSON generation only "
            "(tinkex_http.Config has no protocol setting); use --generation json or auto",
        )
    return config, "json"


def _row_doc(row: Row) -> dict[str, Any]:
    return {
        "step": row.step,
        "call": row.call,
        "status": row.status,
        "http_status": row.http_status,
        "message": row.message,
        "seconds": round(row.seconds, 3),
    }


def _detail(row: Row) -> str:
    if row.http_status is not None:
        return f"HTTP {row.http_status}: {row.message}"
    return row.message


def _run(probe: Probe, steps: list[Step], shown: set[str], out: Output) -> tuple[list[Row], Any]:
    """Run the steps, clean up, close; the rows and the cleanup document."""
    live = not out.json and sys.stderr.isatty()

    def progress(row: Row) -> None:
        if live:
            out.info(f"{row.step}: {_LABELS[row.status]}")

    body = [s for s in steps if s.name != CLOSE_STEP.name]
    rows: list[Row] = []
    removed: list[str] = []
    left: list[str] = []
    try:
        rows = run_steps(body, probe, shown, progress)
    finally:
        removed, left = cleanup(probe)
        if CLOSE_STEP.name in shown and probe.service is not None:
            rows.append(run_one(CLOSE_STEP, probe))
        else:
            close_service(probe)
    if left:
        rows.append(
            Row("cleanup", "delete what this run created", "failed", "left: " + "; ".join(left))
        )
    elif removed:
        rows.append(Row("cleanup", "delete what this run created", "ok", "; ".join(removed)))
    return rows, {"removed": removed, "left": left}


@click.command("conformance")
@click.argument("url", required=False)
@click.option(
    "--generation",
    type=click.Choice(GENERATIONS),
    default=None,
    help="Wire generation the client speaks: json, protobuf, or auto (negotiated with the "
    "server's client/config). Default: $TINKEX_PROTOCOL, else auto.",
)
@click.option("--base-model", default=None, metavar="NAME", help="Default: the first listed.")
@click.option("--only", multiple=True, metavar="STEPS", help="Run only these steps (repeatable).")
@click.option("--skip", multiple=True, metavar="STEPS", help="Do not run these steps.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for one result.",
)
@click.option("--list-steps", is_flag=True, help="Print the step names and exit.")
@format_option
@pass_state
def conformance_command(
    state: CLIState,
    url: str | None,
    generation: str | None,
    base_model: str | None,
    only: tuple[str, ...],
    skip: tuple[str, ...],
    wait: float,
    list_steps: bool,
) -> None:
    """Check a Tinker-compatible server at URL (default: --base-url / $TINKER_BASE_URL).

    Runs the whole loop through the public client API -- session, capabilities, a LoRA
    training client, every loss, optim_step, saves and loads, sampling (seed, stop,
    logprobs, prompt logprobs), compute_logprobs, the REST routes, close -- and prints one
    row per call. It deletes what it created and touches nothing else. Exit code 0 only
    when no row failed.

    \b
    --only/--skip take step names or their prefixes, comma-separated or repeated:
      tinkex conformance http://127.0.0.1:8000 --only forward_backward,sample
      tinkex conformance local:// --skip rest -f json
    """
    steps = all_steps()
    out = state.output
    if list_steps:
        out.emit(
            [{"step": s.name, "call": s.call, "needs": list(s.needs)} for s in steps],
            lambda o: o.table(["Step", "Call", "Needs"], _step_rows(steps)),
        )
        return
    only_sel, skip_sel = _selectors(only), _selectors(skip)
    unknown = unknown_selectors(steps, [*only_sel, *skip_sel])
    if unknown:
        raise click.UsageError(
            f"unknown step(s) {', '.join(unknown)}; see tinkex conformance --list-steps"
        )
    config, protocol = _config(state, url, generation)
    chosen, shown = plan(steps, only_sel, skip_sel)
    probe = Probe(config=config, hooks=state.hooks, base_model=base_model, wait=wait)
    rows, cleaned = _run(probe, chosen, shown, out)
    counts: Counter[str] = Counter(row.status for row in rows)
    passed = counts["failed"] == 0
    doc = {
        "url": config.base_url,
        "generation": protocol,
        "base_model": probe.base_model,
        "passed": passed,
        "counts": {k: counts[k] for k in _LABELS},
        "rows": [_row_doc(r) for r in rows],
        "cleanup": cleaned,
    }

    def render(o: Output) -> None:
        title = f"Conformance of {config.base_url} (generation: {protocol})"
        o.table(
            ["Step", "Status", "Detail"],
            [(r.step, _LABELS[r.status], _detail(r)) for r in rows],
            title=title,
        )
        summary = ", ".join(f"{counts[k]} {_LABELS[k].lower()}" for k in _LABELS)
        o.line(f"{'PASSED' if passed else 'FAILED'}: {summary}")

    out.emit(doc, render)
    if not passed:
        raise click.exceptions.Exit(ExitCode.ERROR)


def _step_rows(steps: list[Step]) -> list[tuple[str, str, str]]:
    return [(s.name, s.call, ", ".join(s.needs)) for s in steps]
