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
from tinkex_server._engine.losses import (
    elementwise_loss,
    engine_loss_config,
    engine_loss_spec,
    loss_is_elementwise,
)
from tinkex_server._engine.model import DecoderLM
from tinkex_server._engine.optim import AdamParams
from tinkex_server._engine.types import Datum, FlatTensor, ForwardResult

__all__ = ["TrainingMixin"]

_ADAM_FIELDS = ("learning_rate", "beta1", "beta2", "eps", "weight_decay", "grad_clip_norm")


def _batch_logprobs(
    model: DecoderLM, lora: SingleLora, hidden: Tensor, mb: list[Prepared], loss_fn: str
) -> Tensor | list[Tensor]:
    """Logprobs of every datum's targets from the chunk's hidden states ``[rows, seq, d]``.

    When every datum's targets have the same trailing shape, the answer is one tensor: the
    datums' logprobs concatenated in order (``[sum of lengths]`` or ``[sum, K]``), computed
    in one call over all rows (the unembedding is read once per chunk, not once per datum;
    without an ``lm_head`` adapter through :func:`target_logprobs`). Otherwise one tensor
    per datum."""
    shapes = {it.targets.shape[1:] for it in mb}
    if len(shapes) != 1:
        return [
            _plain_logprobs(model, lora, hidden[r, : it.tokens.shape[0]], it.targets)
            for r, it in enumerate(mb)
        ]
    width = hidden.shape[1]
    if all(it.tokens.shape[0] == width for it in mb):
        rows = hidden.reshape(-1, hidden.shape[-1])
    else:
        rows = torch.cat([hidden[r, : it.tokens.shape[0]] for r, it in enumerate(mb)])
    targets = torch.cat([it.targets for it in mb]) if len(mb) > 1 else mb[0].targets
    if "lm_head" in lora.adapter.params:
        return _plain_logprobs(model, lora, rows, targets)
    grad_rows = None
    if loss_fn == "cross_entropy" and rows.requires_grad:
        # Cross-entropy gives no gradient to a weight-0 token: skip its softmax term.
        weights = torch.cat([it.inputs["weights"] for it in mb])
        grad_rows = (weights != 0) if weights.ndim == 1 else (weights != 0).any(-1)
    return target_logprobs(rows, model.unembedding, targets, grad_rows)


def _plain_logprobs(model: DecoderLM, lora: SingleLora, hidden: Tensor, targets: Tensor) -> Tensor:
    logits = model.logits(hidden, lora)  # [n, vocab]
    lse = torch.logsumexp(logits, dim=-1)
    idx = targets if targets.ndim == 2 else targets[:, None]
    lp = logits.gather(-1, idx) - lse[:, None]
    return lp[:, 0] if targets.ndim == 1 else lp


def _joint_inputs(mb: list[Prepared]) -> dict[str, Tensor] | None:
    """The datums' loss inputs concatenated in order, or ``None`` when they do not carry the
    same inputs."""
    keys = mb[0].inputs.keys()
    if any(it.inputs.keys() != keys for it in mb):
        return None
    if len(mb) == 1:
        return dict(mb[0].inputs)
    return {key: torch.cat([it.inputs[key] for it in mb]) for key in keys}


def _split_rows(
    flat_list: list[Any], sizes: list[int], shapes: list[list[int]]
) -> list[FlatTensor]:
    out: list[FlatTensor] = []
    start = 0
    for size, shape in zip(sizes, shapes, strict=True):
        out.append(FlatTensor(data=flat_list[start : start + size], dtype="float32", shape=shape))
        start += size
    return out


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
        logprobs = _batch_logprobs(model, lora, hidden, mb, loss_fn)
        joint = _joint_inputs(mb) if loss_is_elementwise(loss_fn) else None
        if isinstance(logprobs, Tensor) and joint is not None:
            return self._joint_loss(mb, logprobs, joint, loss_fn, config, outputs)
        if isinstance(logprobs, Tensor):
            logprobs = list(logprobs.split_with_sizes([it.tokens.shape[0] for it in mb]))
        mb_loss: Tensor | None = None
        total = 0.0
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

    @staticmethod
    def _joint_loss(
        mb: list[Prepared],
        lp: Tensor,
        inputs: Mapping[str, Tensor],
        loss_fn: str,
        config: Mapping[str, float],
        outputs: list[dict[str, FlatTensor]],
    ) -> tuple[Tensor, float]:
        """An elementwise loss over the whole chunk at once (the same per-token terms as one
        datum at a time, in a handful of ops instead of a handful per datum)."""
        el = elementwise_loss(loss_fn, lp, inputs, config)
        lengths = [it.tokens.shape[0] for it in mb]
        if len(set(lengths)) == 1:
            sums = el.detach().reshape(len(mb), -1).sum(-1)
        else:
            sums = torch.stack([part.sum() for part in el.detach().split_with_sizes(lengths)])
        total = 0.0
        for value in sums.to(torch.float64).tolist():
            total += value
        per_row = lp[0].numel() if lp.ndim == 2 else 1
        sizes = [n * per_row for n in lengths]
        shapes = [list(it.targets.shape) for it in mb]
        lps = _split_rows(lp.detach().reshape(-1).tolist(), sizes, shapes)
        els = _split_rows(el.detach().reshape(-1).tolist(), sizes, shapes)
        for it, lp_out, el_out in zip(mb, lps, els, strict=True):
            outputs[it.index] = {"logprobs": lp_out, "elementwise_loss": el_out}
        return el.sum(), total

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
