"""``forward_backward_custom``: a loss computed here with torch from the model's logprobs.

A ``forward`` returns the logprobs of every ``target_tokens`` entry; ``loss_fn(data,
logprobs)`` returns ``(loss, metrics)``; the gradient ``-d loss / d logprobs`` goes back as
the weights of a ``cross_entropy`` ``forward_backward``, whose gradient is then exactly the
custom loss's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any, Literal

from tinkex_clients._chunking import chunk_data
from tinkex_clients._custom_loss_graph import HandleLossOps, LossHandle
from tinkex_clients._future import APIFuture
from tinkex_clients._training_forward import wire_inputs
from tinkex_clients._validate import as_data, check_loss_inputs
from tinkex_types import (
    Datum,
    ForwardBackwardInput,
    ForwardBackwardOutput,
    ForwardRequest,
    TensorData,
    TinkexError,
    TinkexValidationError,
)

__all__ = ["CustomLossFn", "CustomLossOps", "custom_gradients", "require_torch_for_custom_loss"]

#: ``loss_fn(data, logprobs) -> (loss, metrics)``: ``logprobs`` is one torch tensor per
#: datum (shape of its ``target_tokens``); ``loss`` a torch scalar (non-scalars are summed).
CustomLossFn = Callable[[list[Datum], list[Any]], tuple[Any, Mapping[str, Any]]]


def require_torch_for_custom_loss() -> Any:
    """Import torch or raise an ImportError naming the extra to install."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            "forward_backward_custom needs PyTorch, which is not installed: "
            "pip install 'tinkex-clients[torch]' (or `pip install torch`)"
        ) from exc
    return torch


def _metric_value(key: str, value: Any) -> float:
    item = getattr(value, "item", None)
    if callable(item):
        value = item()
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TinkexValidationError(
            f"metrics[{key!r}]",
            f"the custom loss returned a non-numeric metric {value!r}",
            "return numbers (or 0-d tensors) as metric values",
        ) from None


def _numel(shape: list[int]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


def _logprob_leaves(torch: Any, datums: list[Datum], forward: ForwardBackwardOutput) -> list[Any]:
    """The forward logprobs of each datum as a leaf tensor shaped like its targets."""
    leaves: list[Any] = []
    for i, (datum, out) in enumerate(zip(datums, forward.loss_fn_outputs, strict=True)):
        lp = out.get("logprobs")
        if lp is None:
            raise TinkexError(f"the forward pass returned no logprobs for datum {i}")
        tensor = lp.to_torch().to(torch.float32)
        target_shape = datum.loss_fn_inputs["target_tokens"].effective_shape
        if tensor.numel() != _numel(target_shape):
            raise TinkexError(
                f"the forward pass returned {tensor.numel()} logprobs for datum {i}, whose "
                f"target_tokens has shape {target_shape}"
            )
        leaves.append(tensor.reshape(target_shape).clone().detach().requires_grad_(True))
    return leaves


def _checked_loss(torch: Any, returned: Any) -> tuple[Any, Any]:
    """``(loss, metrics)`` of the user's loss function, the loss summed to a scalar."""
    if not isinstance(returned, tuple) or len(returned) != 2:
        raise TinkexValidationError(
            "loss_fn",
            f"must return (loss, metrics), got {type(returned).__name__}",
            "return a torch scalar and a dict of float metrics",
        )
    loss, metrics = returned
    if not isinstance(loss, torch.Tensor):
        raise TinkexValidationError(
            "loss_fn", f"must return a torch tensor loss, got {type(loss).__name__}"
        )
    if loss.dim() > 0:
        loss = loss.sum()
    if not loss.requires_grad:
        raise TinkexValidationError(
            "loss_fn",
            "the returned loss does not depend on the logprobs (it has no gradient)",
            "compute the loss from the logprob tensors passed to loss_fn",
        )
    if metrics is not None and not isinstance(metrics, Mapping):
        raise TinkexValidationError(
            "loss_fn", f"metrics must be a mapping of str to float, got {type(metrics).__name__}"
        )
    return loss, metrics or {}


def custom_gradients(
    torch: Any,
    datums: list[Datum],
    forward: ForwardBackwardOutput,
    loss_fn: CustomLossFn,
) -> tuple[list[TensorData], dict[str, float]]:
    """Run the user's loss on the forward logprobs; return ``-d loss / d logprobs`` per datum
    (as float32 TensorData shaped like each ``target_tokens``) and the user's metrics."""
    logprobs = _logprob_leaves(torch, datums, forward)
    loss, metrics = _checked_loss(torch, loss_fn(list(datums), logprobs))
    loss.backward()
    grads: list[TensorData] = []
    for lp in logprobs:
        grad = lp.grad if lp.grad is not None else torch.zeros_like(lp)
        grads.append(TensorData.from_torch((-grad).detach().to(torch.float32)))
    return grads, {str(k): _metric_value(str(k), v) for k, v in metrics.items()}


def _forward_datums(datums: list[Datum]) -> list[Datum]:
    """The ``cross_entropy`` forward data of a custom loss: targets, zero weights."""
    out: list[Datum] = []
    for i, datum in enumerate(datums):
        target = datum.loss_fn_inputs.get("target_tokens")
        if target is None:
            raise TinkexValidationError(
                f"data[{i}].loss_fn_inputs.target_tokens",
                "is missing (a custom loss needs the target token of every position)",
            )
        weights = datum.loss_fn_inputs.get("weights")
        if weights is None:
            weights = TensorData(
                data=[0.0] * target.size, dtype="float32", shape=target.effective_shape
            )
        out.append(
            Datum(
                model_input=datum.model_input,
                loss_fn_inputs={"target_tokens": target, "weights": weights},
            )
        )
    return out


def _backward_inputs(
    inputs: list[ForwardBackwardInput], grads: list[TensorData]
) -> list[ForwardBackwardInput]:
    """The forward chunks again, each datum weighted by its gradient."""
    grad_iter = iter(grads)
    return [
        ForwardBackwardInput(
            data=[
                Datum(
                    model_input=datum.model_input,
                    loss_fn_inputs={
                        "target_tokens": datum.loss_fn_inputs["target_tokens"],
                        "weights": next(grad_iter),
                    },
                )
                for datum in fb_input.data
            ],
            loss_fn="cross_entropy",
        )
        for fb_input in inputs
    ]


class CustomLossOps(HandleLossOps):
    """``forward_backward_custom`` of :class:`TrainingClient`."""

    def _prepare_custom(
        self, data: Any, loss_fn: Any, loss_type_input: Any
    ) -> tuple[list[Datum], list[ForwardBackwardInput]]:
        self._check_open()
        if loss_type_input != "logprobs":
            raise TinkexValidationError(
                "loss_type_input", f"unsupported value {loss_type_input!r}", "use 'logprobs'"
            )
        if not callable(loss_fn):
            raise TinkexValidationError(
                "loss_fn",
                f"must be a callable loss_fn(data, logprobs) -> (loss, metrics), got "
                f"{type(loss_fn).__name__}",
                "for a built-in loss use forward_backward(data, 'cross_entropy')",
            )
        datums = as_data(data)
        forward_data = _forward_datums(datums)
        check_loss_inputs(forward_data, "cross_entropy")
        chunks = chunk_data(forward_data, self.max_chunk_items, self.max_chunk_bytes)
        return datums, wire_inputs(chunks, "cross_entropy", None)

    def forward_backward_custom(
        self,
        data: list[Datum],
        loss_fn: CustomLossFn | LossHandle,
        *,
        loss_type_input: Literal["logprobs"] = "logprobs",
    ) -> APIFuture[ForwardBackwardOutput]:
        """Train on a loss computed here with torch from the model's per-token logprobs.

        A ``forward`` returns the logprobs of every ``target_tokens`` entry; ``loss_fn(data,
        logprobs)`` returns ``(loss, metrics)``; the gradient ``d loss / d logprobs`` is sent
        back as the weights of a ``cross_entropy`` ``forward_backward`` (whose gradient is
        then exactly the custom loss's). The result carries the server's metrics with the
        user's metrics merged over them. Needs torch (``tinkex-clients[torch]``).

        ``loss_fn`` may also be a :class:`LossHandle` of ``ServiceClient.create_custom_loss``:
        when the server holds it (``loss_id``), the data is sent unchanged and the loss runs
        in one server-side ``forward_backward``; otherwise the traced loss runs here.
        """
        if isinstance(loss_fn, LossHandle):  # create_custom_loss (tinker 0.38)
            return self._forward_backward_handle(data, loss_fn, self.forward_backward_custom)
        torch = require_torch_for_custom_loss()
        datums, inputs = self._prepare_custom(data, loss_fn, loss_type_input)
        forward_numbers = self._reserve(len(inputs))
        backward_numbers = self._reserve(len(inputs))
        return self._launch(
            forward_numbers + backward_numbers,
            self._custom(torch, datums, inputs, forward_numbers, backward_numbers, loss_fn),
        )

    async def forward_backward_custom_async(
        self,
        data: list[Datum],
        loss_fn: CustomLossFn | LossHandle,
        *,
        loss_type_input: Literal["logprobs"] = "logprobs",
    ) -> APIFuture[ForwardBackwardOutput]:
        """Async version of :meth:`forward_backward_custom` (returns the future)."""
        return self.forward_backward_custom(data, loss_fn, loss_type_input=loss_type_input)

    async def _custom(
        self,
        torch: Any,
        datums: list[Datum],
        inputs: list[ForwardBackwardInput],
        forward_numbers: list[int],
        backward_numbers: list[int],
        loss_fn: CustomLossFn,
    ) -> ForwardBackwardOutput:
        with self._session.span(
            "forward_backward_custom",
            model_id=self.model_id,
            chunks=len(inputs),
            datums=len(datums),
            first_seq_id=forward_numbers[0] + 1,
        ):
            forward = await self._run_chunks(
                forward_only=True, inputs=inputs, numbers=forward_numbers
            )
            try:
                grads, metrics = await asyncio.to_thread(
                    custom_gradients, torch, datums, forward, loss_fn
                )
            except Exception:
                # Keep the server's seq_id sequence gap-free: fill the backward slots with
                # side-effect-free forward requests, then report the loss error.
                await self._fill_slots(inputs, backward_numbers)
                raise
            result = await self._run_chunks(
                forward_only=False,
                inputs=_backward_inputs(inputs, grads),
                numbers=backward_numbers,
            )
        merged = dict(result.metrics)
        merged.update(metrics)
        return result.model_copy(update={"metrics": merged})

    async def _fill_slots(self, inputs: list[ForwardBackwardInput], numbers: list[int]) -> None:
        for number, fb_input in zip(numbers, inputs, strict=True):
            request = ForwardRequest(
                forward_input=fb_input, model_id=self.model_id, seq_id=number + 1
            )
            with contextlib.suppress(Exception):
                await self._submit_chunk(number, request, "Forward")
