"""``tinkex run usage``: the tokens and steps a server processed for a training run (or a
session), from the server's usage routes (``tinkex serve`` has them)."""

from __future__ import annotations

from typing import Any, Literal

import click

from tinkex_cli._context import CLIState, format_option, pass_state
from tinkex_cli._errors import CLIError, ExitCode
from tinkex_cli._output import Output
from tinkex_cli._paging import resolve
from tinkex_types import APIStatusError, UsageCounts, UsageResponse

__all__ = ["usage_command"]

#: The table's columns: heading, then how to read it from a set of counters.
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Fwd tokens", "forward_tokens"),
    ("Fwd+bwd tokens", "forward_backward_tokens"),
    ("Datums", "datums"),
    ("Optim steps", "optim_steps"),
    ("Samples", "sample_requests"),
    ("Sequences", "sampled_sequences"),
    ("Prompt tokens", "sample_prompt_tokens"),
    ("Generated tokens", "sampled_tokens"),
    ("Logprob prompts", "logprobs_prompt_tokens"),
)


def _cells(counts: UsageCounts) -> list[int]:
    out: list[int] = []
    for _, name in _COLUMNS:
        if name == "datums":
            out.append(counts.forward_datums + counts.forward_backward_datums)
        else:
            out.append(int(getattr(counts, name)))
    return out


def _render(report: UsageResponse, out: Output) -> None:
    what = "Training run" if report.scope == "training_run" else "Session"
    source = "server" if report.source == "server" else "client (the server reports no usage)"
    rows: list[list[Any]] = []
    for entry in report.entries:
        name = (
            entry.training_run_id
            if entry.kind == "training"
            else f"{entry.sampling_session_id or '-'}"
        )
        rows.append([entry.kind, name, entry.base_model, *_cells(entry)])
    if not rows:
        out.line(f"{what} {report.id}: no usage recorded yet (source: {source}).")
        return
    for model, counts in report.by_base_model.items():
        if len(report.by_base_model) > 1:
            rows.append(["total", "", model, *_cells(counts)])
    rows.append(["total", "", "", *_cells(report.totals)])
    out.table(
        ["Kind", "Run / sampler", "Base model", *(c for c, _ in _COLUMNS)],
        rows,
        title=f"Usage of {what.lower()} {report.id} (source: {source})",
    )


@click.command("usage")
@click.argument("run_id", required=False)
@click.option("--session-id", default=None, help="Show a session's usage instead of a run's.")
@click.option(
    "--source",
    type=click.Choice(["auto", "server", "client"]),
    default="auto",
    show_default=True,
    help="server: the server's counts only; auto: also accept this process's own counts "
    "when the server has no usage route (a CLI process has counted nothing).",
)
@format_option
@pass_state
def usage_command(
    state: CLIState,
    run_id: str | None,
    session_id: str | None,
    source: Literal["auto", "server", "client"],
) -> None:
    """Tokens processed for a training run (RUN_ID, or a tinker:// path of one of its
    checkpoints): forward and forward_backward input tokens and datums, optimizer steps,
    sampling prompt and generated tokens."""
    if (run_id is None) == (session_id is None):
        raise click.UsageError("give a RUN_ID or --session-id SESSION_ID (one of them)")
    if run_id is not None and run_id.startswith("tinker://"):
        from tinkex_cli._cmd_checkpoint import parse_tinker_path

        run_id = parse_tinker_path(run_id, param="RUN_ID").training_run_id
    rest = state.rest_client()
    try:
        report: UsageResponse = resolve(
            rest.get_usage(run_id, session_id=session_id, source=source)
        )
    except APIStatusError as exc:
        if exc.status_code not in (404, 405, 501):
            raise
        code = ExitCode.NOT_FOUND if exc.status_code == 404 else ExitCode.ERROR
        raise CLIError(
            f"no usage (HTTP {exc.status_code}): {exc.message}; a server without usage routes "
            "(only tinkex serve has them) answers this too",
            code,
        ) from None
    state.output.emit(report, lambda out: _render(report, out))
