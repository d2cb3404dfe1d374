"""TrainingClient: forward/backward passes, optimizer steps, checkpoints of one model.

The class is assembled from parts, each in its own module: the request core and seq_id
turnstile (``_training_core``, ``_turnstile``), forward passes (``_training_forward``),
custom losses (``_custom_loss``) and optimizer/weights operations (``_training_weights``).
This module adds model info, the tokenizer and unloading.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from tinkex_clients._backcompat import ClientAsFuture
from tinkex_clients._custom_loss import CustomLossFn, CustomLossOps, require_torch_for_custom_loss
from tinkex_clients._future import APIFuture
from tinkex_clients._session import parse_result
from tinkex_clients._tokenizers import resolve_tokenizer, tokenizer_id_for_model
from tinkex_clients._training_weights import WeightsOps
from tinkex_clients._usage import UsageTrainingMixin
from tinkex_types import GetInfoResponse, TinkexError, UnloadModelRequest, UnloadModelResponse

if TYPE_CHECKING:  # pragma: no cover
    from tinkex_types import Tokenizer

__all__ = ["CustomLossFn", "TrainingClient", "require_torch_for_custom_loss"]


class TrainingClient(CustomLossOps, WeightsOps, UsageTrainingMixin, ClientAsFuture):
    """Trains one LoRA model (one server-side training run).

    Every call returns at once with an :class:`APIFuture`; calls may be issued back to back
    (``forward_backward`` then ``optim_step``) and run on the server in call order: each
    request reserves its ``seq_id`` synchronously when the method is called, and a request
    is POSTed only after the previous one was accepted.

    It is also a finished future of itself (``result()``, ``await``), so tinker 0.38 code
    that waits on the future its creation returned runs unchanged.

    ``max_chunk_items`` / ``max_chunk_bytes`` bound the size of one ``forward`` /
    ``forward_backward`` request; larger batches are split and the results combined.
    """

    # -- info ---------------------------------------------------------------------------------
    #: The answer kept in the protobuf generation (tinker 0.38 asks once, then answers
    #: from it); ``None`` in the JSON generation, which asks every time as 0.16.1 does.
    _info: GetInfoResponse | None = None

    async def _get_info(self) -> GetInfoResponse:
        with self._session.span("get_info", model_id=self.model_id):
            body = await self._session.post("/api/v1/get_info", {"model_id": self.model_id})
        info = parse_result(body, GetInfoResponse, what="get_info")
        if self._base_model is None:
            self._base_model = info.model_data.model_name or info.model_name
        if self._session.protocol.protobuf:
            self._info = info
        return info

    def get_info(self) -> GetInfoResponse:
        """Model metadata: base model, architecture, tokenizer id, LoRA rank.

        When the session speaks the protobuf generation (``protocol="protobuf"``, or
        ``"auto"`` with a server that takes it), the first answer is kept and returned
        without a request afterwards, as tinker 0.38 does; in the JSON generation every
        call asks the server, as 0.16.1 does."""
        self._check_open()
        if self._info is not None:
            return self._info
        return self._session.call(self._get_info(), "TrainingClient")

    async def get_info_async(self) -> GetInfoResponse:
        self._check_open()
        if self._info is not None:
            return self._info
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

    # -- lifecycle ----------------------------------------------------------------------------
    def unload_model(self) -> APIFuture[UnloadModelResponse]:
        """Ask the server to release this model (after the requests already issued)."""
        self._check_open()
        number, body = self._reserve_request(
            lambda _seq_id: UnloadModelRequest(model_id=self.model_id)
        )
        return self._launch(
            [number],
            self._run_single(
                number,
                "/api/v1/unload_model",
                body,
                "UnloadModel",
                UnloadModelResponse,
                "unload_model",
            ),
        )

    unload = unload_model

    async def unload_model_async(self) -> APIFuture[UnloadModelResponse]:
        return self.unload_model()

    def get_telemetry(self) -> Any | None:
        """The session's telemetry handle (a backend reporter when tinkex-telemetry is
        installed), as in the official SDK; ``None`` without one."""
        return self._session.telemetry
