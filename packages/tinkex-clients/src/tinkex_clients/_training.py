"""TrainingClient: forward/backward passes, optimizer steps, checkpoints of one model."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import structlog
from pydantic import BaseModel

from tinkex_clients._chunking import (
    DEFAULT_MAX_CHUNK_BYTES,
    DEFAULT_MAX_CHUNK_ITEMS,
    chunk_data,
    combine_forward_backward_outputs,
)
from tinkex_clients._future import APIFuture
from tinkex_clients._sampling import SamplingClient, create_sampling_client
from tinkex_clients._session import Session, parse_result
from tinkex_clients._tokenizers import resolve_tokenizer, tokenizer_id_for_model
from tinkex_clients._validate import (
    as_adam_params,
    as_checkpoint_name,
    as_data,
    as_loss_fn,
    as_loss_fn_config,
    as_tinker_path,
    as_ttl_seconds,
    check_loss_inputs,
)
from tinkex_http import RetryConfig
from tinkex_types import (
    AdamParams,
    APIStatusError,
    Datum,
    ForwardBackwardInput,
    ForwardBackwardOutput,
    ForwardBackwardRequest,
    ForwardRequest,
    GetInfoResponse,
    LoadWeightsRequest,
    LoadWeightsResponse,
    LossFnType,
    OptimStepRequest,
    OptimStepResponse,
    SaveWeightsForSamplerRequest,
    SaveWeightsForSamplerResponse,
    SaveWeightsRequest,
    SaveWeightsResponse,
    TensorData,
    TinkexError,
    TinkexValidationError,
    UnloadModelResponse,
)

if TYPE_CHECKING:  # pragma: no cover
    from tinkex_types import Tokenizer

__all__ = ["CustomLossFn", "TrainingClient", "require_torch_for_custom_loss"]

_log = structlog.get_logger("tinkex.clients.training")

_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)

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
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TinkexValidationError(
            f"metrics[{key!r}]",
            f"the custom loss returned a non-numeric metric {value!r}",
            "return numbers (or 0-d tensors) as metric values",
        ) from None


class TrainingClient:
    """Trains one LoRA model (one server-side training run).

    Every call returns at once with an :class:`APIFuture`; calls may be issued back to back
    (``forward_backward`` then ``optim_step``) and run on the server in call order: each
    request reserves its ``seq_id`` synchronously when the method is called, and a request
    is POSTed only after the previous one was accepted.

    ``max_chunk_items`` / ``max_chunk_bytes`` bound the size of one ``forward`` /
    ``forward_backward`` request; larger batches are split and the results combined.
    """

    def __init__(
        self,
        session: Session,
        *,
        model_id: str,
        model_seq_id: int | None = None,
        base_model: str | None = None,
    ) -> None:
        self._session = session
        self.model_id = model_id
        self.model_seq_id = model_seq_id
        self._base_model = base_model
        self.max_chunk_items = DEFAULT_MAX_CHUNK_ITEMS
        self.max_chunk_bytes = DEFAULT_MAX_CHUNK_BYTES
        # Request numbers: reserved in call order on any thread; seq_id = number + 1.
        self._reserve_lock = threading.Lock()
        self._next_number = 0
        # Turn bookkeeping, touched only on the background loop.
        self._turn = 0
        self._holding: int | None = None
        self._abandoned: set[int] = set()
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._tokenizer: Any = None
        # (seq_id, operation) of the highest-numbered request whose result arrived.
        self._last_completed: tuple[int, str] | None = None

    def __repr__(self) -> str:
        return f"TrainingClient(model_id={self.model_id!r})"

    @property
    def last_completed_seq_id(self) -> int | None:
        """The highest ``seq_id`` of this client whose result arrived (``None`` before the
        first); the step named when a request is lost by a server restart."""
        last = self._last_completed
        return None if last is None else last[0]

    async def _resolve(
        self,
        submitted: Any,
        result_type: type[_M],
        *,
        number: int,
        request_type: str,
        operation: str,
        started: float,
    ) -> _M:
        """Poll one submitted request; a lost future (410) becomes an error that names the
        request and the last one that completed."""
        try:
            result = await self._session.resolve(
                submitted,
                result_type,
                request_type=request_type,
                model_id=self.model_id,
                started=started,
            )
        except APIStatusError as exc:
            if exc.status_code != 410:
                raise
            raise type(exc)(
                self._lost_message(number + 1, operation),
                status_code=exc.status_code,
                request_id=exc.request_id,
                body=exc.body,
            ) from exc
        seq_id = number + 1
        if self._last_completed is None or seq_id > self._last_completed[0]:
            self._last_completed = (seq_id, operation)
        return result

    def _lost_message(self, seq_id: int, operation: str) -> str:
        last = self._last_completed
        done = (
            f"the last completed request of this client is seq_id {last[0]} ({last[1]})"
            if last is not None
            else "no request of this client had completed"
        )
        return (
            f"{operation} (seq_id {seq_id}) of model {self.model_id} was lost: the server "
            f"restarted before finishing it and will not run it (410); {done}. A restart "
            "keeps a model's state only up to its newest training checkpoint (the next "
            "request on this model names the seq_id it is back to): load a checkpoint with "
            "load_state_with_optimizer(path) and repeat the steps after it"
        )

    # -- ordering ---------------------------------------------------------------------------
    def _reserve(self, count: int) -> list[int]:
        with self._reserve_lock:
            start = self._next_number
            self._next_number += count
        return list(range(start, start + count))

    @property
    def next_seq_id(self) -> int:
        """The ``seq_id`` the next request will carry (the first after creation is 1)."""
        with self._reserve_lock:
            return self._next_number + 1

    def _advance(self) -> None:
        while self._turn in self._abandoned:
            self._abandoned.discard(self._turn)
            self._turn += 1
        waiter = self._waiters.pop(self._turn, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _abandon(self, numbers: Sequence[int]) -> None:
        """Give up numbers that will never be sent (failed or cancelled operations)."""
        for n in numbers:
            if n >= self._turn and n != self._holding:
                self._abandoned.add(n)
        self._advance()

    @contextlib.asynccontextmanager
    async def _turn_for(self, number: int) -> AsyncIterator[None]:
        if self._turn < number:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[number] = waiter
            try:
                await waiter
            except asyncio.CancelledError:
                self._waiters.pop(number, None)
                self._abandon([number])
                raise
        if self._turn != number:  # pragma: no cover - guarded by the reservation scheme
            raise RuntimeError(f"request {number} lost its turn (turn is {self._turn})")
        self._holding = number
        try:
            yield
        finally:
            self._holding = None
            self._turn = number + 1
            self._advance()

    def _launch(self, numbers: list[int], coro: Coroutine[Any, Any, _T]) -> APIFuture[_T]:
        fut = self._session.run(coro, "TrainingClient")
        if numbers:
            loop = self._session.loop_thread.loop

            def release(_f: object) -> None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._abandon, numbers)

            fut.future().add_done_callback(release)
        return fut

    async def _submit(
        self, number: int, path: str, body: dict[str, Any], request_type: str
    ) -> tuple[Any, float]:
        async with self._turn_for(number):
            started = time.monotonic()
            submitted = await self._session.post(path, body)
        return submitted, started

    async def _run_single(
        self,
        number: int,
        path: str,
        body: dict[str, Any],
        request_type: str,
        result_type: type[Any],
        operation: str,
        **span_attrs: Any,
    ) -> Any:
        session = self._session
        with session.span(operation, model_id=self.model_id, seq_id=number + 1, **span_attrs):
            submitted, started = await self._submit(number, path, body, request_type)
            return await self._resolve(
                submitted,
                result_type,
                number=number,
                request_type=request_type,
                operation=operation,
                started=started,
            )

    # -- forward / backward -------------------------------------------------------------------
    def _prepare(
        self, data: Any, loss_fn: Any, loss_fn_config: Any
    ) -> tuple[list[list[Datum]], str, dict[str, float] | None]:
        self._session.check_open("TrainingClient")
        datums = as_data(data)
        loss = as_loss_fn(loss_fn)
        config = as_loss_fn_config(loss_fn_config, loss_fn=loss)
        check_loss_inputs(datums, loss)
        return chunk_data(datums, self.max_chunk_items, self.max_chunk_bytes), loss, config

    async def _run_chunks(
        self,
        *,
        forward_only: bool,
        chunks: list[list[Datum]],
        numbers: list[int],
        loss_fn: str,
        loss_fn_config: dict[str, float] | None,
    ) -> ForwardBackwardOutput:
        request_type = "Forward" if forward_only else "ForwardBackward"
        path = "/api/v1/forward" if forward_only else "/api/v1/forward_backward"
        polls: list[asyncio.Task[ForwardBackwardOutput]] = []
        try:
            for number, chunk in zip(numbers, chunks, strict=True):
                fb_input = ForwardBackwardInput(
                    data=chunk,
                    loss_fn=loss_fn,  # type: ignore[arg-type]
                    loss_fn_config=loss_fn_config,
                )
                request: ForwardRequest | ForwardBackwardRequest
                if forward_only:
                    request = ForwardRequest(
                        forward_input=fb_input, model_id=self.model_id, seq_id=number + 1
                    )
                else:
                    request = ForwardBackwardRequest(
                        forward_backward_input=fb_input, model_id=self.model_id, seq_id=number + 1
                    )
                submitted, started = await self._submit(
                    number, path, request.to_json_dict(), request_type
                )
                polls.append(
                    asyncio.ensure_future(
                        self._resolve(
                            submitted,
                            ForwardBackwardOutput,
                            number=number,
                            request_type=request_type,
                            operation="forward" if forward_only else "forward_backward",
                            started=started,
                        )
                    )
                )
            outputs = await asyncio.gather(*polls)
        except BaseException:
            for task in polls:
                task.cancel()
            raise
        for chunk, out in zip(chunks, outputs, strict=True):
            if len(out.loss_fn_outputs) != len(chunk):
                raise TinkexError(
                    f"the server returned {len(out.loss_fn_outputs)} loss_fn_outputs for a "
                    f"chunk of {len(chunk)} datums"
                )
        return combine_forward_backward_outputs(list(outputs))

    async def _forward_op(
        self,
        operation: str,
        forward_only: bool,
        chunks: list[list[Datum]],
        numbers: list[int],
        loss_fn: str,
        loss_fn_config: dict[str, float] | None,
    ) -> ForwardBackwardOutput:
        with self._session.span(
            operation,
            model_id=self.model_id,
            loss_fn=loss_fn,
            chunks=len(chunks),
            datums=sum(len(c) for c in chunks),
            first_seq_id=numbers[0] + 1,
        ):
            return await self._run_chunks(
                forward_only=forward_only,
                chunks=chunks,
                numbers=numbers,
                loss_fn=loss_fn,
                loss_fn_config=loss_fn_config,
            )

    def forward(
        self,
        data: list[Datum],
        loss_fn: LossFnType,
        loss_fn_config: dict[str, float] | None = None,
    ) -> APIFuture[ForwardBackwardOutput]:
        """Compute the loss and per-token logprobs without accumulating gradients."""
        chunks, loss, config = self._prepare(data, loss_fn, loss_fn_config)
        numbers = self._reserve(len(chunks))
        return self._launch(
            numbers, self._forward_op("forward", True, chunks, numbers, loss, config)
        )

    async def forward_async(
        self,
        data: list[Datum],
        loss_fn: LossFnType,
        loss_fn_config: dict[str, float] | None = None,
    ) -> APIFuture[ForwardBackwardOutput]:
        """Async version of :meth:`forward` (returns the future; ``await`` it for the result)."""
        return self.forward(data, loss_fn, loss_fn_config)

    def forward_backward(
        self,
        data: list[Datum],
        loss_fn: LossFnType,
        loss_fn_config: dict[str, float] | None = None,
    ) -> APIFuture[ForwardBackwardOutput]:
        """Compute the loss and accumulate its gradient (applied by :meth:`optim_step`)."""
        chunks, loss, config = self._prepare(data, loss_fn, loss_fn_config)
        numbers = self._reserve(len(chunks))
        return self._launch(
            numbers, self._forward_op("forward_backward", False, chunks, numbers, loss, config)
        )

    async def forward_backward_async(
        self,
        data: list[Datum],
        loss_fn: LossFnType,
        loss_fn_config: dict[str, float] | None = None,
    ) -> APIFuture[ForwardBackwardOutput]:
        """Async version of :meth:`forward_backward` (returns the future)."""
        return self.forward_backward(data, loss_fn, loss_fn_config)

    # -- custom loss ----------------------------------------------------------------------------
    def _prepare_custom(
        self, data: Any, loss_fn: Any, loss_type_input: Any
    ) -> tuple[list[Datum], list[list[Datum]]]:
        self._session.check_open("TrainingClient")
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
        forward_data: list[Datum] = []
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
            forward_data.append(
                Datum(
                    model_input=datum.model_input,
                    loss_fn_inputs={"target_tokens": target, "weights": weights},
                )
            )
        check_loss_inputs(forward_data, "cross_entropy")
        return datums, chunk_data(forward_data, self.max_chunk_items, self.max_chunk_bytes)

    def forward_backward_custom(
        self,
        data: list[Datum],
        loss_fn: CustomLossFn,
        *,
        loss_type_input: Literal["logprobs"] = "logprobs",
    ) -> APIFuture[ForwardBackwardOutput]:
        """Train on a loss computed here with torch from the model's per-token logprobs.

        A ``forward`` returns the logprobs of every ``target_tokens`` entry; ``loss_fn(data,
        logprobs)`` returns ``(loss, metrics)``; the gradient ``d loss / d logprobs`` is sent
        back as the weights of a ``cross_entropy`` ``forward_backward`` (whose gradient is
        then exactly the custom loss's). The result carries the server's metrics with the
        user's metrics merged over them. Needs torch (``tinkex-clients[torch]``).
        """
        torch = require_torch_for_custom_loss()
        datums, chunks = self._prepare_custom(data, loss_fn, loss_type_input)
        forward_numbers = self._reserve(len(chunks))
        backward_numbers = self._reserve(len(chunks))
        return self._launch(
            forward_numbers + backward_numbers,
            self._custom(torch, datums, chunks, forward_numbers, backward_numbers, loss_fn),
        )

    async def forward_backward_custom_async(
        self,
        data: list[Datum],
        loss_fn: CustomLossFn,
        *,
        loss_type_input: Literal["logprobs"] = "logprobs",
    ) -> APIFuture[ForwardBackwardOutput]:
        """Async version of :meth:`forward_backward_custom` (returns the future)."""
        return self.forward_backward_custom(data, loss_fn, loss_type_input=loss_type_input)

    async def _custom(
        self,
        torch: Any,
        datums: list[Datum],
        chunks: list[list[Datum]],
        forward_numbers: list[int],
        backward_numbers: list[int],
        loss_fn: CustomLossFn,
    ) -> ForwardBackwardOutput:
        with self._session.span(
            "forward_backward_custom",
            model_id=self.model_id,
            chunks=len(chunks),
            datums=len(datums),
            first_seq_id=forward_numbers[0] + 1,
        ):
            forward = await self._run_chunks(
                forward_only=True,
                chunks=chunks,
                numbers=forward_numbers,
                loss_fn="cross_entropy",
                loss_fn_config=None,
            )
            try:
                grads, metrics = await asyncio.to_thread(
                    _custom_gradients, torch, datums, forward, loss_fn
                )
            except Exception:
                # Keep the server's seq_id sequence gap-free: fill the backward slots with
                # side-effect-free forward requests, then report the loss error.
                await self._fill_slots(chunks, backward_numbers)
                raise
            backward_chunks: list[list[Datum]] = []
            position = 0
            for chunk in chunks:
                rows: list[Datum] = []
                for datum in chunk:
                    rows.append(
                        Datum(
                            model_input=datum.model_input,
                            loss_fn_inputs={
                                "target_tokens": datum.loss_fn_inputs["target_tokens"],
                                "weights": grads[position],
                            },
                        )
                    )
                    position += 1
                backward_chunks.append(rows)
            result = await self._run_chunks(
                forward_only=False,
                chunks=backward_chunks,
                numbers=backward_numbers,
                loss_fn="cross_entropy",
                loss_fn_config=None,
            )
        merged = dict(result.metrics)
        merged.update(metrics)
        return result.model_copy(update={"metrics": merged})

    async def _fill_slots(self, chunks: list[list[Datum]], numbers: list[int]) -> None:
        for number, chunk in zip(numbers, chunks, strict=True):
            request = ForwardRequest(
                forward_input=ForwardBackwardInput(data=chunk, loss_fn="cross_entropy"),
                model_id=self.model_id,
                seq_id=number + 1,
            )
            with contextlib.suppress(Exception):
                await self._submit(number, "/api/v1/forward", request.to_json_dict(), "Forward")

    # -- optimizer and weights ------------------------------------------------------------------
    def optim_step(self, adam_params: AdamParams) -> APIFuture[OptimStepResponse]:
        """Apply one AdamW step with the accumulated gradient (then cleared)."""
        self._session.check_open("TrainingClient")
        params = as_adam_params(adam_params)
        (number,) = self._reserve(1)
        body = OptimStepRequest(
            adam_params=params, model_id=self.model_id, seq_id=number + 1
        ).to_json_dict()
        return self._launch(
            [number],
            self._run_single(
                number,
                "/api/v1/optim_step",
                body,
                "OptimStep",
                OptimStepResponse,
                "optim_step",
                learning_rate=params.learning_rate,
            ),
        )

    async def optim_step_async(self, adam_params: AdamParams) -> APIFuture[OptimStepResponse]:
        """Async version of :meth:`optim_step` (returns the future)."""
        return self.optim_step(adam_params)

    def save_state(
        self, name: str, ttl_seconds: int | None = None
    ) -> APIFuture[SaveWeightsResponse]:
        """Save weights and optimizer state as ``tinker://<model_id>/weights/<name>``."""
        self._session.check_open("TrainingClient")
        checkpoint = as_checkpoint_name(name)
        ttl = as_ttl_seconds(ttl_seconds)
        (number,) = self._reserve(1)
        body = SaveWeightsRequest(
            model_id=self.model_id, path=checkpoint, seq_id=number + 1, ttl_seconds=ttl
        ).to_json_dict()
        return self._launch(
            [number],
            self._run_single(
                number,
                "/api/v1/save_weights",
                body,
                "SaveWeights",
                SaveWeightsResponse,
                "save_state",
                checkpoint=checkpoint,
            ),
        )

    async def save_state_async(
        self, name: str, ttl_seconds: int | None = None
    ) -> APIFuture[SaveWeightsResponse]:
        return self.save_state(name, ttl_seconds)

    def _load(self, path: Any, optimizer: bool) -> APIFuture[LoadWeightsResponse]:
        self._session.check_open("TrainingClient")
        parsed = as_tinker_path(path, "path", kind="weights")
        (number,) = self._reserve(1)
        body = LoadWeightsRequest(
            model_id=self.model_id, path=str(parsed), optimizer=optimizer, seq_id=number + 1
        ).to_json_dict()
        return self._launch(
            [number],
            self._run_single(
                number,
                "/api/v1/load_weights",
                body,
                "LoadWeights",
                LoadWeightsResponse,
                "load_state_with_optimizer" if optimizer else "load_state",
                checkpoint=str(parsed),
            ),
        )

    def load_state(self, path: str) -> APIFuture[LoadWeightsResponse]:
        """Load weights from a ``tinker://…/weights/…`` checkpoint (fresh optimizer state)."""
        return self._load(path, False)

    async def load_state_async(self, path: str) -> APIFuture[LoadWeightsResponse]:
        return self.load_state(path)

    def load_state_with_optimizer(self, path: str) -> APIFuture[LoadWeightsResponse]:
        """Load weights and the Adam state from a ``tinker://…/weights/…`` checkpoint."""
        return self._load(path, True)

    async def load_state_with_optimizer_async(self, path: str) -> APIFuture[LoadWeightsResponse]:
        return self.load_state_with_optimizer(path)

    def save_weights_for_sampler(
        self, name: str, ttl_seconds: int | None = None
    ) -> APIFuture[SaveWeightsForSamplerResponse]:
        """Save sampler weights as ``tinker://<model_id>/sampler_weights/<name>``."""
        self._session.check_open("TrainingClient")
        checkpoint = as_checkpoint_name(name)
        ttl = as_ttl_seconds(ttl_seconds)
        (number,) = self._reserve(1)
        body = SaveWeightsForSamplerRequest(
            model_id=self.model_id, path=checkpoint, seq_id=number + 1, ttl_seconds=ttl
        ).to_json_dict()

        async def run() -> SaveWeightsForSamplerResponse:
            result: SaveWeightsForSamplerResponse = await self._run_single(
                number,
                "/api/v1/save_weights_for_sampler",
                body,
                "SaveWeightsForSampler",
                SaveWeightsForSamplerResponse,
                "save_weights_for_sampler",
                checkpoint=checkpoint,
            )
            if result.path is None:
                raise TinkexError(
                    f"the server saved sampler weights {checkpoint!r} but returned no path"
                )
            return result

        return self._launch([number], run())

    async def save_weights_for_sampler_async(
        self, name: str, ttl_seconds: int | None = None
    ) -> APIFuture[SaveWeightsForSamplerResponse]:
        return self.save_weights_for_sampler(name, ttl_seconds)

    def save_weights_and_get_sampling_client_submit(
        self, retry_config: RetryConfig | None = None, name: str | None = None
    ) -> APIFuture[SamplingClient]:
        """Save the current weights for sampling and return a future of a SamplingClient.

        Without ``name`` the save is ephemeral (not listed as a checkpoint); with ``name``
        the weights are also kept as ``tinker://<model_id>/sampler_weights/<name>``.
        """
        self._session.check_open("TrainingClient")
        checkpoint = None if name is None else as_checkpoint_name(name)
        _check_retry_config(retry_config)
        (number,) = self._reserve(1)
        return self._launch([number], self._save_and_sample(number, checkpoint, retry_config))

    async def _save_and_sample(
        self, number: int, name: str | None, retry_config: RetryConfig | None
    ) -> SamplingClient:
        session = self._session
        if name is None:
            request = SaveWeightsForSamplerRequest(
                model_id=self.model_id,
                sampling_session_seq_id=session.next_sampling_session_seq_id(),
                seq_id=number + 1,
            )
        else:
            request = SaveWeightsForSamplerRequest(
                model_id=self.model_id, path=name, seq_id=number + 1
            )
        result: SaveWeightsForSamplerResponse = await self._run_single(
            number,
            "/api/v1/save_weights_for_sampler",
            request.to_json_dict(),
            "SaveWeightsForSampler",
            SaveWeightsForSamplerResponse,
            "save_weights_and_get_sampling_client",
        )
        base_model = self._base_model
        if result.sampling_session_id is not None and name is None:
            return SamplingClient(
                session,
                sampling_session_id=result.sampling_session_id,
                retry_config=retry_config,
                base_model=base_model,
            )
        if result.path is not None:
            return await create_sampling_client(
                session, model_path=result.path, retry_config=retry_config
            )
        if result.sampling_session_id is not None:
            return SamplingClient(
                session,
                sampling_session_id=result.sampling_session_id,
                retry_config=retry_config,
                base_model=base_model,
            )
        raise TinkexError(
            "save_weights_for_sampler returned neither a sampling_session_id nor a path"
        )

    def save_weights_and_get_sampling_client(
        self, name: str | None = None, retry_config: RetryConfig | None = None
    ) -> SamplingClient:
        """Save the current weights and return a SamplingClient serving them (blocks)."""
        return self.save_weights_and_get_sampling_client_submit(retry_config, name).result()

    async def save_weights_and_get_sampling_client_async(
        self, name: str | None = None, retry_config: RetryConfig | None = None
    ) -> SamplingClient:
        return await self.save_weights_and_get_sampling_client_submit(retry_config, name)

    def create_sampling_client(
        self, model_path: str, retry_config: RetryConfig | None = None
    ) -> SamplingClient:
        """A SamplingClient for saved weights (``tinker://…``)."""
        return self._session.call(self._create_sampler(model_path, retry_config), "TrainingClient")

    async def create_sampling_client_async(
        self, model_path: str, retry_config: RetryConfig | None = None
    ) -> SamplingClient:
        return await self._session.bridge(
            self._create_sampler(model_path, retry_config), "TrainingClient"
        )

    def _create_sampler(
        self, model_path: str, retry_config: RetryConfig | None
    ) -> Coroutine[Any, Any, SamplingClient]:
        self._session.check_open("TrainingClient")
        parsed = as_tinker_path(model_path, "model_path")
        _check_retry_config(retry_config)
        return create_sampling_client(
            self._session, model_path=str(parsed), retry_config=retry_config
        )

    # -- info ---------------------------------------------------------------------------------
    async def _get_info(self) -> GetInfoResponse:
        with self._session.span("get_info", model_id=self.model_id):
            body = await self._session.post("/api/v1/get_info", {"model_id": self.model_id})
        info = parse_result(body, GetInfoResponse, what="get_info")
        if self._base_model is None:
            self._base_model = info.model_data.model_name or info.model_name
        return info

    def get_info(self) -> GetInfoResponse:
        """Model metadata: base model, architecture, tokenizer id, LoRA rank."""
        self._session.check_open("TrainingClient")
        return self._session.call(self._get_info(), "TrainingClient")

    async def get_info_async(self) -> GetInfoResponse:
        self._session.check_open("TrainingClient")
        return await self._session.bridge(self._get_info(), "TrainingClient")

    def get_base_model(self) -> str:
        """The base model name (from ``get_info`` when not already known)."""
        if self._base_model is None:
            self.get_info()
        if self._base_model is None:
            raise TinkexError(f"the server did not report the base model of {self.model_id}")
        return self._base_model

    def _tokenizer_names(self, info: GetInfoResponse) -> tuple[str, tuple[str, ...]]:
        model_name = info.model_data.model_name or info.model_name or self._base_model or ""
        primary = tokenizer_id_for_model(model_name, info.model_data.tokenizer_id)
        fallback = tokenizer_id_for_model(model_name) if model_name else ""
        return primary, (fallback,)

    def get_tokenizer(self) -> Tokenizer:
        """The model's tokenizer (resolved through the ``tinkex_resolve_tokenizer`` hook)."""
        if self._tokenizer is None:
            primary, fallbacks = self._tokenizer_names(self.get_info())
            self._tokenizer = resolve_tokenizer(primary, self._session.hooks, fallbacks)
        return self._tokenizer  # type: ignore[no-any-return]

    async def get_tokenizer_async(self) -> Tokenizer:
        if self._tokenizer is None:
            primary, fallbacks = self._tokenizer_names(await self.get_info_async())
            self._tokenizer = await asyncio.to_thread(
                resolve_tokenizer, primary, self._session.hooks, fallbacks
            )
        return self._tokenizer  # type: ignore[no-any-return]

    def unload_model(self) -> APIFuture[UnloadModelResponse]:
        """Ask the server to release this model (after the requests already issued)."""
        self._session.check_open("TrainingClient")
        (number,) = self._reserve(1)

        async def run() -> UnloadModelResponse:
            session = self._session
            with session.span("unload_model", model_id=self.model_id):
                submitted, started = await self._submit(
                    number, "/api/v1/unload_model", {"model_id": self.model_id}, "UnloadModel"
                )
                return await session.resolve(
                    submitted,
                    UnloadModelResponse,
                    request_type="UnloadModel",
                    model_id=self.model_id,
                    started=started,
                )

        return self._launch([number], run())

    unload = unload_model

    async def unload_model_async(self) -> APIFuture[UnloadModelResponse]:
        return self.unload_model()

    def get_telemetry(self) -> Any | None:
        """The session's telemetry handle (a backend reporter when tinkex-telemetry is
        installed), as in the official SDK; ``None`` without one."""
        return self._session.telemetry


def _check_retry_config(retry_config: Any) -> None:
    if retry_config is not None and not isinstance(retry_config, RetryConfig):
        raise TinkexValidationError(
            "retry_config",
            f"must be a tinkex RetryConfig or None, got {type(retry_config).__name__}",
        )


def _custom_gradients(
    torch: Any,
    datums: list[Datum],
    forward: ForwardBackwardOutput,
    loss_fn: CustomLossFn,
) -> tuple[list[TensorData], dict[str, float]]:
    """Run the user's loss on the forward logprobs; return ``-d loss / d logprobs`` per datum
    (as float32 TensorData shaped like each ``target_tokens``) and the user's metrics."""
    logprobs: list[Any] = []
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
        logprobs.append(tensor.reshape(target_shape).clone().detach().requires_grad_(True))
    returned = loss_fn(list(datums), logprobs)
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
    loss.backward()
    grads: list[TensorData] = []
    for lp in logprobs:
        grad = lp.grad if lp.grad is not None else torch.zeros_like(lp)
        grads.append(TensorData.from_torch((-grad).detach().to(torch.float32)))
    if metrics is None:
        metrics = {}
    if not isinstance(metrics, Mapping):
        raise TinkexValidationError(
            "loss_fn", f"metrics must be a mapping of str to float, got {type(metrics).__name__}"
        )
    return grads, {str(k): _metric_value(str(k), v) for k, v in metrics.items()}


def _numel(shape: list[int]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total
