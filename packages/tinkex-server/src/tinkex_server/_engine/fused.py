"""Hand-written autograd for the two hot spots of a LoRA training step (float32, exact).

* :func:`lora_linear`: a group of frozen projections that share their input (q/k/v, or
  gate/up), with their LoRA adapters, as one matmul for the base weights, one for every
  ``A`` and one (block-diagonal) for every ``B``. The backward uses the matmul forms that
  are fast on CPU for the skinny rank-``r`` products (``(u^T dy)^T`` rather than
  ``dy^T u``), and never computes a gradient for the frozen weights.
* :func:`target_logprobs`: ``log_softmax(h W^T)[targets]`` without keeping the
  ``[tokens, vocab]`` logits alive for the backward. The gradient of a target logprob with
  respect to ``h`` is ``W[target] - softmax(h W^T) W``; the second term does not depend on
  the loss, so it is computed in the forward pass, row chunk by row chunk, and the backward
  only combines it with the loss's per-token gradient. Rows marked as not needing a
  gradient (e.g. weight 0 under cross-entropy) skip that term.

The math is the same as the plain autograd graph; only float rounding order differs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["lora_linear", "rms_norm", "rope", "swiglu", "target_logprobs"]

#: Bytes of logits materialised at once by :func:`target_logprobs`. Each chunk of rows
#: reads the whole unembedding again, so chunks are large (a 1024 x 49152 batch is one).
LOGPROB_CHUNK_BYTES = 256 * 2**20


class _LoraLinear(torch.autograd.Function):
    """``y = x W^T + bias + (x A^T) B^T`` with frozen ``W``/``bias`` (``B`` already scaled)."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, a: Tensor, b: Tensor
    ) -> Tensor:
        u = F.linear(x, a)
        y = F.linear(x, weight, bias)
        y.addmm_(u, b.t())
        ctx.save_for_backward(x, weight, a, b, u)
        return y

    @staticmethod
    def backward(
        ctx: Any, dy: Tensor
    ) -> tuple[Tensor | None, None, None, Tensor | None, Tensor | None]:
        x, weight, a, b, u = ctx.saved_tensors
        dy = dy.contiguous()
        du = (b.t() @ dy.t()).t()  # dy @ b, in the fast form
        dx = None
        if ctx.needs_input_grad[0]:
            dx = dy @ weight
            dx.addmm_(du, a)
        da = du.t() @ x if ctx.needs_input_grad[3] else None
        db = (u.t() @ dy).t() if ctx.needs_input_grad[4] else None
        return dx, None, None, da, db


def lora_linear(x: Tensor, weight: Tensor, bias: Tensor | None, a: Tensor, b: Tensor) -> Tensor:
    """``x W^T + bias + (x A^T) B^T`` over the last dimension of ``x`` (``B`` carries the
    LoRA scale; ``W``/``bias`` are frozen: no gradient is computed for them)."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    y: Tensor = _LoraLinear.apply(x2, weight, bias, a, b)  # type: ignore[no-untyped-call]
    return y.view(*lead, y.shape[-1])


class _Rope(torch.autograd.Function):
    """``x * cos + rotate_half(x) * sin`` (``rotate_half(x) = cat(-x2, x1)``), without the
    slice/cat/negate intermediates (and their zero-filled gradients) of the plain graph."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        half = x.shape[-1] // 2
        out = x * cos
        out[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-1)
        out[..., half:].addcmul_(x[..., :half], sin[..., half:])
        ctx.save_for_backward(cos, sin)
        return out

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor, None, None]:
        cos, sin = ctx.saved_tensors
        half = dy.shape[-1] // 2
        dx = dy * cos
        dx[..., :half].addcmul_(dy[..., half:], sin[..., half:])
        dx[..., half:].addcmul_(dy[..., :half], sin[..., :half], value=-1)
        return dx, None, None


def rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding of ``x`` ``[..., head_dim]`` with broadcastable ``cos``/``sin``
    whose two halves are equal (as :meth:`DecoderLM.rotary` builds them)."""
    out: Tensor = _Rope.apply(x, cos, sin)  # type: ignore[no-untyped-call]
    return out


class _SwiGlu(torch.autograd.Function):
    """``silu(gate) * up`` from the fused ``[..., 2F]`` gate/up output; the backward writes
    both halves of the gradient into one buffer (no concatenation of two gradients)."""

    @staticmethod
    def forward(ctx: Any, gate_up: Tensor, size: int) -> Tensor:
        gate, up = gate_up.split_with_sizes([size, size], -1)
        act = F.silu(gate)
        ctx.save_for_backward(gate, up, act)
        return act * up

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor, None]:
        gate, up, act = ctx.saved_tensors
        size = gate.shape[-1]
        grad = dy.new_empty((*dy.shape[:-1], 2 * size))
        torch.ops.aten.silu_backward.grad_input(dy * up, gate, grad_input=grad[..., :size])
        torch.mul(dy, act, out=grad[..., size:])
        return grad, None


def swiglu(gate_up: Tensor, size: int) -> Tensor:
    """``silu(gate_up[..., :size]) * gate_up[..., size:]``."""
    out: Tensor = _SwiGlu.apply(gate_up, size)  # type: ignore[no-untyped-call]
    return out


class _RmsNorm(torch.autograd.Function):
    """``w * (x * rsqrt(mean(x^2) + eps))`` over the last dimension, ``w`` frozen."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        r = x.pow(2).mean(-1, keepdim=True).add_(eps).rsqrt_()
        ctx.save_for_backward(x, weight, r)
        return weight * (x * r)

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor, None, None]:
        x, weight, r = ctx.saved_tensors
        g = dy * weight
        xhat = x * r
        dot = (g * xhat).mean(-1, keepdim=True)
        return g.sub_(xhat.mul_(dot)).mul_(r), None, None


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """Float32 RMSNorm of ``x`` with a frozen ``weight`` (plain autograd if it trains)."""
    if weight.requires_grad:
        h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return weight * h
    out: Tensor = _RmsNorm.apply(x, weight, eps)  # type: ignore[no-untyped-call]
    return out


class _TargetLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, h: Tensor, weight: Tensor, targets: Tensor, grad_rows: Tensor | None, need: bool
    ) -> Tensor:
        n = h.shape[0]
        lp = h.new_empty(targets.shape)
        expected = h.new_zeros(h.shape) if need else None
        chunk = max(1, LOGPROB_CHUNK_BYTES // (4 * weight.shape[0]))
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            logits = F.linear(h[start:stop], weight)
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            torch.sub(logits.gather(-1, targets[start:stop]), lse, out=lp[start:stop])
            if expected is None:
                continue
            if grad_rows is not None:
                rows = grad_rows[start:stop].nonzero().squeeze(-1)
                if rows.numel() == 0:
                    continue
                if rows.numel() < stop - start:
                    probs = logits.index_select(0, rows).sub_(lse.index_select(0, rows)).exp_()
                    expected.index_copy_(0, rows + start, probs @ weight)
                    continue
            probs = logits.sub_(lse).exp_()
            torch.mm(probs, weight, out=expected[start:stop])
        ctx.save_for_backward(expected, weight, targets)
        return lp

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, None, None, None, None]:
        expected, weight, targets = ctx.saved_tensors
        if expected is None:
            return None, None, None, None, None
        picked = F.embedding(targets, weight)  # [n, K, hidden]
        dh = torch.bmm(g.unsqueeze(1), picked).squeeze(1)
        dh.sub_(expected * g.sum(-1, keepdim=True))
        return dh, None, None, None, None


def target_logprobs(
    hidden: Tensor, weight: Tensor, targets: Tensor, grad_rows: Tensor | None = None
) -> Tensor:
    """``log_softmax(hidden @ weight^T)`` at ``targets`` (``[n]`` or ``[n, K]`` token ids),
    same shape as ``targets``, for ``hidden`` ``[n, d]`` and a frozen ``weight`` ``[V, d]``.

    ``grad_rows`` (bool ``[n]``, optional): rows whose logprobs the loss may give a non-zero
    gradient; the others get none (their logprobs are still exact).
    """
    idx = targets if targets.ndim == 2 else targets[:, None]
    lp: Tensor = _TargetLogprobs.apply(  # type: ignore[no-untyped-call]
        hidden.contiguous(),
        weight,
        idx,
        grad_rows,
        torch.is_grad_enabled() and hidden.requires_grad,
    )
    return lp if targets.ndim == 2 else lp[:, 0]
