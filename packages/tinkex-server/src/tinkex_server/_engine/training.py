"""The training step: forward, forward_backward (losses from the loss table) and AdamW."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from tinkex_server._engine.adapters import EngineCore, Slot, attr
from tinkex_server._engine.fused import target_logprobs
from tinkex_server._engine.inputs import Prepared, flat, microbatches, prepare_data
from tinkex_server._engine.lora import SingleLora
from tinkex_server._engine.losses import elementwise_loss, engine_loss_config, engine_loss_spec
from tinkex_server._engine.model import DecoderLM
from tinkex_server._engine.optim import AdamParams
from tinkex_server._engine.types import Datum, FlatTensor, ForwardResult

__all__ = ["TrainingMixin"]

_ADAM_FIELDS = ("learning_rate", "beta1", "beta2", "eps", "weight_decay", "grad_clip_norm")


def _batch_logprobs(
    model: DecoderLM, lora: SingleLora, hidden: Tensor, mb: list[Prepared], loss_fn: str
) -> list[Tensor]:
    """Logprobs of every datum's targets from the chunk's hidden states ``[rows, seq, d]``.

    Without an ``lm_head`` adapter every datum's rows go through :func:`target_logprobs` in
    one call (the unembedding is read once per chunk of rows, not once per datum)."""
    shapes = {it.targets.shape[1:] for it in mb}
    if "lm_head" in lora.adapter.params or len(shapes) != 1:
        return [
            _plain_logprobs(model, lora, hidden[r, : it.tokens.shape[0]], it)
            for r, it in enumerate(mb)
        ]
    rows = torch.cat([hidden[r, : it.tokens.shape[0]] for r, it in enumerate(mb)])
    targets = torch.cat([it.targets for it in mb])
    grad_rows = None
    if loss_fn == "cross_entropy" and rows.requires_grad:
        # Cross-entropy gives no gradient to a weight-0 token: skip its softmax term.
        weights = torch.cat([it.inputs["weights"] for it in mb])
        grad_rows = (weights != 0) if weights.ndim == 1 else (weights != 0).any(-1)
    lp = target_logprobs(rows, model.unembedding, targets, grad_rows)
    return list(lp.split_with_sizes([it.tokens.shape[0] for it in mb]))


def _plain_logprobs(model: DecoderLM, lora: SingleLora, hidden: Tensor, it: Prepared) -> Tensor:
    logits = model.logits(hidden, lora)  # [n, vocab]
    lse = torch.logsumexp(logits, dim=-1)
    idx = it.targets if it.targets.ndim == 2 else it.targets[:, None]
    lp = logits.gather(-1, idx) - lse[:, None]
    return lp[:, 0] if it.targets.ndim == 1 else lp


class TrainingMixin(EngineCore):
    """``forward``, ``forward_backward`` and ``optim_step`` of the engine."""

    def _microbatch_loss(
        self,
        slot: Slot,
        mb: list[Prepared],
        loss_fn: str,
        config: Mapping[str, float],
        outputs: list[dict[str, FlatTensor]],
    ) -> tuple[Tensor | None, float]:
        """Run one padded chunk; fill ``outputs`` and return (its loss, its float sum)."""
        model = slot.base.module
        lora = slot.adapter.context()
        width = max(it.tokens.shape[0] for it in mb)
        tokens = torch.zeros(len(mb), width, dtype=torch.long)
        for row, it in enumerate(mb):
            tokens[row, : it.tokens.shape[0]] = it.tokens
        hidden = model.hidden_states(tokens, lora=lora)
        mb_loss: Tensor | None = None
        total = 0.0
        logprobs = _batch_logprobs(model, lora, hidden, mb, loss_fn)
        for it, lp in zip(mb, logprobs, strict=True):
            el = elementwise_loss(loss_fn, lp, it.inputs, config)
            s = el.sum()
            mb_loss = s if mb_loss is None else mb_loss + s
            outputs[it.index] = {
                "logprobs": flat(lp.detach()),
                "elementwise_loss": flat(el.detach()),
            }
            total += float(s.detach().to(torch.float64))
        return mb_loss, total

    def _run(
        self,
        slot: Slot,
        data: Sequence[Datum | Any],
        loss_fn: str,
        loss_fn_config: Mapping[str, Any] | None,
        backward: bool,
    ) -> ForwardResult:
        # Everything is validated before any gradient is accumulated.
        config = engine_loss_config(loss_fn, loss_fn_config)
        items = prepare_data(slot.base, data, engine_loss_spec(loss_fn))
        outputs: list[dict[str, FlatTensor]] = [{} for _ in items]
        total = 0.0
        for mb in microbatches(items, self.max_microbatch_tokens):
            with torch.set_grad_enabled(backward):
                mb_loss, mb_total = self._microbatch_loss(slot, mb, loss_fn, config, outputs)
                total += mb_total
                if backward and mb_loss is not None and mb_loss.requires_grad:
                    torch.autograd.backward([mb_loss])
        return ForwardResult(loss_fn_outputs=outputs, metrics={"loss:sum": total})

    def forward(
        self,
        model_id: str,
        data: Sequence[Datum | Any],
        loss_fn: str = "cross_entropy",
        loss_fn_config: Mapping[str, Any] | None = None,
    ) -> ForwardResult:
        """Logprobs and loss of ``data`` under the current adapter; no gradient, no state
        change."""
        with self._lock:
            slot = self._slot(model_id)
            return self._run(slot, data, loss_fn, loss_fn_config, backward=False)

    def forward_backward(
        self,
        model_id: str,
        data: Sequence[Datum | Any],
        loss_fn: str = "cross_entropy",
        loss_fn_config: Mapping[str, Any] | None = None,
    ) -> ForwardResult:
        """Like :meth:`forward`, and add the gradient of ``loss:sum`` into the adapter."""
        with self._lock:
            slot = self._training_slot(model_id, "create a training model, or load_state into one")
            return self._run(slot, data, loss_fn, loss_fn_config, backward=True)

    def optim_step(self, model_id: str, adam_params: AdamParams | Any = None) -> dict[str, float]:
        """One AdamW update of the adapter with the accumulated gradients, then clear them.

        ``adam_params``: an :class:`AdamParams`, the wire model or a mapping with keys
        ``learning_rate``, ``beta1``, ``beta2``, ``eps``, ``weight_decay``,
        ``grad_clip_norm`` (missing ones take Tinker's defaults). Returns metrics
        ``grad_norm:mean``, ``learning_rate:mean``, ``step:max``.
        """
        with self._lock:
            slot = self._training_slot(model_id)
            defaults = AdamParams()
            hp = AdamParams(
                **{name: attr(adam_params, name, getattr(defaults, name)) for name in _ADAM_FIELDS}
            )
            hp.validate()
            assert slot.optimizer is not None
            return slot.optimizer.step(hp)
