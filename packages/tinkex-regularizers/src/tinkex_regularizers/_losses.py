"""Ready-made base losses with the ``(data, logprobs) -> (loss, metrics)`` signature."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tinkex_regularizers._base import RegularizerBatch

__all__ = ["cross_entropy_loss"]


def cross_entropy_loss(
    data: Sequence[Any], logprobs: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """``−Σ_i Σ_t w_it · lp_it``: the server's ``cross_entropy``, computed on the client.

    ``w`` is each datum's ``loss_fn_inputs["weights"]`` (all ones when absent). Metrics:
    ``nll`` (the loss) and ``tokens`` (``Σ w``). Useful as the base loss of a pipeline:
    with no regularizers its gradient equals the plain ``forward_backward`` gradient.
    """
    batch = RegularizerBatch(data=list(data), logprobs=list(logprobs))
    loss = batch.zero()
    tokens = 0.0
    for i, lp in enumerate(batch.logprobs):
        if batch.has_field("weights", i):
            w = batch.field("weights", i).reshape(lp.shape)
        else:
            w = torch.ones_like(lp.detach())
        loss = loss - (w * lp).sum()
        tokens += float(w.sum().item())
    return loss, {"nll": float(loss.detach().item()), "tokens": tokens}
