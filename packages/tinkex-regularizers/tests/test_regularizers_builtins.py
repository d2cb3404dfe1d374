"""Every built-in against a hand-written pure-Python reference (value and gradient)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinkex_regularizers import (
    L1,
    L2,
    Consistency,
    ElasticNet,
    Entropy,
    GradientPenalty,
    KLDivergence,
    Orthogonality,
    Regularizer,
)

Rows = list[list[float]]
SETTINGS = settings(deadline=None, max_examples=60)

VAL = st.floats(-12.0, 0.0, allow_nan=False, allow_infinity=False)
ROWS = st.lists(st.lists(VAL, min_size=0, max_size=7), min_size=0, max_size=5)


def aligned(draw: st.DrawFn, rows: Rows, values: st.SearchStrategy[float] = VAL) -> Rows:
    """Draw another batch with the same row lengths as ``rows``."""
    return [draw(st.lists(values, min_size=len(r), max_size=len(r))) for r in rows]


def run(
    reg: Regularizer[Any], data: Sequence[Any], rows: Rows
) -> tuple[float, Rows, dict[str, float]]:
    """Value, d value / d logprobs (as lists) and metrics of ``reg`` in float64."""
    lps = [torch.tensor(r, dtype=torch.float64, requires_grad=True) for r in rows]
    loss, metrics = reg(data, lps)
    assert loss.shape == ()
    assert loss.dtype == (torch.float64 if rows else torch.get_default_dtype())
    if lps and loss.requires_grad:
        got = torch.autograd.grad(loss, lps, allow_unused=True)
        grads = [
            [0.0] * len(r) if g is None else g.tolist() for g, r in zip(got, rows, strict=True)
        ]
    else:
        grads = [[0.0] * len(r) for r in rows]
    return float(loss.detach()), grads, metrics


def inputs(rows: Rows, **fields: Rows) -> list[dict[str, Any]]:
    return [
        {"loss_fn_inputs": {k: torch.tensor(v[i], dtype=torch.float64) for k, v in fields.items()}}
        for i in range(len(rows))
    ]


def close(a: float, b: float, tol: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def assert_rows_close(got: Rows, want: Rows, tol: float = 1e-9) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert len(g) == len(w)
        for a, b in zip(g, w, strict=True):
            assert close(a, b, tol), (got, want)


def sign(x: float) -> float:
    return float((x > 0) - (x < 0))


def divisor(n: int, reduction: str) -> float:
    return float(n) if reduction == "mean" and n else 1.0


def targets(rows: Rows, target: str) -> tuple[Rows, Rows]:
    """(x, dx/dlp) for target logprobs or probs."""
    if target == "logprobs":
        return [list(r) for r in rows], [[1.0] * len(r) for r in rows]
    x = [[math.exp(v) for v in r] for r in rows]
    return x, x


# ---------------------------------------------------------------------------------------
# L1 / L2 / elastic net
# ---------------------------------------------------------------------------------------
@SETTINGS
@given(
    rows=ROWS,
    reduction=st.sampled_from(["sum", "mean"]),
    lam=st.floats(0.0, 3.0),
    target=st.sampled_from(["logprobs", "probs"]),
)
def test_l1_matches_reference(rows: Rows, reduction: str, lam: float, target: str) -> None:
    x, dx = targets(rows, target)
    n = sum(len(r) for r in rows)
    k = divisor(n, reduction)
    want = lam * sum(abs(v) for r in x for v in r) / k
    want_grad = [
        [lam * sign(v) * d / k for v, d in zip(r, dr, strict=True)]
        for r, dr in zip(x, dx, strict=True)
    ]
    value, grads, metrics = run(
        L1(reduction=reduction, target=target, **{"lambda": lam}), inputs(rows), rows
    )
    assert close(value, want)
    assert_rows_close(grads, want_grad)
    assert close(metrics["l1_mean"], sum(abs(v) for r in x for v in r) / (n or 1))


@SETTINGS
@given(
    rows=ROWS,
    reduction=st.sampled_from(["sum", "mean"]),
    lam=st.floats(0.0, 3.0),
    target=st.sampled_from(["logprobs", "probs"]),
    center=st.one_of(st.none(), st.just("mean"), st.floats(-5.0, 5.0)),
    clip=st.one_of(st.none(), st.floats(0.1, 6.0)),
)
def test_l2_matches_reference(
    rows: Rows, reduction: str, lam: float, target: str, center: Any, clip: float | None
) -> None:
    x, dx = targets(rows, target)
    flat = [v for r in x for v in r]
    n = len(flat)
    k = divisor(n, reduction)
    c = (sum(flat) / n if n else 0.0) if center == "mean" else (center or 0.0)

    def clamp(d: float) -> float:
        return d if clip is None else min(max(d, -clip), clip)

    def inside(d: float) -> float:
        return 1.0 if clip is None or -clip <= d <= clip else 0.0

    want = lam * sum(clamp(v - c) ** 2 for v in flat) / k
    # d/dx_k of Σ clamp(x_j − c)²: 2·clamp(d_k)·1[in] minus, for a mean centre, the average
    # of those terms (c depends on every x_j).
    own = [[2 * clamp(v - c) * inside(v - c) for v in r] for r in x]
    shared = sum(t for r in own for t in r) / n if center == "mean" and n else 0.0
    want_grad = [
        [lam * (o - shared) * d / k for o, d in zip(ro, dr, strict=True)]
        for ro, dr in zip(own, dx, strict=True)
    ]
    reg = L2(reduction=reduction, target=target, center=center, clip=clip, lambda_=lam)
    value, grads, metrics = run(reg, inputs(rows), rows)
    assert close(value, want)
    assert_rows_close(grads, want_grad, 1e-8)
    assert close(metrics["l2_mean"], sum(v * v for v in flat) / (n or 1))
    assert close(metrics["center"], c)


@SETTINGS
@given(
    rows=ROWS,
    reduction=st.sampled_from(["sum", "mean"]),
    lam=st.floats(0.0, 3.0),
    alpha=st.floats(0.0, 1.0),
    target=st.sampled_from(["logprobs", "probs"]),
)
def test_elastic_net_matches_reference(
    rows: Rows, reduction: str, lam: float, alpha: float, target: str
) -> None:
    x, dx = targets(rows, target)
    flat = [v for r in x for v in r]
    k = divisor(len(flat), reduction)
    want = lam * (alpha * sum(abs(v) for v in flat) + (1 - alpha) * sum(v * v for v in flat)) / k
    want_grad = [
        [lam * (alpha * sign(v) + (1 - alpha) * 2 * v) * d / k for v, d in zip(r, dr, strict=True)]
        for r, dr in zip(x, dx, strict=True)
    ]
    reg = ElasticNet(reduction=reduction, target=target, l1_ratio=alpha, lambda_=lam)
    value, grads, metrics = run(reg, inputs(rows), rows)
    assert close(value, want)
    assert_rows_close(grads, want_grad)
    assert metrics["l1_ratio"] == alpha


# ---------------------------------------------------------------------------------------
# entropy
# ---------------------------------------------------------------------------------------
@SETTINGS
@given(
    rows=ROWS,
    reduction=st.sampled_from(["sum", "mean"]),
    mode=st.sampled_from(["minimize", "maximize"]),
    normalize=st.booleans(),
)
def test_entropy_matches_reference(rows: Rows, reduction: str, mode: str, normalize: bool) -> None:
    hs, grads_h = [], []
    for r in rows:
        h = -sum(math.exp(v) * v for v in r if v > -50)
        g = [-(math.exp(v) * (v + 1)) if v > -50 else 0.0 for v in r]
        if normalize and len(r) >= 2:
            h /= math.log(len(r))
            g = [t / math.log(len(r)) for t in g]
        hs.append(h)
        grads_h.append(g)
    k = divisor(len(rows), reduction)
    s = 1.0 if mode == "minimize" else -1.0
    value, grads, metrics = run(
        Entropy(reduction=reduction, mode=mode, normalize=normalize), inputs(rows), rows
    )
    assert close(value, s * sum(hs) / k)
    assert_rows_close(grads, [[s * t / k for t in g] for g in grads_h])
    assert close(metrics["entropy"], sum(hs) / k)


@SETTINGS
@given(rows=ROWS, temperature=st.floats(0.5, 3.0).filter(lambda t: t != 1.0))
def test_entropy_with_temperature_matches_reference(rows: Rows, temperature: float) -> None:
    hs: list[float] = []
    grads_h: Rows = []
    for r in rows:
        if not r:
            hs.append(0.0)
            grads_h.append([])
            continue
        z = [v / temperature for v in r]
        m = max(z)
        lse = m + math.log(sum(math.exp(t - m) for t in z))
        lq = [t - lse for t in z]
        h = -sum(math.exp(t) * t for t in lq)
        hs.append(h)
        grads_h.append([-(math.exp(t) * (t + h)) / temperature for t in lq])
    k = divisor(len(rows), "mean")
    value, grads, _ = run(Entropy(temperature=temperature), inputs(rows), rows)
    assert close(value, sum(hs) / k)
    assert_rows_close(grads, [[t / k for t in g] for g in grads_h], 1e-8)


def test_entropy_ignores_entries_at_or_below_minus_50() -> None:
    value, grads, _ = run(Entropy(reduction="sum"), [{}], [[-60.0, -50.0, -2.0]])
    assert close(value, 2 * math.exp(-2.0))
    assert grads[0][:2] == [0.0, 0.0]
    assert close(grads[0][2], math.exp(-2.0))


# ---------------------------------------------------------------------------------------
# KL divergence
# ---------------------------------------------------------------------------------------
def ref_kl_row(p: list[float], q: list[float]) -> tuple[float, list[float], list[float]]:
    """KL(P‖Q) over one row, and its derivative w.r.t. log p and w.r.t. log q."""
    value, dp, dq = 0.0, [], []
    for a, b in zip(p, q, strict=True):
        if math.exp(a) <= 1e-10:
            dp.append(0.0)
            dq.append(0.0)
            continue
        d = a - b
        c = min(max(d, -100.0), 100.0)
        inside = 1.0 if -100.0 <= d <= 100.0 else 0.0
        value += math.exp(a) * c
        dp.append(math.exp(a) * c + math.exp(a) * inside)
        dq.append(-math.exp(a) * inside)
    return value, dp, dq


@st.composite
def kl_case(draw: st.DrawFn) -> tuple[Rows, Rows]:
    rows = draw(ROWS)
    return rows, aligned(draw, rows)


@SETTINGS
@given(
    case=kl_case(),
    direction=st.sampled_from(["forward", "reverse"]),
    symmetric=st.booleans(),
    reduction=st.sampled_from(["sum", "mean"]),
    source=st.sampled_from(["field", "option", "callable"]),
)
def test_kl_divergence_matches_reference(
    case: tuple[Rows, Rows], direction: str, symmetric: bool, reduction: str, source: str
) -> None:
    rows, refs = case
    per_row, grads_row = [], []
    for p, q in zip(rows, refs, strict=True):
        fv, fdp, _ = ref_kl_row(p, q)
        rv, _, rdq = ref_kl_row(q, p)
        if symmetric:
            per_row.append(0.5 * (fv + rv))
            grads_row.append([0.5 * (a + b) for a, b in zip(fdp, rdq, strict=True)])
        elif direction == "forward":
            per_row.append(fv)
            grads_row.append(fdp)
        else:
            per_row.append(rv)
            grads_row.append(rdq)
    k = divisor(len(rows), reduction)
    opts: dict[str, Any] = {"direction": direction, "symmetric": symmetric, "reduction": reduction}
    if source == "option":
        opts["reference_logprobs"] = [torch.tensor(q, dtype=torch.float64) for q in refs]
        data = inputs(rows)
    elif source == "callable":
        opts["compute_reference"] = lambda d: [list(q) for q in refs]
        data = inputs(rows)
    else:
        data = inputs(rows, reference_logprobs=refs)
    value, grads, metrics = run(KLDivergence(**opts), data, rows)
    assert close(value, sum(per_row) / k)
    assert_rows_close(grads, [[t / k for t in g] for g in grads_row])
    assert close(metrics["kl_max"], max(per_row, default=0.0))
    assert close(metrics["kl_min"], min(per_row, default=0.0))


def test_kl_masks_tiny_probabilities_and_clips_the_log_ratio() -> None:
    rows = [[-30.0, -1.0, -0.5]]
    refs = [[-1.0, -200.0, -0.5]]
    value, grads, _ = run(
        KLDivergence(reduction="sum"), inputs(rows, reference_logprobs=refs), rows
    )
    want, want_dp, _ = ref_kl_row(rows[0], refs[0])
    assert close(value, want)
    assert close(value, math.exp(-1.0) * 100.0)  # masked, clipped at 100, zero
    assert_rows_close(grads, [want_dp])
    assert grads[0][0] == 0.0


# ---------------------------------------------------------------------------------------
# consistency
# ---------------------------------------------------------------------------------------
def ref_consistency(
    pairs: list[tuple[list[float], list[float]]], metric: str, reduction: str
) -> tuple[float, list[tuple[list[float], list[float]]]]:
    """Value and (d/da, d/db) per pair."""
    a = [v for p in pairs for v in p[0]]
    b = [v for p in pairs for v in p[1]]
    n = len(a)
    k = divisor(n, reduction)
    if metric in ("mse", "l1"):
        f = (lambda d: d * d) if metric == "mse" else abs
        df = (lambda d: 2 * d) if metric == "mse" else sign
        value = sum(f(x - y) for x, y in zip(a, b, strict=True)) / k
        grads = [
            (
                [df(x - y) / k for x, y in zip(pa, pb, strict=True)],
                [-df(x - y) / k for x, y in zip(pa, pb, strict=True)],
            )
            for pa, pb in pairs
        ]
        return value, grads
    if metric == "cosine":
        if n == 0:
            return 0.0, [([], []) for _ in pairs]
        na = max(math.sqrt(sum(x * x for x in a)), 1e-8)
        nb = max(math.sqrt(sum(y * y for y in b)), 1e-8)
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        ga_on = math.sqrt(sum(x * x for x in a)) > 1e-8
        gb_on = math.sqrt(sum(y * y for y in b)) > 1e-8
        grads = []
        for pa, pb in pairs:
            da = [
                -(y / (na * nb) - (dot * x / (na**3 * nb) if ga_on else 0.0))
                for x, y in zip(pa, pb, strict=True)
            ]
            db = [
                -(x / (na * nb) - (dot * y / (nb**3 * na) if gb_on else 0.0))
                for x, y in zip(pa, pb, strict=True)
            ]
            grads.append((da, db))
        return 1.0 - dot / (na * nb), grads
    per_pair, grads = [], []
    for pa, pb in pairs:
        per_pair.append(
            0.5 * sum((math.exp(x) - math.exp(y)) * (x - y) for x, y in zip(pa, pb, strict=True))
        )
        da = [
            0.5 * (math.exp(x) * (x - y) + math.exp(x) - math.exp(y))
            for x, y in zip(pa, pb, strict=True)
        ]
        db = [
            0.5 * (-math.exp(y) * (x - y) - math.exp(x) + math.exp(y))
            for x, y in zip(pa, pb, strict=True)
        ]
        grads.append((da, db))
    kk = divisor(len(pairs), reduction)
    return sum(per_pair) / kk, [([t / kk for t in da], [t / kk for t in db]) for da, db in grads]


METRICS = st.sampled_from(["mse", "l1", "cosine", "kl"])


@SETTINGS
@given(case=kl_case(), metric=METRICS, reduction=st.sampled_from(["sum", "mean"]))
def test_consistency_with_a_field_matches_reference(
    case: tuple[Rows, Rows], metric: str, reduction: str
) -> None:
    rows, other = case
    want, want_grads = ref_consistency(list(zip(rows, other, strict=True)), metric, reduction)
    reg = Consistency(metric=metric, reduction=reduction)
    value, grads, metrics = run(reg, inputs(rows, original_logprobs=other), rows)
    assert close(value, want)
    assert_rows_close(grads, [g[0] for g in want_grads], 1e-8)
    assert close(metrics["consistency"], want)


@st.composite
def adjacent_case(draw: st.DrawFn) -> Rows:
    firsts = draw(st.lists(st.lists(VAL, min_size=0, max_size=6), min_size=0, max_size=3))
    rows: Rows = []
    for r in firsts:
        rows += [r, draw(st.lists(VAL, min_size=len(r), max_size=len(r)))]
    return rows


@SETTINGS
@given(rows=adjacent_case(), metric=METRICS, reduction=st.sampled_from(["sum", "mean"]))
def test_consistency_between_adjacent_data_matches_reference(
    rows: Rows, metric: str, reduction: str
) -> None:
    pairs = [(rows[i], rows[i + 1]) for i in range(0, len(rows), 2)]
    want, want_grads = ref_consistency(pairs, metric, reduction)
    value, grads, _ = run(
        Consistency(metric=metric, reduction=reduction, pairs="adjacent"), inputs(rows), rows
    )
    assert close(value, want)
    flat_want = [g for pair in want_grads for g in pair]
    assert_rows_close(grads, flat_want, 1e-8)


# ---------------------------------------------------------------------------------------
# orthogonality
# ---------------------------------------------------------------------------------------
def ref_orthogonality(rows: Rows, mode: str, normalize: bool) -> tuple[float, Rows]:
    n = len(rows)
    if n == 0:
        return 0.0, []
    width = max(len(r) for r in rows)
    x = [r + [0.0] * (width - len(r)) for r in rows]
    norms = [math.sqrt(sum(v * v for v in r)) for r in x]
    if normalize:
        xh = [[v / max(nr, 1e-8) for v in r] for r, nr in zip(x, norms, strict=True)]
    else:
        xh = x
    g = [
        [sum(a * b for a, b in zip(xh[i], xh[j], strict=True)) for j in range(n)] for i in range(n)
    ]
    off = sum(g[i][j] ** 2 for i in range(n) for j in range(n) if i != j)
    tr = sum(g[i][i] for i in range(n))
    if mode == "soft":
        value = off
        coef = [[4 * g[i][j] if i != j else 0.0 for j in range(n)] for i in range(n)]
    elif mode == "hard":
        value = sum((g[i][j] - (i == j)) ** 2 for i in range(n) for j in range(n))
        coef = [[4 * (g[i][j] - (i == j)) for j in range(n)] for i in range(n)]
    else:
        value = (tr - n) ** 2 + off
        coef = [[4 * g[i][j] if i != j else 4 * (tr - n) for j in range(n)] for i in range(n)]
    grads: Rows = []
    for i in range(n):
        gh = [sum(coef[i][j] * xh[j][t] for j in range(n)) for t in range(width)]
        if normalize:
            if norms[i] > 1e-8:
                proj = sum(a * b for a, b in zip(xh[i], gh, strict=True))
                gx = [(gt - xh[i][t] * proj) / norms[i] for t, gt in enumerate(gh)]
            else:
                gx = [gt / 1e-8 for gt in gh]
        else:
            gx = gh
        grads.append(gx[: len(rows[i])])
    return value, grads


@SETTINGS
@given(rows=ROWS, mode=st.sampled_from(["soft", "hard", "spectral"]), normalize=st.booleans())
def test_orthogonality_matches_reference(rows: Rows, mode: str, normalize: bool) -> None:
    want, want_grads = ref_orthogonality(rows, mode, normalize)
    value, grads, metrics = run(Orthogonality(mode=mode, normalize=normalize), inputs(rows), rows)
    assert close(value, want, 1e-8)
    assert_rows_close(grads, want_grads, 1e-6)
    assert close(metrics["orthogonality"], want, 1e-8)


# ---------------------------------------------------------------------------------------
# gradient penalty
# ---------------------------------------------------------------------------------------
def exp_loss(data: Any, lps: Sequence[torch.Tensor]) -> torch.Tensor:
    """L(z) = Σ exp(z): ∇L = exp(z), nonlinear so the penalty has a real gradient."""
    total = torch.zeros((), dtype=torch.float64)
    for z in lps:
        total = total + z.exp().sum()
    return total


@SETTINGS
@given(
    case=kl_case(),
    target_norm=st.floats(0.0, 3.0),
    mode=st.sampled_from(["output", "interpolated"]),
    seed=st.integers(0, 2**31),
)
def test_gradient_penalty_matches_reference(
    case: tuple[Rows, Rows], target_norm: float, mode: str, seed: int
) -> None:
    rows, refs = case
    if mode == "interpolated" and rows:
        eps = torch.rand(
            len(rows), generator=torch.Generator().manual_seed(seed), dtype=torch.float64
        ).tolist()
    else:
        eps = [1.0] * len(rows)
    z = [
        [
            e * v + (1 - e) * (r if mode == "interpolated" else 0.0)
            for v, r in zip(row, ref, strict=True)
        ]
        for e, row, ref in zip(eps, rows, refs, strict=True)
    ]
    norm = math.sqrt(sum(math.exp(2 * t) for zr in z for t in zr))
    want = (norm - target_norm) ** 2 if rows else 0.0
    want_grads = [
        [2 * (norm - target_norm) * math.exp(2 * t) / norm * e if norm > 0 else 0.0 for t in zr]
        for e, zr in zip(eps, z, strict=True)
    ]
    reg = GradientPenalty(loss_fn=exp_loss, mode=mode, target_norm=target_norm, seed=seed)
    value, grads, metrics = run(reg, inputs(rows, reference_logprobs=refs), rows)
    assert close(value, want)
    assert_rows_close(grads, want_grads, 1e-8)
    assert close(metrics["gradient_norm"], norm if rows else 0.0)


def test_gradient_penalty_of_a_linear_loss_has_zero_gradient() -> None:
    def linear(data: Any, lps: Sequence[torch.Tensor]) -> torch.Tensor:
        return -sum((lp * 2.0).sum() for lp in lps)  # type: ignore[return-value]

    value, grads, metrics = run(
        GradientPenalty(loss_fn=linear, target_norm=0.0), [{}], [[-1.0, -2.0]]
    )
    assert close(metrics["gradient_norm"], math.sqrt(8.0))
    assert close(value, 8.0)
    assert grads == [[0.0, 0.0]]


# ---------------------------------------------------------------------------------------
# masks and fields
# ---------------------------------------------------------------------------------------
MASKABLE: list[Callable[[], Regularizer[Any]]] = [
    lambda: L1(mask_field="weights"),
    lambda: L2(mask_field="weights", center="mean"),
    lambda: ElasticNet(mask_field="weights", reduction="mean"),
    lambda: Entropy(mask_field="weights", temperature=0.7),
    lambda: KLDivergence(mask_field="weights", symmetric=True),
    lambda: Consistency(mask_field="weights", metric="kl"),
]


@settings(deadline=None, max_examples=15)
@given(case=kl_case(), data=st.data())
def test_a_mask_equals_dropping_the_masked_positions(
    case: tuple[Rows, Rows], data: st.DataObject
) -> None:
    rows, refs = case
    masks = [data.draw(st.lists(st.booleans(), min_size=len(r), max_size=len(r))) for r in rows]
    weights = [[1.0 if m else 0.0 for m in ms] for ms in masks]
    kept = [[v for v, m in zip(r, ms, strict=True) if m] for r, ms in zip(rows, masks, strict=True)]
    kept_refs = [
        [v for v, m in zip(r, ms, strict=True) if m] for r, ms in zip(refs, masks, strict=True)
    ]
    for make in MASKABLE:
        reg = make()
        masked_value, masked_grads, _ = run(
            reg,
            inputs(rows, weights=weights, reference_logprobs=refs, original_logprobs=refs),
            rows,
        )
        plain = type(reg)(**reg.options.model_dump(exclude={"mask_field"}))
        value, grads, _ = run(
            plain, inputs(kept, reference_logprobs=kept_refs, original_logprobs=kept_refs), kept
        )
        assert close(masked_value, value, 1e-8), type(reg).__name__
        dropped = [
            [g for g, m in zip(gr, ms, strict=True) if m]
            for gr, ms in zip(masked_grads, masks, strict=True)
        ]
        assert_rows_close(dropped, grads, 1e-8)
        assert all(
            g == 0.0
            for gr, ms in zip(masked_grads, masks, strict=True)
            for g, m in zip(gr, ms, strict=True)
            if not m
        )


def test_field_target_penalises_a_datum_field_and_has_no_gradient() -> None:
    rows = [[-1.0, -2.0], [-3.0]]
    data = inputs(rows, advantages=[[1.0, -2.0], [0.5]])
    value, grads, _ = run(L1(target="field", field="advantages"), data, rows)
    assert value == 3.5
    assert grads == [[0.0, 0.0], [0.0]]


def test_real_datum_models_are_read(make_datum: Callable[..., Any]) -> None:
    rows = [[-1.0, -2.0]]
    data = [make_datum(weights=[1.0, 0.0], reference_logprobs=[-1.5, -2.0])]
    value, _, _ = run(KLDivergence(mask_field="weights", reduction="sum"), data, rows)
    assert close(value, math.exp(-1.0) * 0.5)


# ---------------------------------------------------------------------------------------
# finite differences (torch.autograd.gradcheck, float64)
# ---------------------------------------------------------------------------------------
def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


LENGTHS = [3, 1, 4, 2]


def _random_rows(g: torch.Generator, low: float = -4.0, high: float = -0.1) -> list[torch.Tensor]:
    return [low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64) for n in LENGTHS]


GRADCHECK_CASES: list[tuple[str, Callable[[], Regularizer[Any]]]] = [
    ("l1-sum", lambda: L1()),
    ("l1-mean-probs", lambda: L1(reduction="mean", target="probs", lambda_=2.0)),
    ("l2", lambda: L2()),
    ("l2-center-mean-clip", lambda: L2(center="mean", clip=0.7, reduction="mean")),
    ("l2-probs-center", lambda: L2(target="probs", center=0.3)),
    ("elastic-net", lambda: ElasticNet(l1_ratio=0.3)),
    ("entropy", lambda: Entropy()),
    (
        "entropy-max-norm-temp",
        lambda: Entropy(mode="maximize", normalize=True, temperature=1.7, reduction="sum"),
    ),
    ("kl-forward", lambda: KLDivergence()),
    ("kl-reverse", lambda: KLDivergence(direction="reverse", reduction="sum")),
    ("kl-symmetric", lambda: KLDivergence(symmetric=True)),
    ("consistency-mse", lambda: Consistency()),
    ("consistency-l1", lambda: Consistency(metric="l1", reduction="sum")),
    ("consistency-cosine", lambda: Consistency(metric="cosine")),
    ("consistency-kl", lambda: Consistency(metric="kl")),
    ("consistency-adjacent", lambda: Consistency(pairs="adjacent", metric="kl")),
    ("orthogonality-soft", lambda: Orthogonality()),
    ("orthogonality-hard", lambda: Orthogonality(mode="hard", normalize=False)),
    ("orthogonality-spectral", lambda: Orthogonality(mode="spectral")),
    ("gradient-penalty", lambda: GradientPenalty(loss_fn=exp_loss)),
    (
        "gradient-penalty-interpolated",
        lambda: GradientPenalty(loss_fn=exp_loss, mode="interpolated", target_norm=0.5),
    ),
]


@pytest.mark.parametrize(("label", "make"), GRADCHECK_CASES, ids=[c[0] for c in GRADCHECK_CASES])
def test_gradient_matches_finite_differences(
    label: str, make: Callable[[], Regularizer[Any]]
) -> None:
    g = _gen()
    lps = [t.requires_grad_(True) for t in _random_rows(g)]
    if label == "consistency-adjacent":  # pairs (0, 1) and (2, 3) need equal lengths
        lps = [
            lps[0],
            (lps[0].detach() + 0.3).requires_grad_(True),
            lps[2],
            (lps[2].detach() - 0.2).requires_grad_(True),
        ]
    refs = [t.detach() for t in _random_rows(g)][: len(lps)]
    data = [{"loss_fn_inputs": {"reference_logprobs": r, "original_logprobs": r}} for r in refs]
    reg = make()
    if isinstance(reg, GradientPenalty):
        seed_state = reg._generator.get_state()

        def fn(*xs: torch.Tensor) -> torch.Tensor:
            reg._generator.set_state(seed_state)  # the same ε at every evaluation
            return reg(data, list(xs))[0]
    else:

        def fn(*xs: torch.Tensor) -> torch.Tensor:
            return reg(data, list(xs))[0]

    assert torch.autograd.gradcheck(fn, tuple(lps), eps=1e-6, atol=1e-5, rtol=1e-4)
