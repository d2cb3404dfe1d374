"""The torch engine behind tinkex-server: base models, multi-LoRA training and sampling.

One :class:`Engine` holds any number of frozen base models (loaded on first use, shared) and
any number of adapters keyed by model id. Every public method takes a lock, so calling it from
several threads is safe (calls are serialised); the server drives it from one worker thread.

Conventions (protocol.md §3):

* ``forward``/``forward_backward`` return per-datum ``logprobs`` (float32, the shape of
  ``target_tokens``; position i scores ``target_tokens[i]`` given ``tokens[:i+1]``) and
  ``elementwise_loss``, plus ``metrics["loss:sum"]``. Losses are sums over tokens and datums,
  never means; weights may be any real numbers.
* ``forward_backward`` adds gradients into the adapter; ``optim_step`` applies AdamW and
  clears them. ``forward`` never touches gradients or optimizer state.
* Every user mistake raises :class:`EngineInputError` (a ``TinkexValidationError`` naming
  field, problem and fix); unknown ids raise :class:`UnknownModelError`. A failed call changes
  nothing (inputs are validated before any gradient is accumulated).
* Losses are looked up by name: names, required/optional ``loss_fn_inputs`` and config
  defaults come from the loss table :data:`tinkex_types.LOSSES`, the per-token formulas
  from :data:`tinkex_server._engine.losses.LOSS_IMPLEMENTATIONS`.
* Deterministic: adapter initialisation is seeded, sampling uses per-row generators, and
  the same calls give bit-identical results on CPU with a fixed thread count.
"""

from __future__ import annotations

from tinkex_server._engine.adapters import DEFAULT_LORA_ALPHA
from tinkex_server._engine.checkpoints import CheckpointMixin
from tinkex_server._engine.custom_loss import CustomLossMixin
from tinkex_server._engine.sampler import SamplingMixin
from tinkex_server._engine.training import TrainingMixin

__all__ = ["DEFAULT_LORA_ALPHA", "Engine"]


class Engine(TrainingMixin, CustomLossMixin, SamplingMixin, CheckpointMixin):
    """Multi-LoRA training and sampling over shared frozen base models.

    Parameters:
        lora_alpha: LoRA alpha for adapters created without one (scale = alpha / rank).
        seed: seeds the engine's own RNG, used only to draw LoRA seeds and sampling seeds
            that callers leave out; ``None`` draws it from the OS.
        max_microbatch_tokens: padded tokens per forward chunk in training (memory bound;
            results are sums, so chunking does not change them beyond float rounding).
        max_sample_rows: rows (prompts x samples) decoded together in one batch.

    The parts, by responsibility: base models and the adapter registry
    (:class:`~tinkex_server._engine.adapters.EngineCore`), the training step
    (:class:`~tinkex_server._engine.training.TrainingMixin`), sampling
    (:class:`~tinkex_server._engine.sampler.SamplingMixin`) and checkpoint IO
    (:class:`~tinkex_server._engine.checkpoints.CheckpointMixin`).
    """
