"""``tinkex run list|info``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

import click

from tinkex_cli._context import CLIState, format_option, pass_state
from tinkex_cli._output import Output, format_time
from tinkex_cli._paging import fetch_pages, offset_option, paged_limit_option, resolve
from tinkex_types import TrainingRun

__all__ = ["run_group"]

#: Page size of ``list_training_runs`` calls.
RUN_PAGE_SIZE = 100

F = TypeVar("F", bound=Callable[..., Any])
AccessScope = Literal["owned", "accessible"]


def _lora(run: TrainingRun) -> str:
    if not run.is_lora:
        return "No"
    return f"Yes (rank {run.lora_rank})" if run.lora_rank else "Yes"


def _status(run: TrainingRun) -> str:
    return "Corrupted" if run.corrupted else "Active"


def _access_scope(f: F) -> F:
    return click.option(
        "--access-scope",
        type=click.Choice(["owned", "accessible"]),
        default="owned",
        show_default=True,
        help="owned: your runs; accessible: also runs shared with you.",
    )(f)


@click.group("run")
def run_group() -> None:
    """List and inspect training runs."""


@run_group.command("list")
@paged_limit_option
@offset_option
@_access_scope
@format_option
@pass_state
def list_command(
    state: CLIState, limit: int | None, offset: int, access_scope: AccessScope
) -> None:
    """List your training runs."""
    want = state.effective_limit(limit)
    rest = state.rest_client()

    def page(limit: int, offset: int) -> tuple[list[TrainingRun], int | None]:
        result = resolve(
            rest.list_training_runs(limit=limit, offset=offset, access_scope=access_scope)
        )
        return list(result.training_runs), result.cursor.total_count

    runs, total = fetch_pages(
        page, want=want, offset=offset, page_size=RUN_PAGE_SIZE, what="training runs"
    )
    doc = {"runs": runs, "total": total, "shown": len(runs), "offset": offset, "limit": want}

    def render(out: Output) -> None:
        if not runs:
            out.line("No training runs found.")
            return
        out.table(
            ["Run ID", "Base Model", "Owner", "LoRA", "Status", "Last Update"],
            [
                (
                    r.training_run_id,
                    r.base_model,
                    r.model_owner,
                    _lora(r),
                    _status(r),
                    format_time(r.last_request_time),
                )
                for r in runs
            ],
            title=f"Training runs ({len(runs)} of {total})",
        )
        hidden = total - offset - len(runs)
        if hidden > 0:
            out.line(f"{hidden} more not shown; use --limit 0 to show all, or --offset.")

    state.output.emit(doc, render)


@run_group.command("info")
@click.argument("run_id")
@_access_scope
@format_option
@pass_state
def info_command(state: CLIState, run_id: str, access_scope: AccessScope) -> None:
    """Show one training run (RUN_ID, or any tinker:// path of one of its checkpoints)."""
    rest = state.rest_client()
    if run_id.startswith("tinker://"):
        from tinkex_cli._cmd_checkpoint import parse_tinker_path

        run_id = parse_tinker_path(run_id, param="RUN_ID").training_run_id
    run = resolve(rest.get_training_run(run_id, access_scope))

    def render(out: Output) -> None:
        rows: list[tuple[str, Any]] = [
            ("Run ID", run.training_run_id),
            ("Base model", run.base_model),
            ("Owner", run.model_owner),
            ("LoRA", _lora(run)),
            ("Status", _status(run)),
            ("Last update", format_time(run.last_request_time)),
        ]
        for label, ckpt in (
            ("Last training checkpoint", run.last_checkpoint),
            ("Last sampler checkpoint", run.last_sampler_checkpoint),
        ):
            if ckpt is not None:
                rows.append((label, ckpt.tinker_path))
                rows.append(("  created", format_time(ckpt.time)))
                if ckpt.expires_at is not None:
                    rows.append(("  expires", format_time(ckpt.expires_at)))
        for key, value in sorted((run.user_metadata or {}).items()):
            rows.append((f"Metadata: {key}", value))
        out.properties(rows, title=f"Training run {run.training_run_id}")

    state.output.emit(run, render)
