"""``tinkex checkpoint save|list|info|publish|unpublish|delete|prune|download|set-ttl``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from tinkex_cli._context import CLIState, format_option, pass_state
from tinkex_cli._errors import CLIError, ExitCode, classify
from tinkex_cli._output import Output, format_bool, format_size, format_time, to_json_data
from tinkex_cli._paging import fetch_pages, offset_option, paged_limit_option, resolve
from tinkex_cli._progress import progress_wanted
from tinkex_types import Checkpoint, TinkerPath

__all__ = ["checkpoint_group", "parse_tinker_path"]

#: Page size of ``list_user_checkpoints`` calls.
CHECKPOINT_PAGE_SIZE = 1000
_COLUMNS = ["Checkpoint ID", "Type", "Size", "Public", "Created", "Expires", "Path"]


def parse_tinker_path(value: str, *, param: str = "PATH") -> TinkerPath:
    """Parse a ``tinker://`` path or fail with a usage error (exit code 2)."""
    try:
        return TinkerPath.parse(value)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(
            f"{exc} (expected tinker://<training_run_id>/<weights|sampler_weights>/<name>)",
            param_hint=param,
        ) from None


def _row(ckpt: Checkpoint) -> list[str]:
    return [
        ckpt.checkpoint_id,
        ckpt.checkpoint_type,
        format_size(ckpt.size_bytes),
        format_bool(ckpt.public),
        format_time(ckpt.time),
        format_time(ckpt.expires_at) if ckpt.expires_at else "Never",
        ckpt.tinker_path,
    ]


def find_checkpoint(state: CLIState, path: TinkerPath) -> Checkpoint:
    """The checkpoint whose ``tinker_path`` is ``path`` (exit code 4 if there is none)."""
    rest = state.rest_client()
    response = resolve(rest.list_checkpoints(path.training_run_id))
    checkpoints: list[Checkpoint] = list(response.checkpoints)
    for ckpt in checkpoints:
        if ckpt.tinker_path == str(path):
            return ckpt
    raise CLIError(
        f"not found: no checkpoint {path} in run {path.training_run_id}", ExitCode.NOT_FOUND
    )


@click.group("checkpoint")
def checkpoint_group() -> None:
    """Save, list, inspect, publish, download, delete and prune checkpoints (tinker://)."""


# -- list -------------------------------------------------------------------------------


@checkpoint_group.command("list")
@click.option("--run-id", default=None, metavar="RUN", help="Only the checkpoints of this run.")
@paged_limit_option
@offset_option
@format_option
@pass_state
def list_command(state: CLIState, run_id: str | None, limit: int | None, offset: int) -> None:
    """List your checkpoints, newest first (or those of one training run)."""
    want = state.effective_limit(limit)
    rest = state.rest_client()
    if run_id is not None:
        response = resolve(rest.list_checkpoints(run_id))
        everything = list(response.checkpoints)
        total = len(everything)
        end = None if want == 0 else offset + want
        checkpoints = everything[offset:end]
    else:

        def page(limit: int, offset: int) -> tuple[list[Checkpoint], int | None]:
            result = resolve(rest.list_user_checkpoints(limit=limit, offset=offset))
            cursor = result.cursor
            return list(result.checkpoints), (cursor.total_count if cursor else None)

        checkpoints, total = fetch_pages(
            page, want=want, offset=offset, page_size=CHECKPOINT_PAGE_SIZE, what="checkpoints"
        )
    doc = {
        "checkpoints": checkpoints,
        "run_id": run_id,
        "total": total,
        "shown": len(checkpoints),
        "offset": offset,
        "limit": want,
    }

    def render(out: Output) -> None:
        if not checkpoints:
            where = f" in run {run_id}" if run_id else ""
            out.line(f"No checkpoints found{where}.")
            return
        what = f"Checkpoints of run {run_id}" if run_id else "Checkpoints"
        out.table(
            _COLUMNS,
            [_row(c) for c in checkpoints],
            title=f"{what} ({len(checkpoints)} of {total})",
        )
        hidden = total - offset - len(checkpoints)
        if hidden > 0:
            out.line(f"{hidden} more not shown; use --limit 0 to show all, or --offset.")

    state.output.emit(doc, render)


# -- info -------------------------------------------------------------------------------


@checkpoint_group.command("info")
@click.argument("path")
@format_option
@pass_state
def info_command(state: CLIState, path: str) -> None:
    """Show one checkpoint and the LoRA configuration of its weights."""
    parsed = parse_tinker_path(path)
    ckpt = find_checkpoint(state, parsed)
    weights = resolve(state.rest_client().get_weights_info_by_tinker_path(str(parsed)))
    doc: dict[str, Any] = dict(to_json_data(ckpt))
    doc.update(to_json_data(weights))

    def render(out: Output) -> None:
        rows: list[tuple[str, Any]] = [
            ("Checkpoint ID", ckpt.checkpoint_id),
            ("Training run ID", ckpt.training_run_id),
            ("Type", ckpt.checkpoint_type),
            ("Path", ckpt.tinker_path),
            ("Size", format_size(ckpt.size_bytes)),
            ("Public", format_bool(ckpt.public)),
            ("Created", format_time(ckpt.time)),
            ("Expires", format_time(ckpt.expires_at) if ckpt.expires_at else "Never"),
            ("Base model", weights.base_model),
            ("LoRA", f"Yes (rank {weights.lora_rank})" if weights.is_lora else "No"),
        ]
        for label, flag in (
            ("Train attention", weights.train_attn),
            ("Train MLP", weights.train_mlp),
            ("Train unembed", weights.train_unembed),
        ):
            if flag is not None:
                rows.append((label, format_bool(flag)))
        out.properties(rows, title=f"Checkpoint {ckpt.tinker_path}")

    state.output.emit(doc, render)


# -- publish / unpublish --------------------------------------------------------------


def _visibility(state: CLIState, path: str, public: bool) -> None:
    parsed = parse_tinker_path(path)
    rest = state.rest_client()
    if public:
        resolve(rest.publish_checkpoint_from_tinker_path(str(parsed)))
    else:
        resolve(rest.unpublish_checkpoint_from_tinker_path(str(parsed)))
    action = "publish" if public else "unpublish"
    doc = {"action": action, "path": str(parsed), "public": public}
    state.output.emit(
        doc, lambda out: out.line(f"{'Published' if public else 'Unpublished'} {parsed}")
    )


@checkpoint_group.command("publish")
@click.argument("path")
@format_option
@pass_state
def publish_command(state: CLIState, path: str) -> None:
    """Make a checkpoint public (others can sample from it and download it)."""
    _visibility(state, path, True)


@checkpoint_group.command("unpublish")
@click.argument("path")
@format_option
@pass_state
def unpublish_command(state: CLIState, path: str) -> None:
    """Make a public checkpoint private again."""
    _visibility(state, path, False)


# -- set-ttl ----------------------------------------------------------------------------


@checkpoint_group.command("set-ttl")
@click.argument("path")
@click.option(
    "--ttl",
    "ttl_seconds",
    type=click.IntRange(min=1),
    default=None,
    metavar="SECONDS",
    help="Expire the checkpoint SECONDS from now.",
)
@click.option("--remove", is_flag=True, help="Remove the expiration (keep it forever).")
@format_option
@pass_state
def set_ttl_command(state: CLIState, path: str, ttl_seconds: int | None, remove: bool) -> None:
    """Set (--ttl SECONDS) or remove (--remove) a checkpoint's expiration."""
    if (ttl_seconds is None) == (not remove):
        raise click.UsageError("give exactly one of --ttl SECONDS or --remove")
    parsed = parse_tinker_path(path)
    resolve(state.rest_client().set_checkpoint_ttl_from_tinker_path(str(parsed), ttl_seconds))
    doc = {"action": "set_ttl", "path": str(parsed), "ttl_seconds": ttl_seconds, "remove": remove}

    def render(out: Output) -> None:
        if remove:
            out.line(f"Removed the expiration of {parsed}")
        else:
            out.line(f"{parsed} now expires in {ttl_seconds} seconds")

    state.output.emit(doc, render)


# -- delete -----------------------------------------------------------------------------


@checkpoint_group.command("delete")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@format_option
@pass_state
def delete_command(state: CLIState, paths: tuple[str, ...], yes: bool) -> None:
    """Delete one or more checkpoints (asks first unless --yes).

    Every path is checked before anything is deleted. Exits non-zero if any deletion failed.
    """
    parsed = [parse_tinker_path(p, param=f"PATH {p!r}") for p in paths]
    unique = list(dict.fromkeys(str(p) for p in parsed))
    out = state.output
    doc: dict[str, Any] = {
        "action": "delete",
        "paths": unique,
        "deleted": [],
        "failed": [],
        "cancelled": False,
    }
    if not yes:
        listing = "\n".join(f"  {p}" for p in unique)
        noun = "checkpoint" if len(unique) == 1 else "checkpoints"
        click.echo(f"About to delete {len(unique)} {noun}:\n{listing}", err=True)
        if not click.confirm("Proceed?", default=False, err=True):
            doc["cancelled"] = True
            out.emit(doc, lambda o: o.line("Cancelled; nothing was deleted."))
            return
    rest = state.rest_client()
    codes: set[int] = set()
    for i, path in enumerate(unique, 1):
        if len(unique) > 1:
            out.info(f"Deleting {i}/{len(unique)}: {path}")
        try:
            resolve(rest.delete_checkpoint_from_tinker_path(path))
        except Exception as exc:
            code, message = classify(exc)
            codes.add(code)
            doc["failed"].append(
                {"path": path, "error": state.redactor(message), "exit_code": code}
            )
        else:
            doc["deleted"].append(path)

    def render(o: Output) -> None:
        for p in doc["deleted"]:
            o.line(f"Deleted {p}")
        for f in doc["failed"]:
            o.line(f"Failed {f['path']}: {f['error']}")

    out.emit(doc, render)
    if doc["failed"]:
        code = codes.pop() if len(codes) == 1 else ExitCode.ERROR
        n = len(doc["failed"])
        if n == 1 and len(unique) == 1:
            raise CLIError(doc["failed"][0]["error"], code)
        raise CLIError(f"{n} of {len(unique)} checkpoints could not be deleted", code)


# -- download ---------------------------------------------------------------------------


@checkpoint_group.command("download")
@click.argument("path")
@click.option(
    "-o",
    "--output",
    "output_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory to put the checkpoint directory in.",
)
@click.option("--force", is_flag=True, help="Replace the destination if it exists.")
@click.option("--no-progress", is_flag=True, help="Do not show the progress bar.")
@format_option
@pass_state
def download_command(
    state: CLIState, path: str, output_dir: Path, force: bool, no_progress: bool
) -> None:
    """Download a checkpoint archive and extract it safely.

    The files land in OUTPUT/<run>_<kind>_<name>/ (adapter_config.json,
    adapter_model.safetensors, ...). Archive members with absolute paths, '..' or links
    leaving the destination are refused, and nothing is left half-written.
    """
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    parsed = parse_tinker_path(path)
    out = state.output
    rest = state.rest_client()
    progress = Progress(
        TextColumn("Downloading"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=out.stderr_console(),
        disable=not progress_wanted(no_progress),  # only on a terminal, only on stderr
        transient=False,
    )
    received = {"bytes": 0}
    with progress:
        task = progress.add_task("download", total=None)

        def on_progress(done: int, total: int | None) -> None:
            received["bytes"] = done
            progress.update(task, completed=done, total=total)

        destination = resolve(
            rest.download_checkpoint(str(parsed), output_dir, progress=on_progress, force=force)
        )
    destination = Path(os.fspath(destination))
    files = sorted(p.name for p in destination.iterdir()) if destination.is_dir() else []
    doc = {
        "path": str(parsed),
        "destination": str(destination),
        "size_bytes": received["bytes"],
        "files": files,
    }
    out.emit(doc, lambda o: o.line(f"Downloaded {parsed} to {destination}"))


def _register_more() -> None:
    from tinkex_cli._cmd_checkpoint_prune import prune_command
    from tinkex_cli._cmd_checkpoint_save import save_command

    checkpoint_group.add_command(save_command)
    checkpoint_group.add_command(prune_command)


_register_more()
