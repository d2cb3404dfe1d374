"""``tinkex checkpoint import-peft`` and ``tinkex checkpoint export-merged`` (tinkex servers).

* ``import-peft DIR``: an outside PEFT LoRA adapter directory becomes a new training run,
  saved at once as a checkpoint (training state by default); prints its ``tinker://`` path.
* ``export-merged PATH OUT_DIR``: the checkpoint merged into its base model, extracted as a
  Hugging Face model directory (``transformers.AutoModelForCausalLM.from_pretrained``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import click

from tinkex_cli._context import CLIState, format_option, pass_state
from tinkex_cli._progress import resolve_waiting

__all__ = ["PEFT_COMMANDS", "export_merged_command", "import_peft_command"]

_KINDS = ("weights", "sampler_weights")


def _default_name(directory: Path) -> str:
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", directory.resolve().name.lower()).strip("-.")
    return f"peft-{cleaned or 'adapter'}"[:60]


@click.command("import-peft")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--base-model",
    default=None,
    metavar="NAME",
    help="Base model (default: the adapter's base_model_name_or_path).",
)
@click.option("--name", default=None, help="Checkpoint name (default: peft-<directory name>).")
@click.option(
    "--kind",
    type=click.Choice(_KINDS),
    default="weights",
    show_default=True,
    help="weights (training state: resumable, exportable) or sampler_weights.",
)
@click.option("--seed", type=int, default=None, help="Seed of the run (data order etc.).")
@format_option
@pass_state
def import_peft_command(
    state: CLIState,
    directory: Path,
    base_model: str | None,
    name: str | None,
    kind: str,
    seed: int | None,
) -> None:
    """Import a PEFT LoRA adapter directory and save it as a tinkex checkpoint.

    DIRECTORY holds adapter_config.json and adapter_model.safetensors (peft's
    save_pretrained). Plain LoRA only: DoRA, rsLoRA, modules_to_save, per-module ranks...
    are refused naming the adapter_config.json key.

    \b
    tinkex --base-url local:// checkpoint import-peft ./my-adapter --base-model ./base
    """
    service = state.service_client()
    training = service.create_training_client_from_peft(directory, base_model=base_model, seed=seed)
    checkpoint = name or _default_name(directory)
    save = training.save_state if kind == "weights" else training.save_weights_for_sampler
    response = resolve_waiting(save(checkpoint), "Saving checkpoint", state.hooks)
    doc = {
        "source": str(directory),
        "model_id": training.model_id,
        "base_model": training.get_base_model(),
        "path": response.path,
    }
    state.output.emit(doc, lambda out: out.line(f"Imported {directory} as {response.path}"))


@click.command("export-merged")
@click.argument("path")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--base-model", default=None, metavar="NAME", help="Override the base model.")
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it exists.")
@format_option
@pass_state
def export_merged_command(
    state: CLIState, path: str, out_dir: Path, base_model: str | None, force: bool
) -> None:
    """Merge a checkpoint's LoRA into its base model as a Hugging Face model directory.

    OUT_DIR gets config.json, model.safetensors (float32) and the tokenizer files; it is
    checked against the server's manifest and never left half-written.

    \b
    tinkex checkpoint export-merged tinker://<run>/weights/<name> ./merged
    """
    from tinkex_cli._cmd_checkpoint import parse_tinker_path

    parsed = parse_tinker_path(path)
    rest = state.rest_client()
    future = rest.export_merged(str(parsed), out_dir, base_model=base_model, force=force)
    destination = Path(os.fspath(resolve_waiting(future, "Exporting merged model", state.hooks)))
    files = sorted(p.name for p in destination.iterdir()) if destination.is_dir() else []
    doc = {"path": str(parsed), "destination": str(destination), "files": files}
    state.output.emit(doc, lambda out: out.line(f"Exported {parsed} merged to {destination}"))


#: The commands added to ``tinkex checkpoint``.
PEFT_COMMANDS = (import_peft_command, export_merged_command)
