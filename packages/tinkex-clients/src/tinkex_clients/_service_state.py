"""``ServiceClient.create_training_client_from_state[_with_optimizer]``: a new training run
initialised from a ``tinker://…/weights/…`` checkpoint (tinker 0.38's arguments)."""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from tinkex_clients._session import Session, parse_result
from tinkex_clients._validate import as_load_path
from tinkex_clients._validate_optim import as_optimizer_config, as_user_metadata
from tinkex_types import (
    DEFAULT_LORA_RANK,
    LoraConfig,
    OptimizerConfigBase,
    TinkexValidationError,
    WeightsInfoResponse,
)

if TYPE_CHECKING:  # pragma: no cover
    from tinkex_clients._training import TrainingClient

__all__ = ["FromStateMixin"]


class FromStateMixin:
    """The from-state factories of :class:`~tinkex_clients.ServiceClient`."""

    _session: Session

    if TYPE_CHECKING:  # pragma: no cover - ServiceClient's own

        async def _create_model(
            self,
            base_model: str,
            lora: LoraConfig,
            user_metadata: dict[str, str] | None,
            model_seq_id: int,
            optimizer_config: OptimizerConfigBase | None = None,
        ) -> TrainingClient: ...

        async def _bridge(self, coro: Coroutine[Any, Any, Any]) -> Any: ...

        def _call(self, coro: Coroutine[Any, Any, Any]) -> Any: ...

    def _from_state_coro(
        self,
        path: Any,
        base_model: Any,
        user_metadata: Any,
        weights_access_token: Any,
        optimizer: bool,
        optimizer_config: Any = None,
    ) -> Coroutine[Any, Any, TrainingClient]:
        self._session.check_open()
        parsed = as_load_path(path, "path")
        if isinstance(base_model, Mapping) and user_metadata is None:
            # tinker <= 0.18's order: (path, user_metadata, ...).
            base_model, user_metadata = None, base_model
        if base_model is not None and (not isinstance(base_model, str) or not base_model.strip()):
            raise TinkexValidationError("base_model", f"must be a model name, got {base_model!r}")
        if weights_access_token is not None:
            raise TinkexValidationError(
                "weights_access_token",
                "is an account feature of the hosted Tinker service; tinkex has no accounts",
                "leave weights_access_token None",
            )
        metadata = as_user_metadata(user_metadata)
        config = None if optimizer else as_optimizer_config(optimizer_config)
        return self._from_state(parsed, base_model, metadata, optimizer, config)

    async def _from_state(
        self,
        path: str,
        base_model: str | None,
        user_metadata: dict[str, str] | None,
        optimizer: bool,
        optimizer_config: OptimizerConfigBase | None,
    ) -> TrainingClient:
        session = self._session
        with session.span(
            "create_training_client_from_state", checkpoint=path, optimizer=optimizer
        ):
            with session.span("rest.get_weights_info"):
                body = await session.post("/api/v1/weights_info", {"tinker_path": path})
            info = parse_result(body, WeightsInfoResponse, what="weights_info")
            lora = LoraConfig(
                rank=info.lora_rank or DEFAULT_LORA_RANK,
                train_mlp=info.train_mlp if info.train_mlp is not None else True,
                train_attn=info.train_attn if info.train_attn is not None else True,
                train_unembed=info.train_unembed if info.train_unembed is not None else True,
            )
            # With the optimizer state, the checkpoint's own optimizer.
            config = info.optimizer_config if optimizer else optimizer_config
            client = await self._create_model(
                base_model or info.base_model,
                lora,
                user_metadata,
                session.next_model_seq_id(),
                config,
            )
            load = client.load_state_with_optimizer(path) if optimizer else client.load_state(path)
            await load
        return client

    def create_training_client_from_state(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: dict[str, str] | None = None,
        weights_access_token: str | None = None,
        optimizer: OptimizerConfigBase | None = None,
    ) -> TrainingClient:
        """A new training run initialised from a ``tinker://…/weights/…`` checkpoint
        (weights only; the optimizer, ``optimizer`` or AdamW, starts fresh). ``base_model``
        overrides the checkpoint's (it must be compatible); ``weights_access_token`` is a
        hosted-service feature (refused unless ``None``)."""
        result: TrainingClient = self._call(
            self._from_state_coro(
                path, base_model, user_metadata, weights_access_token, False, optimizer
            )
        )
        return result

    async def create_training_client_from_state_async(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: dict[str, str] | None = None,
        weights_access_token: str | None = None,
        optimizer: OptimizerConfigBase | None = None,
    ) -> TrainingClient:
        result: TrainingClient = await self._bridge(
            self._from_state_coro(
                path, base_model, user_metadata, weights_access_token, False, optimizer
            )
        )
        return result

    def create_training_client_from_state_with_optimizer(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: dict[str, str] | None = None,
        weights_access_token: str | None = None,
    ) -> TrainingClient:
        """Like :meth:`create_training_client_from_state`, also restoring the optimizer
        state, so training continues exactly where the checkpoint left off."""
        result: TrainingClient = self._call(
            self._from_state_coro(path, base_model, user_metadata, weights_access_token, True)
        )
        return result

    async def create_training_client_from_state_with_optimizer_async(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: dict[str, str] | None = None,
        weights_access_token: str | None = None,
    ) -> TrainingClient:
        result: TrainingClient = await self._bridge(
            self._from_state_coro(path, base_model, user_metadata, weights_access_token, True)
        )
        return result
