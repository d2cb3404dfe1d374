"""Bringing a training run back into the engine after a restart (or an unload of its
adapter), and noticing what a restart lost.

A model's weights and optimizer state are rebuilt lazily, at its next request, from its
newest saved training-state checkpoint, or from its seeded initialisation if it has none.
If stateful steps (``forward_backward``, ``optim_step``, ``load_weights``) were applied
after that point they are gone: the model is then marked ``corrupted`` and every request on
it fails naming the lost ``seq_id`` range, until a ``load_weights`` replaces the state.

The LoRA settings of a run are stored once, at ``create_model``, by :func:`lora_settings`;
:func:`engine_lora` is the one place they become the engine's ``LoraConfig``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tinkex_server._checkpoints import CheckpointFiles
from tinkex_server._store import AppliedStep, CheckpointRow, Store
from tinkex_types import LoraConfig, TinkexValidationError

if TYPE_CHECKING:
    from tinkex_server._engine import Engine
    from tinkex_server._engine import LoraConfig as EngineLora

__all__ = ["ModelRestorer", "engine_lora", "lora_settings"]

_log = logging.getLogger("tinkex_server")

#: Operations whose effect lives only in the engine's memory (lost on a restart unless a
#: later training checkpoint holds it).
_STATEFUL = frozenset({"ForwardBackward", "OptimStep", "LoadWeights"})


def lora_settings(lc: LoraConfig) -> dict[str, Any]:
    """The stored LoRA settings of a new run (the engine adds the concrete seed and alpha)."""
    return {
        "rank": lc.rank,
        "seed": lc.seed,
        "train_attn": lc.train_attn,
        "train_mlp": lc.train_mlp,
        "train_unembed": lc.train_unembed,
    }


def engine_lora(settings: Mapping[str, Any]) -> EngineLora:
    """The engine's ``LoraConfig`` of stored settings (see :func:`lora_settings`)."""
    from tinkex_server._engine import LoraConfig as EngineLora

    return EngineLora(
        rank=int(settings["rank"]),
        seed=settings.get("seed"),
        train_attn=bool(settings.get("train_attn", True)),
        train_mlp=bool(settings.get("train_mlp", True)),
        train_unembed=bool(settings.get("train_unembed", True)),
        alpha=settings.get("alpha"),
        target_modules=tuple(targets) if (targets := settings.get("target_modules")) else None,
    )


def _lost_message(model_id: str, steps: list[AppliedStep], start: int, kept: str) -> str | None:
    lost = [s for s in steps[start:] if s.request_type in _STATEFUL]
    if not lost:
        return None
    seqs = [s.seq_id for s in lost if s.seq_id is not None]
    kinds = ", ".join(sorted({s.request_type for s in lost}))
    span = f"seq_id {seqs[0]}..{seqs[-1]}" if seqs else "steps"
    durable = [s.seq_id for s in steps[:start] if s.seq_id is not None]
    last = (
        f"its state is back to what it was after seq_id {durable[-1]}"
        if durable
        else "its state is back to its seeded initialisation"
    )
    return (
        f"model {model_id!r} lost {len(lost)} step(s) when the server restarted: "
        f"{span} ({kinds}) were applied after {kept}, and only training checkpoints "
        f"survive a restart; {last}"
    )


class ModelRestorer:
    """Rebuilds a run's adapter in the engine from the store (engine thread)."""

    def __init__(self, store: Store, files: CheckpointFiles) -> None:
        self.store = store
        self.files = files

    def lost_state(self, model_id: str, ckpt: CheckpointRow | None) -> str | None:
        """Why rebuilding ``model_id`` from ``ckpt`` (its newest training checkpoint, or its
        seeded initialisation when ``None``) would not give its state back: the stateful
        steps applied after that point. ``None`` when nothing was lost."""
        steps = [s for s in self.store.applied_steps(model_id) if s.outcome == "ok"]
        start = 0
        kept = "its seeded initialisation (it has no training checkpoint)"
        if ckpt is not None:
            # The save that wrote ckpt committed in the transaction that stamped created_at.
            start = next(
                (i for i, s in enumerate(steps) if s.applied_at >= ckpt.created_at), len(steps)
            )
            kept = f"its newest training checkpoint {ckpt.tinker_path}"
            if start < len(steps) and steps[start].request_type == "SaveWeights":
                if steps[start].seq_id is not None:
                    kept += f" (saved by seq_id {steps[start].seq_id})"
                start += 1
        return _lost_message(model_id, steps, start, kept)

    def ensure(self, engine: Engine, model_id: str, *, allow_lost: bool = False) -> bool:
        """Make sure the engine holds ``model_id``; rebuild it from the store if not.

        A model whose stateful steps after its newest training checkpoint were lost (a
        restart) is refused (and marked corrupted) unless ``allow_lost`` (``load_weights``,
        which replaces the state); returns whether such a model was rebuilt.
        """
        if engine.has_adapter(model_id):
            return False
        from tinkex_server._engine import UnknownModelError

        row = self.store.get_model(model_id)
        if row is None:
            raise UnknownModelError("model_id", f"unknown model {model_id!r}")
        if row.status == "failed":
            raise TinkexValidationError(
                "model_id", f"model {model_id!r} could not be created: {row.error}"
            )
        if row.status == "unloaded":
            raise TinkexValidationError("model_id", f"model {model_id!r} was unloaded")
        ckpt = self.store.latest_checkpoint(model_id, "weights")
        lost = self.lost_state(model_id, ckpt)
        if lost is not None and not allow_lost:
            self.store.set_corrupted(model_id, True)
            raise TinkexValidationError(
                "model_id",
                lost,
                "load a checkpoint into this model (load_state / load_state_with_optimizer) "
                "or create a training client from one, then repeat the steps after it",
            )
        peft_dir = row.lora_config.get("peft_dir")
        if ckpt is None and peft_dir:  # imported from PEFT: its files are the initial state
            engine.import_peft_adapter(
                model_id,
                self.files.absolute(str(peft_dir)),
                base_model=row.base_model,
                seed=row.lora_config.get("seed"),
            )
            return lost is not None
        engine.create_adapter(model_id, row.base_model, engine_lora(row.lora_config))
        if ckpt is not None:
            directory = self.files.absolute(ckpt.directory)
            try:
                info = engine.read_state_info(directory)
                engine.load_state(model_id, directory, with_optimizer=info.has_optimizer)
            except Exception:
                engine.remove_adapter(model_id)
                raise
            _log.info("model %s restored from checkpoint %s", model_id, ckpt.tinker_path)
        return lost is not None
