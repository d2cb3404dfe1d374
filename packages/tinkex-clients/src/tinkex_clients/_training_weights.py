"""Optimizer steps and weights of a TrainingClient: ``optim_step``, training-state saves and
loads, sampler-weight saves and the SamplingClients serving them."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from tinkex_clients._future import APIFuture
from tinkex_clients._retention_ops import RetentionOps
from tinkex_clients._sampling import SamplingClient, create_sampling_client
from tinkex_clients._training_core import check_retry_config
from tinkex_clients._usage import ledger_of
from tinkex_clients._validate import (
    as_adam_params,
    as_any_tinker_path,
    as_checkpoint_name,
    as_load_path,
    as_ttl_seconds,
)
from tinkex_http import RetryConfig
from tinkex_types import (
    AdamParams,
    LoadWeightsRequest,
    LoadWeightsResponse,
    OptimStepRequest,
    OptimStepResponse,
    SaveWeightsForSamplerRequest,
    SaveWeightsForSamplerResponse,
    SaveWeightsRequest,
    SaveWeightsResponse,
    TinkexError,
    TinkexValidationError,
)

__all__ = ["WeightsOps"]

_SAMPLER_PATH = "/api/v1/save_weights_for_sampler"


class WeightsOps(RetentionOps):
    """The optimizer and checkpoint operations of :class:`TrainingClient` (a retention
    policy, :meth:`set_retention`, is applied after every named save)."""

    def optim_step(
        self, optim_params: AdamParams | None = None, *, adam_params: AdamParams | None = None
    ) -> APIFuture[OptimStepResponse]:
        """Apply one AdamW step with the accumulated gradient (then cleared).

        Pass the :class:`AdamParams` positionally (tinker 0.38's ``optim_params``) or as
        ``adam_params=`` (earlier versions), not both."""
        self._check_open()
        if optim_params is not None and adam_params is not None:
            raise TinkexValidationError(
                "adam_params", "given together with optim_params", "pass only one of them"
            )
        field = "adam_params" if optim_params is None else "optim_params"
        params = as_adam_params(adam_params if optim_params is None else optim_params, field)
        return self._single(
            "/api/v1/optim_step",
            "OptimStep",
            OptimStepResponse,
            "optim_step",
            lambda seq_id: OptimStepRequest(
                adam_params=params, model_id=self.model_id, seq_id=seq_id
            ),
            learning_rate=params.learning_rate,
        )

    async def optim_step_async(
        self, optim_params: AdamParams | None = None, *, adam_params: AdamParams | None = None
    ) -> APIFuture[OptimStepResponse]:
        """Async version of :meth:`optim_step` (returns the future)."""
        return self.optim_step(optim_params, adam_params=adam_params)

    def save_state(
        self, name: str, ttl_seconds: int | None = None
    ) -> APIFuture[SaveWeightsResponse]:
        """Save weights and optimizer state as ``tinker://<model_id>/weights/<name>``."""
        self._check_open()
        checkpoint = as_checkpoint_name(name)
        ttl = as_ttl_seconds(ttl_seconds)
        number, body = self._reserve_request(
            lambda seq_id: SaveWeightsRequest(
                model_id=self.model_id, path=checkpoint, seq_id=seq_id, ttl_seconds=ttl
            )
        )

        async def run() -> SaveWeightsResponse:
            result = await self._run_single(
                number,
                "/api/v1/save_weights",
                body,
                "SaveWeights",
                SaveWeightsResponse,
                "save_state",
                checkpoint=checkpoint,
            )
            await self._after_save()
            return result

        return self._launch([number], run())

    async def save_state_async(
        self, name: str, ttl_seconds: int | None = None
    ) -> APIFuture[SaveWeightsResponse]:
        return self.save_state(name, ttl_seconds)

    def _load(self, path: Any, optimizer: bool) -> APIFuture[LoadWeightsResponse]:
        self._check_open()
        parsed = as_load_path(path, "path")
        return self._single(
            "/api/v1/load_weights",
            "LoadWeights",
            LoadWeightsResponse,
            "load_state_with_optimizer" if optimizer else "load_state",
            lambda seq_id: LoadWeightsRequest(
                model_id=self.model_id, path=parsed, optimizer=optimizer, seq_id=seq_id
            ),
            checkpoint=parsed,
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
        self._check_open()
        checkpoint = as_checkpoint_name(name)
        ttl = as_ttl_seconds(ttl_seconds)
        number, body = self._reserve_request(
            lambda seq_id: SaveWeightsForSamplerRequest(
                model_id=self.model_id, path=checkpoint, seq_id=seq_id, ttl_seconds=ttl
            )
        )

        async def run() -> SaveWeightsForSamplerResponse:
            result = await self._run_single(
                number,
                _SAMPLER_PATH,
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
            await self._after_save()
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
        self._check_open()
        checkpoint = None if name is None else as_checkpoint_name(name)
        retry_config = check_retry_config(retry_config)
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
        result = await self._run_single(
            number,
            _SAMPLER_PATH,
            request.to_json_dict(),
            "SaveWeightsForSampler",
            SaveWeightsForSamplerResponse,
            "save_weights_and_get_sampling_client",
        )
        if name is not None:
            await self._after_save()
        if result.sampling_session_id is not None and name is None:
            return self._sampler_for(result.sampling_session_id, retry_config)
        if result.path is not None:
            return await create_sampling_client(
                session, model_path=result.path, retry_config=retry_config
            )
        if result.sampling_session_id is not None:
            return self._sampler_for(result.sampling_session_id, retry_config)
        raise TinkexError(
            "save_weights_for_sampler returned neither a sampling_session_id nor a path"
        )

    def _sampler_for(
        self, sampling_session_id: str, retry_config: RetryConfig | None
    ) -> SamplingClient:
        ledger_of(self._session).link_sampler(sampling_session_id, self.model_id, self._base_model)
        return SamplingClient(
            self._session,
            sampling_session_id=sampling_session_id,
            retry_config=retry_config,
            base_model=self._base_model,
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
        self._check_open()
        parsed = as_any_tinker_path(model_path, "model_path")
        retry_config = check_retry_config(retry_config)
        return create_sampling_client(self._session, model_path=parsed, retry_config=retry_config)
