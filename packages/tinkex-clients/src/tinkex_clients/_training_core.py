"""The core every TrainingClient operation shares: the seq_id turnstile, launching an
operation on the background loop, sending one request in its turn and resolving its
future (a lost future, 410, names the request and the last one that completed)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from pydantic import BaseModel

from tinkex_clients._chunking import DEFAULT_MAX_CHUNK_BYTES, DEFAULT_MAX_CHUNK_ITEMS
from tinkex_clients._future import APIFuture
from tinkex_clients._retry_config import as_retry_config
from tinkex_clients._session import Session
from tinkex_clients._turnstile import Turnstile
from tinkex_clients._usage import ledger_of
from tinkex_http import RetryConfig
from tinkex_types import APIStatusError, GetInfoResponse, TinkexValidationError, WireModel

__all__ = ["TrainingCore", "check_retry_config"]

_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)


def check_retry_config(retry_config: Any) -> RetryConfig | None:
    """``None`` or a RetryConfig (an official tinker one is converted)."""
    return as_retry_config(retry_config)


class TrainingCore:
    """State and request plumbing of one training model (see :class:`TrainingClient`).

    Request numbers come from a :class:`Turnstile`; the ``seq_id`` sent is number + 1.
    """

    def __init__(
        self,
        session: Session,
        model_seq_id: int | None = None,
        model_id: str | None = None,
        *,
        base_model: str | None = None,
        info: GetInfoResponse | None = None,
    ) -> None:
        # tinker's order: (holder, model_seq_id, model_id, *, info).
        if not isinstance(model_id, str) or not model_id:
            raise TinkexValidationError(
                "model_id", f"must be the model's id, got {model_id!r}", "pass model_id=..."
            )
        if base_model is None and info is not None:
            base_model = info.model_data.model_name or info.model_name
        self._session = session
        self.model_id = model_id
        self.model_seq_id = model_seq_id
        self._base_model = base_model
        # The server's chunk flags (client/config) may lower the defaults.
        self.max_chunk_items, self.max_chunk_bytes = session.protocol.chunk_limits(
            DEFAULT_MAX_CHUNK_ITEMS, DEFAULT_MAX_CHUNK_BYTES
        )
        self._turnstile = Turnstile()
        self._tokenizer: Any = None
        # (seq_id, operation) of the highest-numbered request whose result arrived.
        self._last_completed: tuple[int, str] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r})"

    @property
    def last_completed_seq_id(self) -> int | None:
        """The highest ``seq_id`` of this client whose result arrived (``None`` before the
        first); the step named when a request is lost by a server restart."""
        last = self._last_completed
        return None if last is None else last[0]

    @property
    def next_seq_id(self) -> int:
        """The ``seq_id`` the next request will carry (the first after creation is 1)."""
        return self._turnstile.next_number + 1

    def _check_open(self) -> None:
        self._session.check_open("TrainingClient")

    def _reserve(self, count: int) -> list[int]:
        return self._turnstile.reserve(count)

    def _launch(self, numbers: list[int], coro: Coroutine[Any, Any, _T]) -> APIFuture[_T]:
        """Run ``coro`` on the background loop; when it ends, numbers it never sent are
        abandoned so later requests do not wait for them."""
        fut = self._session.run(coro, "TrainingClient")
        self._turnstile.abandon_when_done(fut.future(), numbers, self._session.loop_thread.loop)
        return fut

    async def _submit(
        self, number: int, path: str, body: dict[str, Any], request_type: str
    ) -> tuple[Any, float]:
        """POST ``body`` in ``number``'s turn (``x-tinker-request-type: request_type``);
        returns the submit answer and when it was sent."""
        async with self._turnstile.turn(number):
            started = time.monotonic()
            submitted = await self._session.post(path, body, request_type=request_type)
        return submitted, started

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

    async def _run_single(
        self,
        number: int,
        path: str,
        body: dict[str, Any],
        request_type: str,
        result_type: type[_M],
        operation: str,
        **span_attrs: Any,
    ) -> _M:
        """Send one request in its turn and resolve it, inside an operation span."""
        session = self._session
        with session.span(operation, model_id=self.model_id, seq_id=number + 1, **span_attrs):
            submitted, started = await self._submit(number, path, body, request_type)
            result = await self._resolve(
                submitted,
                result_type,
                number=number,
                request_type=request_type,
                operation=operation,
                started=started,
            )
        ledger_of(session).training_step(self.model_id, self._base_model, request_type)
        return result

    def _release(self, numbers: list[int]) -> None:
        """Abandon reserved numbers from any thread (their operation never launched)."""
        with contextlib.suppress(RuntimeError):
            self._session.loop_thread.loop.call_soon_threadsafe(self._turnstile.abandon, numbers)

    def _reserve_request(self, build: Callable[[int], WireModel]) -> tuple[int, dict[str, Any]]:
        """Reserve one number and build its request body with ``build(seq_id)`` (if that
        fails, the number is given up again)."""
        (number,) = self._reserve(1)
        try:
            return number, build(number + 1).to_json_dict()
        except BaseException:
            self._release([number])
            raise

    def _single(
        self,
        path: str,
        request_type: str,
        result_type: type[_M],
        operation: str,
        build: Callable[[int], WireModel],
        **span_attrs: Any,
    ) -> APIFuture[_M]:
        """Reserve one number, build the request with ``build(seq_id)`` and launch it."""
        number, body = self._reserve_request(build)
        return self._launch(
            [number],
            self._run_single(
                number, path, body, request_type, result_type, operation, **span_attrs
            ),
        )
