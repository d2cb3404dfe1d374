"""The engine's hand-written autograd functions give the plain autograd graph's values and
gradients (float32 rounding apart)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tinkex_server._engine import fused


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_lora_linear_group_matches_separate_projections() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 12, generator=gen, requires_grad=True)
    weights = [torch.randn(o, 12, generator=gen) for o in (12, 4, 4)]
    bias = torch.randn(20, generator=gen)
    a = [torch.randn(2, 12, generator=gen, requires_grad=True) for _ in range(2)]
    b = [torch.randn(o, 2, generator=gen, requires_grad=True) for o in (12, 4)]
    scale = 1.5
    # The third projection has no adapter: an [out, 0] block.
    b_block = torch.block_diag(b[0] * scale, b[1] * scale, torch.zeros(4, 0))  # type: ignore[no-untyped-call]
    out = fused.lora_linear(x, torch.cat(weights), bias, torch.cat(a), b_block)
    grad = torch.randn(out.shape, generator=gen)
    got = torch.autograd.grad(out, [x, *a, *b], grad)

    parts = [F.linear(x, w) for w in weights]
    for i in range(2):
        parts[i] = parts[i] + F.linear(F.linear(x, a[i]), b[i]) * scale
    ref = torch.cat(parts, -1) + bias
    want = torch.autograd.grad(ref, [x, *a, *b], grad)
    _close(out, ref)
    for g, w in zip(got, want, strict=True):
        _close(g, w)


def test_rope_and_rms_norm_match_plain_graph() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, 8, generator=gen, requires_grad=True)
    angles = torch.randn(2, 1, 7, 4, generator=gen)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    rotated = torch.cat([-x[..., 4:], x[..., :4]], -1)
    ref = x * cos + rotated * sin
    out = fused.rope(x, cos, sin)
    grad = torch.randn(out.shape, generator=gen)
    _close(out, ref)
    _close(torch.autograd.grad(out, x, grad)[0], torch.autograd.grad(ref, x, grad)[0])

    weight = torch.randn(8, generator=gen)
    norm = fused.rms_norm(x, weight, 1e-6)
    ref_norm = weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    assert torch.equal(norm, ref_norm)
    _close(torch.autograd.grad(norm, x, grad)[0], torch.autograd.grad(ref_norm, x, grad)[0])


@pytest.mark.parametrize("k", [0, 2])
def test_target_logprobs_chunked_with_skipped_rows(monkeypatch: pytest.MonkeyPatch, k: int) -> None:
    # Chunks of 3 rows over 10 rows: partial chunks, a chunk with no gradient row at all.
    monkeypatch.setattr(fused, "LOGPROB_CHUNK_BYTES", 3 * 4 * 50)
    gen = torch.Generator().manual_seed(2)
    h = torch.randn(10, 6, generator=gen, requires_grad=True)
    weight = torch.randn(50, 6, generator=gen)
    shape = (10, k) if k else (10,)
    targets = torch.randint(0, 50, shape, generator=gen)
    weights = torch.rand(shape, generator=gen)
    weights[3:6] = 0
    weights[8] = 0
    rows = (weights != 0) if not k else (weights != 0).any(-1)
    lp = fused.target_logprobs(h, weight, targets, rows)
    logp = torch.log_softmax(F.linear(h, weight), -1)
    ref = logp.gather(-1, targets if k else targets[:, None])
    ref = ref if k else ref[:, 0]
    _close(lp, ref)
    got = torch.autograd.grad((-weights * lp).sum(), h)[0]
    want = torch.autograd.grad((-weights * ref).sum(), h)[0]
    _close(got, want)
    with torch.no_grad():
        _close(fused.target_logprobs(h, weight, targets), ref)


def test_swiglu_matches_plain_graph() -> None:
    gen = torch.Generator().manual_seed(3)
    gate_up = torch.randn(2, 5, 12, generator=gen, requires_grad=True)
    out = fused.swiglu(gate_up, 6)
    ref = F.silu(gate_up[..., :6]) * gate_up[..., 6:]
    grad = torch.randn(out.shape, generator=gen)
    assert torch.equal(out, ref)
    _close(torch.autograd.grad(out, gate_up, grad)[0], torch.autograd.grad(ref, gate_up, grad)[0])
