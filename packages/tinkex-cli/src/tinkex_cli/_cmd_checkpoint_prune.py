"""``tinkex checkpoint prune``: delete the checkpoints a retention policy does not keep.

The policy is tinkex-clients' :class:`~tinkex_clients.RetentionPolicy` (``--keep-last``,
``--keep-every``, ``--older-than``); ``--run``/``--kind``/``--name`` choose which checkpoints
it looks at. Published checkpoints are kept unless ``--include-published``; runs other than
the ``--run`` ones are never looked at (``--all-runs`` looks at all of them). The newest
checkpoint of each run and kind is always kept. ``--dry-run`` shows the plan and deletes
nothing; otherwise the command asks first unless ``--yes``.
"""

from __future__ import annotations

import fnmatch
import re
from datetime import timedelta
from typing import Any

import click

from tinkex_cli._context import CLIState, format_option, pass_state
from tinkex_cli._errors import CLIError, ExitCode, classify
from tinkex_cli._output import Output, format_bool, format_time
from tinkex_cli._paging import fetch_pages, resolve
from tinkex_types import Checkpoint, TinkexValidationError

__all__ = ["parse_duration", "prune_command"]

_PAGE = 1000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_COLUMNS = ["Path", "Type", "Created", "Public", "Decision"]


def parse_duration(value: str) -> timedelta:
    """``90``, ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` or a sum like ``1d12h``."""
    text = value.strip().lower()
    parts = _PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise click.BadParameter(
            f"{value!r} is not a duration (use e.g. 90s, 30m, 12h, 7d, 2w or 1d12h)",
            param_hint="--older-than",
        )
    return timedelta(seconds=sum(float(n) * _UNITS[u or "s"] for n, u in parts))


def _list(state: CLIState, runs: tuple[str, ...]) -> list[Checkpoint]:
    rest = state.rest_client()
    if runs:
        found: list[Checkpoint] = []
        for run in dict.fromkeys(runs):
            found.extend(resolve(rest.list_checkpoints(run)).checkpoints)
        return found

    def page(limit: int, offset: int) -> tuple[list[Checkpoint], int | None]:
        result = resolve(rest.list_user_checkpoints(limit=limit, offset=offset))
        cursor = result.cursor
        return list(result.checkpoints), (cursor.total_count if cursor else None)

    everything, _ = fetch_pages(page, want=0, offset=0, page_size=_PAGE, what="checkpoints")
    return list(everything)


def _name(ckpt: Checkpoint) -> str:
    return ckpt.checkpoint_id.split("/", 1)[-1]


def _policy(
    keep_last: int | None,
    keep_every: int | None,
    older_than: timedelta | None,
    kinds: tuple[str, ...],
    include_published: bool,
) -> Any:
    from tinkex_clients import RetentionPolicy

    if keep_last is None and keep_every is None and older_than is None:
        raise click.UsageError(
            "give at least one rule: --keep-last N, --keep-every K and/or --older-than AGE"
        )
    try:
        return RetentionPolicy(
            keep_last=keep_last,
            keep_every=keep_every,
            max_age=older_than,
            kinds=kinds or ("training", "sampler"),
            include_published=include_published,
            include_other_runs=True,
        )
    except TinkexValidationError as exc:
        raise click.UsageError(str(exc)) from None


def _delete(state: CLIState, doomed: list[Checkpoint], doc: dict[str, Any]) -> set[int]:
    rest = state.rest_client()
    codes: set[int] = set()
    for i, ckpt in enumerate(doomed, 1):
        if len(doomed) > 1:
            state.output.info(f"Deleting {i}/{len(doomed)}: {ckpt.tinker_path}")
        try:
            resolve(rest.delete_checkpoint(ckpt.training_run_id or "", ckpt.checkpoint_id))
        except Exception as exc:
            code, message = classify(exc)
            codes.add(code)
            doc["failed"].append(
                {"path": ckpt.tinker_path, "error": state.redactor(message), "exit_code": code}
            )
        else:
            doc["deleted"].append(ckpt.tinker_path)
    return codes


def _render(doc: dict[str, Any], plan: Any) -> Any:
    def render(out: Output) -> None:
        rows = doc["checkpoints"]
        if not rows:
            out.line("No checkpoints match; nothing to prune.")
            return
        failed = {f["path"]: f["error"] for f in doc["failed"]}
        table = []
        for decision in plan.decisions:
            ckpt, path = decision.checkpoint, decision.checkpoint.tinker_path
            if not decision.delete:
                what = f"keep ({decision.reason})"
            elif path in failed:
                what = f"failed: {failed[path]}"
            elif path in doc["deleted"]:
                what = "deleted"
            else:
                what = "would delete" if doc["dry_run"] or doc["cancelled"] else "delete"
            table.append(
                [path, ckpt.checkpoint_type, format_time(ckpt.time), format_bool(ckpt.public), what]
            )
        n = len(doc["to_delete"])
        verb = "would delete" if doc["dry_run"] else "to delete"
        out.table(_COLUMNS, table, title=f"Prune: {n} {verb}, {len(rows) - n} kept")
        if doc["dry_run"]:
            out.line("Dry run: nothing was deleted.")
        elif doc["cancelled"]:
            out.line("Cancelled; nothing was deleted.")

    return render


def _confirm(doomed: list[Checkpoint]) -> bool:
    listing = "\n".join(f"  {c.tinker_path}" for c in doomed)
    noun = "checkpoint" if len(doomed) == 1 else "checkpoints"
    click.echo(f"About to delete {len(doomed)} {noun}:\n{listing}", err=True)
    return click.confirm("Proceed?", default=False, err=True)


@click.command("prune")
@click.option("--run", "runs", multiple=True, metavar="RUN", help="Prune this run (repeatable).")
@click.option("--all-runs", is_flag=True, help="Prune every run of yours (instead of --run).")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(["training", "sampler"]),
    help="Only checkpoints of this type (repeatable; default both).",
)
@click.option("--name", "pattern", default=None, metavar="GLOB", help="Only names matching GLOB.")
@click.option("--keep-last", type=click.IntRange(min=1), default=None, metavar="N")
@click.option("--keep-every", type=click.IntRange(min=1), default=None, metavar="K")
@click.option("--older-than", default=None, metavar="AGE", help="e.g. 12h, 7d, 1d12h.")
@click.option("--include-published", is_flag=True, help="Published checkpoints may go too.")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; delete nothing.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@format_option
@pass_state
def prune_command(
    state: CLIState,
    runs: tuple[str, ...],
    all_runs: bool,
    kinds: tuple[str, ...],
    pattern: str | None,
    keep_last: int | None,
    keep_every: int | None,
    older_than: str | None,
    include_published: bool,
    dry_run: bool,
    yes: bool,
) -> None:
    """Delete the checkpoints a retention policy does not keep.

    Per run and type, oldest first: the newest is always kept, --keep-last N keeps the N
    newest, --keep-every K the K-th, 2K-th, ... (counting the listed ones, oldest = 1: a
    second prune counts again); the rest goes, with --older-than only once older than AGE.
    Published checkpoints stay unless --include-published. Give --run RUN (repeatable) or
    --all-runs.
    """
    from tinkex_clients import plan_retention

    if bool(runs) == all_runs:
        raise click.UsageError("give --run RUN (repeatable) or --all-runs, not both")
    age = None if older_than is None else parse_duration(older_than)
    policy = _policy(keep_last, keep_every, age, kinds, include_published)
    listed = [
        c for c in _list(state, runs) if pattern is None or fnmatch.fnmatchcase(_name(c), pattern)
    ]
    plan = plan_retention(listed, policy)
    doomed = plan.to_delete
    doc: dict[str, Any] = {
        "action": "prune",
        "dry_run": dry_run,
        "policy": policy.describe(),
        "runs": list(runs) if runs else None,
        "name": pattern,
        "checkpoints": [
            {
                "path": d.checkpoint.tinker_path,
                "type": d.checkpoint.checkpoint_type,
                "created": d.checkpoint.time.isoformat(),
                "public": d.checkpoint.public,
                "action": "delete" if d.delete else "keep",
                "reason": d.reason,
            }
            for d in plan.decisions
        ],
        "to_delete": [c.tinker_path for c in doomed],
        "deleted": [],
        "failed": [],
        "cancelled": False,
    }
    codes: set[int] = set()
    if doomed and not dry_run:
        if not yes and not _confirm(doomed):
            doc["cancelled"] = True
        else:
            codes = _delete(state, doomed, doc)
    state.output.emit(doc, _render(doc, plan))
    if doc["failed"]:
        code = codes.pop() if len(codes) == 1 else ExitCode.ERROR
        raise CLIError(
            f"{len(doc['failed'])} of {len(doomed)} checkpoints could not be deleted", code
        )
