"""``tinkex checkpoint save``: create a LoRA model (or load one) and save its weights.

The Elixir CLI's ``tinkex checkpoint`` (spec/tinkex-features.md §8): start a session,
create a LoRA training client, save its weights for the sampler, and write
``{"base_model", "model_id", "weights_path", "saved_at", "response"}`` (to ``--output``
when given; the result document is the same).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from tinkex_cli._context import CLIState, format_option, pass_state
from tinkex_cli._errors import CLIError, ExitCode
from tinkex_cli._output import Output, to_json_data
from tinkex_cli._progress import resolve_waiting

__all__ = ["default_checkpoint_name", "save_command"]

_KINDS = ("sampler_weights", "weights")


def default_checkpoint_name(base_model: str) -> str:
    """``checkpoint-<base model>`` with ``/`` and ``:`` (and anything not ``[a-z0-9._-]``)
    turned into ``-``, lower-cased (the Elixir CLI's default)."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", base_model.lower()).strip("-")
    return f"checkpoint-{cleaned or 'model'}"


def _training_client(
    state: CLIState, base_model: str | None, model_path: str | None, lora: dict[str, Any]
) -> Any:
    service = state.service_client()
    if model_path is not None:
        from tinkex_cli._cmd_checkpoint import parse_tinker_path

        path = str(parse_tinker_path(model_path, param="--model-path"))
        return service.create_training_client_from_state(path)
    assert base_model is not None
    return service.create_lora_training_client(base_model, **lora)


@click.command("save")
@click.option("--base-model", default=None, metavar="NAME", help="Create a LoRA model of NAME.")
@click.option(
    "--model-path",
    default=None,
    metavar="TINKER_PATH",
    help="Load saved training state (tinker://<run>/weights/<name>) instead.",
)
@click.option("--name", default=None, help="Checkpoint name (default: checkpoint-<base model>).")
@click.option(
    "--kind",
    type=click.Choice(_KINDS),
    default="sampler_weights",
    show_default=True,
    help="sampler_weights (for sampling) or weights (training state, resumable).",
)
@click.option("--rank", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--seed", type=int, default=None, help="Seed of the LoRA initialisation.")
@click.option("--train-mlp/--no-train-mlp", default=True, show_default=True)
@click.option("--train-attn/--no-train-attn", default=True, show_default=True)
@click.option("--train-unembed/--no-train-unembed", default=True, show_default=True)
@click.option("--ttl", "ttl_seconds", type=click.IntRange(min=1), default=None, metavar="SECONDS")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the metadata JSON to this file.",
)
@format_option
@pass_state
def save_command(
    state: CLIState,
    base_model: str | None,
    model_path: str | None,
    name: str | None,
    kind: str,
    rank: int,
    seed: int | None,
    train_mlp: bool,
    train_attn: bool,
    train_unembed: bool,
    ttl_seconds: int | None,
    output: Path | None,
) -> None:
    """Save the weights of a new LoRA model (--base-model) or of loaded state (--model-path).

    \b
    tinkex --base-url local:// checkpoint save --base-model tinkex/tiny-llama-1m
    tinkex checkpoint save --base-model Qwen/Qwen3-8B --rank 16 --name start -o ckpt.json
    """
    if (base_model is None) == (model_path is None):
        raise click.UsageError("give exactly one of --base-model NAME or --model-path tinker://...")
    if not (train_mlp or train_attn or train_unembed):
        raise click.UsageError(
            "at least one of --train-mlp, --train-attn, --train-unembed must stay on"
        )
    lora = {
        "rank": rank,
        "seed": seed,
        "train_mlp": train_mlp,
        "train_attn": train_attn,
        "train_unembed": train_unembed,
    }
    training = _training_client(state, base_model, model_path, lora)
    model = base_model or _base_model_of(training)
    checkpoint = name or default_checkpoint_name(model)
    save = training.save_weights_for_sampler if kind == "sampler_weights" else training.save_state
    response = resolve_waiting(
        save(checkpoint, ttl_seconds=ttl_seconds), "Saving checkpoint", state.hooks
    )
    doc = {
        "base_model": model,
        "model_id": training.model_id,
        "weights_path": response.path,
        "saved_at": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "response": response,
    }
    if output is not None:
        _write(output, doc)

    def render(out: Output) -> None:
        out.line(f"Checkpoint saved to {response.path}")
        if output is not None:
            out.line(f"Metadata written to {output}")

    state.output.emit(doc, render)


def _base_model_of(training: Any) -> str:
    """The base model of a loaded training client (``get_base_model()``)."""
    getter = getattr(training, "get_base_model", None)
    name = getter() if callable(getter) else None
    return name if isinstance(name, str) and name else "model"


def _write(path: Path, doc: dict[str, Any]) -> None:
    text = json.dumps(to_json_data(doc), indent=2, ensure_ascii=False) + "\n"
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc.strerror}", ExitCode.USAGE) from None
