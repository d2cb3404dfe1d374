"""``forward`` and ``forward_backward``: validated, split into chunks, one request per chunk
sent in seq_id order, the chunk results combined."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from tinkex_clients._chunking import chunk_data, combine_forward_backward_outputs
from tinkex_clients._future import APIFuture
from tinkex_clients._training_core import TrainingCore
from tinkex_clients._usage import ledger_of
from tinkex_clients._validate import as_data, as_loss_fn, as_loss_fn_config, check_loss_inputs
from tinkex_types import (
    CUSTOM_LOSS_FN,
    LOSSES,
    Datum,
    ForwardBackwardInput,
    ForwardBackwardOutput,
    ForwardBackwardRequest,
    ForwardRequest,
    LossFnType,
    TinkexError,
    TinkexValidationError,
)

__all__ = ["ForwardOps", "wire_inputs"]


def wire_inputs(
    chunks: list[list[Datum]], loss_fn: str, loss_fn_config: dict[str, float] | None
) -> list[ForwardBackwardInput]:
    """One :class:`ForwardBackwardInput` per chunk; a refusal of the wire model (a loss
    outside the loss table) is a :class:`TinkexValidationError` naming the field."""
    try:
        return [
            ForwardBackwardInput(data=chunk, loss_fn=loss_fn, loss_fn_config=loss_fn_config)
            for chunk in chunks
        ]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise TinkexValidationError(
            "loss_fn" if where.startswith("loss_fn") else f"forward_backward_input.{where}",
            f"cannot be sent: {first.get('msg', 'invalid value')}",
            f"use one of {', '.join(LOSSES)}",
        ) from None


def custom_loss_id(config: Any) -> str:
    """The ``loss_id`` of ``forward_backward(data, "custom", {"loss_id": ...})``."""
    loss_id = config.get("loss_id") if isinstance(config, Mapping) else None
    if not isinstance(loss_id, str) or not loss_id:
        raise TinkexValidationError(
            "loss_fn_config['loss_id']",
            f"loss_fn 'custom' needs the loss_id of a created loss, got {config!r}",
            "pass {'loss_id': handle.loss_id} from ServiceClient.create_custom_loss, or the "
            "LossHandle itself to forward_backward_custom",
        )
    extra = sorted(str(k) for k in config if k != "loss_id")
    if extra:
        raise TinkexValidationError(
            "loss_fn_config", f"loss_fn 'custom' takes only loss_id, got also {extra}"
        )
    return loss_id


class ForwardOps(TrainingCore):
    """The forward passes of :class:`TrainingClient`."""

    def _prepare(
        self, data: Any, loss_fn: Any, loss_fn_config: Any
    ) -> tuple[list[ForwardBackwardInput], str]:
        self._check_open()
        datums = as_data(data)
        if loss_fn == CUSTOM_LOSS_FN:  # tinker 0.38: a created loss named by its loss_id
            loss_id = custom_loss_id(loss_fn_config)
            chunks = chunk_data(datums, self.max_chunk_items, self.max_chunk_bytes)
            config_v2: dict[str, float | str] = {"loss_id": loss_id}
            return [
                ForwardBackwardInput(data=c, loss_fn=CUSTOM_LOSS_FN, loss_fn_config_v2=config_v2)
                for c in chunks
            ], CUSTOM_LOSS_FN
        loss = as_loss_fn(loss_fn)
        config = as_loss_fn_config(loss_fn_config, loss_fn=loss)
        check_loss_inputs(datums, loss)
        chunks = chunk_data(datums, self.max_chunk_items, self.max_chunk_bytes)
        return wire_inputs(chunks, loss, config), loss

    def _request(
        self, forward_only: bool, fb_input: ForwardBackwardInput, number: int
    ) -> ForwardRequest | ForwardBackwardRequest:
        if forward_only:
            return ForwardRequest(forward_input=fb_input, model_id=self.model_id, seq_id=number + 1)
        return ForwardBackwardRequest(
            forward_backward_input=fb_input, model_id=self.model_id, seq_id=number + 1
        )

    async def _submit_chunk(
        self, number: int, request: ForwardRequest | ForwardBackwardRequest, request_type: str
    ) -> tuple[Any, float]:
        """Send one chunk in ``number``'s turn, in the generation the session negotiated
        (protobuf or JSON, see :meth:`Session.submit_forward`)."""
        async with self._turnstile.turn(number):
            started = time.monotonic()
            submitted = await self._session.submit_forward(request, request_type=request_type)
        return submitted, started

    async def _run_chunks(
        self, *, forward_only: bool, inputs: list[ForwardBackwardInput], numbers: list[int]
    ) -> ForwardBackwardOutput:
        """Send every chunk in its turn (each is polled as soon as it is accepted), then
        combine the results in chunk order."""
        request_type = "Forward" if forward_only else "ForwardBackward"
        operation = "forward" if forward_only else "forward_backward"
        polls: list[asyncio.Task[ForwardBackwardOutput]] = []
        try:
            for number, fb_input in zip(numbers, inputs, strict=True):
                request = self._request(forward_only, fb_input, number)
                submitted, started = await self._submit_chunk(number, request, request_type)
                poll = self._resolve(
                    submitted,
                    ForwardBackwardOutput,
                    number=number,
                    request_type=request_type,
                    operation=operation,
                    started=started,
                )
                polls.append(asyncio.ensure_future(poll))
            outputs = await asyncio.gather(*polls)
        except BaseException:
            for task in polls:
                task.cancel()
            raise
        for fb_input, out in zip(inputs, outputs, strict=True):
            if len(out.loss_fn_outputs) != len(fb_input.data):
                raise TinkexError(
                    f"the server returned {len(out.loss_fn_outputs)} loss_fn_outputs for a "
                    f"chunk of {len(fb_input.data)} datums"
                )
        usage = ledger_of(self._session)
        usage.forward(self.model_id, self._base_model, inputs, backward=not forward_only)
        return combine_forward_backward_outputs(list(outputs))

    async def _forward_op(
        self,
        operation: str,
        forward_only: bool,
        inputs: list[ForwardBackwardInput],
        numbers: list[int],
        loss_fn: str,
    ) -> ForwardBackwardOutput:
        with self._session.span(
            operation,
            model_id=self.model_id,
            loss_fn=loss_fn,
            chunks=len(inputs),
            datums=sum(len(i.data) for i in inputs),
            first_seq_id=numbers[0] + 1,
        ):
            return await self._run_chunks(forward_only=forward_only, inputs=inputs, numbers=numbers)

    def _start_forward(
        self, operation: str, data: Any, loss_fn: Any, loss_fn_config: Any
    ) -> APIFuture[ForwardBackwardOutput]:
        inputs, loss = self._prepare(data, loss_fn, loss_fn_config)
        numbers = self._reserve(len(inputs))
        forward_only = operation == "forward"
        return self._launch(
            numbers, self._forward_op(operation, forward_only, inputs, numbers, loss)
        )

    def forward(
        self,
        data: list[Datum],
        loss_fn: LossFnType,
        loss_fn_config: Mapping[str, float | str] | None = None,
    ) -> APIFuture[ForwardBackwardOutput]:
        """Compute the loss and per-token logprobs without accumulating gradients."""
        return self._start_forward("forward", data, loss_fn, loss_fn_config)

    async def forward_async(
        self,
        data: list[Datum],
        loss_fn: LossFnType,
        loss_fn_config: Mapping[str, float | str] | None = None,
    ) -> APIFuture[ForwardBackwardOutput]:
        """Async version of :meth:`forward` (returns the future; ``await`` it for the result)."""
        return self.forward(data, loss_fn, loss_fn_config)

    def forward_backward(
        self,
        data: list[Datum],
        loss_fn: LossFnType,
        loss_fn_config: Mapping[str, float | str] | None = None,
    ) -> APIFuture[ForwardBackwardOutput]:
        """Compute the loss and accumulate its gradient (applied by :meth:`optim_step`)."""
        return self._start_forward("forward_backward", data, loss_fn, loss_fn_config)

    async def forward_backward_async(
        self,
        data: list[Datum],
        loss_fn: LossFnType,
        loss_fn_config: Mapping[str, float | str] | None = None,
    ) -> APIFuture[ForwardBackwardOutput]:
        """Async version of :meth:`forward_backward` (returns the future)."""
        return self.forward_backward(data, loss_fn, loss_fn_config)
