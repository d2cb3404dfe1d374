"""The pipeline: ``total = base + Σ wᵢ·Rᵢ``, structured output, gradient norms, events."""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from tinkex_regularizers._base import (
    BaseLossFn,
    LossFn,
    Metrics,
    RegularizerBatch,
    RegularizerError,
    RegularizerTimeoutError,
    loss_tensor,
    to_float,
)
from tinkex_regularizers._spec import RegularizerSpec
from tinkex_types import Hooks, RegularizerEvent, TinkexValidationError, get_hooks

__all__ = [
    "BaseLossOutput",
    "CustomLossOutput",
    "RegularizerOutput",
    "RegularizerPipeline",
    "grad_norm",
]

#: Below this many logprob elements, ``parallel="auto"`` runs regularizers one after the other.
AUTO_PARALLEL_MIN_ELEMENTS = 1 << 15


@dataclass(frozen=True)
class RegularizerOutput:
    """One regularizer's share of a pipeline result."""

    name: str
    value: float
    weight: float
    contribution: float
    metrics: Metrics
    duration_s: float
    grad_norm: float | None = None
    grad_norm_weighted: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "weight": self.weight,
            "contribution": self.contribution,
            "grad_norm": self.grad_norm,
            "grad_norm_weighted": self.grad_norm_weighted,
            "custom": dict(self.metrics),
        }


@dataclass(frozen=True)
class BaseLossOutput:
    value: float
    metrics: Metrics
    grad_norm: float | None = None


@dataclass(frozen=True)
class CustomLossOutput:
    """The structured result of one pipeline run.

    ``loss`` is the differentiable total tensor; ``loss_total`` its value
    (``= base_loss.value + regularizer_total`` up to float rounding);
    ``regularizers`` keeps the spec order.
    """

    loss: torch.Tensor = field(repr=False)
    loss_total: float
    base_loss: BaseLossOutput
    regularizers: dict[str, RegularizerOutput]
    regularizer_total: float
    total_grad_norm: float | None = None

    def metrics(self) -> dict[str, float]:
        """Flat metrics (see the package README for the names).

        The base loss's own metrics keep their keys; then ``loss:total``, ``loss:base``,
        ``loss:regularizers``, ``grad_norm:base``/``grad_norm:total`` (when tracked), and per
        regularizer ``reg/<name>:value``, ``:weight``, ``:contribution``, ``:grad_norm``,
        ``:grad_norm_weighted`` (when tracked) and ``reg/<name>/<metric>``.
        """
        out: dict[str, float] = dict(self.base_loss.metrics)
        out["loss:total"] = self.loss_total
        out["loss:base"] = self.base_loss.value
        out["loss:regularizers"] = self.regularizer_total
        if self.base_loss.grad_norm is not None:
            out["grad_norm:base"] = self.base_loss.grad_norm
        if self.total_grad_norm is not None:
            out["grad_norm:total"] = self.total_grad_norm
        for name, reg in self.regularizers.items():
            prefix = f"reg/{name}"
            out[f"{prefix}:value"] = reg.value
            out[f"{prefix}:weight"] = reg.weight
            out[f"{prefix}:contribution"] = reg.contribution
            if reg.grad_norm is not None and reg.grad_norm_weighted is not None:
                out[f"{prefix}:grad_norm"] = reg.grad_norm
                out[f"{prefix}:grad_norm_weighted"] = reg.grad_norm_weighted
            for key, val in reg.metrics.items():
                out[f"{prefix}/{key}"] = val
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (spec §5.5): no tensors."""
        out: dict[str, Any] = {
            "loss_total": self.loss_total,
            "regularizer_total": self.regularizer_total,
            "regularizers": {n: r.to_dict() for n, r in self.regularizers.items()},
            "base_loss": {
                "value": self.base_loss.value,
                "grad_norm": self.base_loss.grad_norm,
                "custom": dict(self.base_loss.metrics),
            },
        }
        if self.total_grad_norm is not None:
            out["total_grad_norm"] = self.total_grad_norm
        return out


def _grads(
    loss: torch.Tensor, inputs: Sequence[torch.Tensor], *, retain: bool
) -> list[torch.Tensor]:
    """``∂loss/∂inputs`` (zeros where unused)."""
    if not loss.requires_grad:
        return [torch.zeros_like(t) for t in inputs]
    wanted = [t for t in inputs if t.requires_grad]
    got = iter(torch.autograd.grad(loss, wanted, retain_graph=retain, allow_unused=True))
    out: list[torch.Tensor] = []
    for t in inputs:
        g = next(got) if t.requires_grad else None
        out.append(torch.zeros_like(t) if g is None else g.detach())
    return out


class _Precomputed(torch.autograd.Function):
    """A scalar whose gradient w.r.t. ``inputs`` is known already (first order only).

    Regularizers run on private leaves (possibly in worker threads) and their weighted
    gradients are summed in spec order; this node hands that sum to the caller's logprobs.
    Built in the calling thread, it makes the caller's graph the same whether or not
    threads were used, so the gradients are bit-identical.
    """

    @staticmethod
    def forward(ctx: Any, *args: Any) -> torch.Tensor:
        value, grads = args[0], args[1]
        ctx.grads = grads
        return value.detach().clone()  # type: ignore[no-any-return]

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Any) -> Any:
        if torch.is_grad_enabled():  # create_graph=True: a second derivative would be wrong
            raise RuntimeError(
                "the loss of a RegularizerPipeline is differentiable once: backward with "
                "create_graph=True is not supported (call the regularizers directly for "
                "higher-order derivatives)"
            )
        (grad,) = grad_outputs
        return (None, None, *[g * grad for g in ctx.grads])


def grad_norm(grads: Iterable[torch.Tensor]) -> float:
    """``sqrt(Σ g²)`` over every element of ``grads``, computed in float64."""
    total = 0.0
    for g in grads:
        if g.numel():
            total += float(g.detach().to(torch.float64).square().sum().item())
    return float(total**0.5)


@dataclass
class _Done:
    loss: torch.Tensor
    value: float
    metrics: Metrics
    grads: list[torch.Tensor] | None
    duration_s: float


class RegularizerPipeline:
    """Compose ``total = base_loss + Σ weightᵢ·regularizerᵢ`` over per-datum logprobs.

    ``base_loss(data, logprobs) -> loss | (loss, metrics)`` (``None``: no base term).
    ``regularizers``: :class:`RegularizerSpec` objects or mappings accepted by
    :meth:`RegularizerSpec.coerce`; names must be unique. ``track_grad_norms`` adds
    ``‖∂term/∂logprobs‖₂`` per term and for the total. ``parallel``: ``True`` runs the
    regularizers in a thread pool, ``False`` one after the other, ``"auto"`` (default) uses
    threads for two or more regularizers on at least 32768 logprob elements. Results do
    not depend on this choice. ``timeout`` (seconds, threads only): every
    regularizer must finish that long after submission. ``reference(data) -> [tensor per datum]`` supplies reference logprobs to
    the regularizers that use one. ``hooks`` defaults to :func:`tinkex_types.get_hooks`.
    """

    def __init__(
        self,
        base_loss: BaseLossFn | None = None,
        regularizers: Iterable[RegularizerSpec | Mapping[str, Any]] = (),
        *,
        track_grad_norms: bool = False,
        parallel: bool | Literal["auto"] = "auto",
        max_workers: int | None = None,
        timeout: float | None = 30.0,
        reference: Callable[[list[Any]], Sequence[Any]] | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        if base_loss is not None and not callable(base_loss):
            raise TinkexValidationError(
                "base_loss",
                f"must be callable, got {type(base_loss).__name__}",
                "give fn(data, logprobs) -> (loss, metrics)",
            )
        specs = [RegularizerSpec.coerce(r, hooks=hooks) for r in regularizers]
        seen: set[str] = set()
        for spec in specs:
            if spec.name in seen:
                raise TinkexValidationError(
                    "regularizers",
                    f"the name {spec.name!r} is used twice",
                    "give each spec a unique name=",
                )
            seen.add(spec.name)
        if base_loss is None and not specs:
            raise TinkexValidationError(
                "base_loss",
                "no base loss and no regularizers: nothing to compute",
                "give a base_loss or at least one regularizer",
            )
        if parallel not in (True, False, "auto"):
            raise TinkexValidationError(
                "parallel", f"got {parallel!r}", "use True, False or 'auto'"
            )
        if max_workers is not None and max_workers < 1:
            raise TinkexValidationError("max_workers", f"got {max_workers}", "use at least 1")
        if timeout is not None and not timeout > 0:
            raise TinkexValidationError("timeout", f"got {timeout!r}", "use seconds > 0 or None")
        self.base_loss = base_loss
        self.regularizers: tuple[RegularizerSpec, ...] = tuple(specs)
        self.track_grad_norms = track_grad_norms
        self.parallel = parallel
        self.max_workers = max_workers
        self.timeout = timeout
        self.reference = reference
        self._hooks = hooks
        self._last: CustomLossOutput | None = None
        self._lock = threading.Lock()

    # -- public ---------------------------------------------------------------------
    @property
    def last_output(self) -> CustomLossOutput | None:
        """The :class:`CustomLossOutput` of the latest call (``None`` before the first)."""
        with self._lock:
            return self._last

    def as_loss_fn(self) -> LossFn:
        """A ``loss_fn(data, logprobs) -> (loss, metrics)`` for ``forward_backward_custom``."""

        def loss_fn(
            data: list[Any], logprobs: list[torch.Tensor]
        ) -> tuple[torch.Tensor, dict[str, float]]:
            out = self.compute(data, logprobs)
            return out.loss, out.metrics()

        loss_fn.pipeline = self  # type: ignore[attr-defined]
        return loss_fn

    def __call__(
        self, data: Sequence[Any], logprobs: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.compute(data, logprobs)
        return out.loss, out.metrics()

    def compute(self, data: Sequence[Any], logprobs: Sequence[torch.Tensor]) -> CustomLossOutput:
        """Run the base loss and every regularizer on ``(data, logprobs)``.

        Logprobs that do not require grad are replaced by leaf copies that do (so that
        gradient norms and the gradient penalty work). The returned ``loss`` is
        differentiable (first order) with respect to the given tensors that required grad:
        each regularizer's gradient is computed eagerly on private copies (in its worker
        thread) and attached to ``loss``; a second derivative through ``loss`` raises.
        """
        hooks = self._hooks or get_hooks()
        data = list(data)
        lps = [
            lp
            if (not isinstance(lp, torch.Tensor) or lp.requires_grad or not lp.is_floating_point())
            else lp.detach().requires_grad_(True)
            for lp in logprobs
        ]
        with hooks.operation_span(
            "regularizer_pipeline",
            {
                "regularizer_count": len(self.regularizers),
                "track_grad_norms": self.track_grad_norms,
            },
        ):
            out = self._compute(hooks, data, lps)
        with self._lock:
            self._last = out
        return out

    # -- internals ------------------------------------------------------------------
    def _compute(self, hooks: Hooks, data: list[Any], lps: list[torch.Tensor]) -> CustomLossOutput:
        references = None
        if self.reference is not None:
            try:
                references = list(self.reference(data))
            except Exception as exc:
                raise RegularizerError("reference", exc) from exc
        grad_mode = torch.is_grad_enabled()
        base_t, base_metrics = self._base(
            RegularizerBatch(data=data, logprobs=lps, reference_logprobs=references)
        )
        base_grads = _grads(base_t, lps, retain=True) if self.track_grad_norms else None
        # The regularizers see private leaves: their graphs stay theirs (and their threads').
        private = [lp.detach().requires_grad_(grad_mode) for lp in lps]
        batch = RegularizerBatch(
            data=data, logprobs=private, reference_logprobs=references, base_loss=self.base_loss
        )
        done = self._run_all(hooks, batch, grad_mode)

        total = base_t
        if self.regularizers:
            reg_value = batch.zero()
            for spec, d in zip(self.regularizers, done, strict=True):
                reg_value = reg_value + spec.weight * d.loss
            reg_grads = None
            if grad_mode:
                reg_grads = [torch.zeros_like(lp) for lp in lps]
                for spec, d in zip(self.regularizers, done, strict=True):
                    assert d.grads is not None
                    for acc, g in zip(reg_grads, d.grads, strict=True):
                        acc.add_(g, alpha=spec.weight)
            if reg_grads is not None and any(lp.requires_grad for lp in lps):
                reg_term = _Precomputed.apply(reg_value, reg_grads, *lps)  # type: ignore[no-untyped-call]
            else:
                reg_term = reg_value
            total = total + reg_term

        outputs: dict[str, RegularizerOutput] = {}
        for spec, d in zip(self.regularizers, done, strict=True):
            norm = grad_norm(d.grads) if self.track_grad_norms and d.grads is not None else None
            outputs[spec.name] = RegularizerOutput(
                name=spec.name,
                value=d.value,
                weight=spec.weight,
                contribution=spec.weight * d.value,
                metrics=d.metrics,
                duration_s=d.duration_s,
                grad_norm=norm,
                grad_norm_weighted=None if norm is None else spec.weight * norm,
            )
        total_norm = None
        base_norm = None
        if base_grads is not None:
            base_norm = grad_norm(base_grads)
            summed = [g.clone() for g in base_grads]
            for spec, d in zip(self.regularizers, done, strict=True):
                if d.grads is not None:
                    for acc, g in zip(summed, d.grads, strict=True):
                        acc.add_(g, alpha=spec.weight)
            total_norm = grad_norm(summed)
        return CustomLossOutput(
            loss=total,
            loss_total=to_float(total, "loss:total"),
            base_loss=BaseLossOutput(
                value=to_float(base_t, "base_loss"), metrics=base_metrics, grad_norm=base_norm
            ),
            regularizers=outputs,
            regularizer_total=sum(o.contribution for o in outputs.values()),
            total_grad_norm=total_norm,
        )

    def _base(self, batch: RegularizerBatch) -> tuple[torch.Tensor, Metrics]:
        if self.base_loss is None:
            return batch.zero(), {}
        try:
            result = self.base_loss(list(batch.data), list(batch.logprobs))
            loss = loss_tensor(result, "base_loss")
            raw = result[1] if isinstance(result, tuple) and len(result) > 1 else {}
            metrics = _metrics(raw or {}, "base_loss")
        except TinkexValidationError:
            raise
        except Exception as exc:
            raise RegularizerError("base_loss", exc) from exc
        return loss, metrics

    def _use_threads(self, batch: RegularizerBatch) -> bool:
        if len(self.regularizers) < 2 or self.parallel is False:
            return False
        if self.parallel is True:
            return True
        return sum(lp.numel() for lp in batch.logprobs) >= AUTO_PARALLEL_MIN_ELEMENTS

    def _run_all(self, hooks: Hooks, batch: RegularizerBatch, grad_mode: bool) -> list[_Done]:
        if not self._use_threads(batch):
            return [self._run_one(hooks, spec, batch, grad_mode) for spec in self.regularizers]
        workers = min(len(self.regularizers), self.max_workers or os.cpu_count() or 1)
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="tinkex-regularizer"
        )
        futures = [
            pool.submit(self._run_one, hooks, spec, batch, grad_mode) for spec in self.regularizers
        ]
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        results: list[_Done] = []
        try:
            for spec, fut in zip(self.regularizers, futures, strict=True):
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    results.append(fut.result(timeout=left))
                except concurrent.futures.TimeoutError:
                    assert self.timeout is not None
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise RegularizerTimeoutError(spec.name, self.timeout) from None
        except RegularizerTimeoutError:
            raise
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return results

    def _run_one(
        self, hooks: Hooks, spec: RegularizerSpec, batch: RegularizerBatch, grad_mode: bool
    ) -> _Done:
        hooks.on_regularizer(RegularizerEvent(name=spec.name, phase="start", weight=spec.weight))
        start = time.perf_counter()
        value: float | None = None
        try:
            with torch.set_grad_enabled(grad_mode):
                result = spec.compute(batch)
                if not isinstance(result, tuple) or len(result) != 2:
                    raise TinkexValidationError(
                        f"regularizer {spec.name!r}",
                        f"compute() returned {type(result).__name__}",
                        "return (loss_tensor, metrics)",
                    )
                loss = loss_tensor(result, f"regularizer {spec.name!r}")
                metrics = _metrics(result[1] or {}, f"regularizer {spec.name!r} metric")
                value = to_float(loss, f"regularizer {spec.name!r}")
                grads = _grads(loss, batch.logprobs, retain=False) if grad_mode else None
        except Exception as exc:
            hooks.on_regularizer(
                RegularizerEvent(
                    name=spec.name,
                    phase="stop",
                    duration_s=time.perf_counter() - start,
                    value=None,
                    weight=spec.weight,
                )
            )
            raise RegularizerError(spec.name, exc) from exc
        duration = time.perf_counter() - start
        hooks.on_regularizer(
            RegularizerEvent(
                name=spec.name, phase="stop", duration_s=duration, value=value, weight=spec.weight
            )
        )
        return _Done(
            loss=loss.detach(), value=value, metrics=metrics, grads=grads, duration_s=duration
        )


def _metrics(raw: Mapping[str, Any], where: str) -> Metrics:
    if not isinstance(raw, Mapping):
        raise TinkexValidationError(
            where, f"metrics must be a mapping, got {type(raw).__name__}", None
        )
    return {str(k): to_float(v, f"{where} {k!r}") for k, v in raw.items()}
