"""Optimizer steps and weights of a TrainingClient: ``optim_step``, training-state saves and
loads, sampler-weight saves and the SamplingClients serving them."""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
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
from tinkex_clients._validate_optim import as_optim_params, as_user_metadata
from tinkex_http import RetryConfig
from tinkex_types import (
    AdamParams,
    LoadWeightsRequest,
    LoadWeightsResponse,
    OptimParams,
    OptimStepRequest,
    OptimStepResponse,
    SamplingClientKind,
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
        self, optim_params: OptimParams | None = None, *, adam_params: AdamParams | None = None
    ) -> APIFuture[OptimStepResponse]:
        """Apply one step of the model's optimizer with the accumulated gradient (then
        cleared).

        Pass the parameters positionally (tinker 0.38's ``optim_params``: :class:`AdamParams`,
        or the parameters of the optimizer the model was created with, e.g.
        :class:`DimuonParams`) or as ``adam_params=`` (earlier versions), not both. tinkex
        serve trains with AdamW only (other families are refused, naming
        ``optim_params.type``)."""
        self._check_open()
        if optim_params is not None and adam_params is not None:
            raise TinkexValidationError(
                "adam_params", "given together with optim_params", "pass only one of them"
            )
        if optim_params is None:
            params: OptimParams = as_adam_params(adam_params, "adam_params")
        else:
            params = as_optim_params(optim_params, "optim_params")
        return self._single(
            "/api/v1/optim_step",
            "OptimStep",
            OptimStepResponse,
            "optim_step",
            lambda seq_id: OptimStepRequest(
                optim_params=params, model_id=self.model_id, seq_id=seq_id
            ),
            learning_rate=getattr(params, "learning_rate", None),
        )

    async def optim_step_async(
        self, optim_params: OptimParams | None = None, *, adam_params: AdamParams | None = None
    ) -> APIFuture[OptimStepResponse]:
        """Async version of :meth:`optim_step` (returns the future)."""
        return self.optim_step(optim_params, adam_params=adam_params)

    def save_state(
        self,
        name: str,
        ttl_seconds: int | None = None,
        overwrite: bool = False,
        user_metadata: dict[str, str] | None = None,
    ) -> APIFuture[SaveWeightsResponse]:
        """Save weights and optimizer state as ``tinker://<model_id>/weights/<name>``.

        A checkpoint of that name already there makes the save fail (a
        :class:`RequestFailedError` naming ``overwrite``) unless ``overwrite=True``, which
        replaces it with its ``user_metadata`` (none given: the old metadata is dropped).
        ``user_metadata`` (str to str) is listed with the checkpoint
        (``Checkpoint.user_metadata``)."""
        self._check_open()
        checkpoint = as_checkpoint_name(name)
        ttl = as_ttl_seconds(ttl_seconds)
        if not isinstance(overwrite, bool):
            raise TinkexValidationError("overwrite", f"must be a bool, got {overwrite!r}")
        metadata = as_user_metadata(user_metadata)
        number, body = self._reserve_request(
            lambda seq_id: SaveWeightsRequest(
                model_id=self.model_id,
                path=checkpoint,
                seq_id=seq_id,
                ttl_seconds=ttl,
                overwrite=overwrite,
                user_metadata=metadata,
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
        self,
        name: str,
        ttl_seconds: int | None = None,
        overwrite: bool = False,
        user_metadata: dict[str, str] | None = None,
    ) -> APIFuture[SaveWeightsResponse]:
        return self.save_state(name, ttl_seconds, overwrite, user_metadata)

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
        self,
        name: str,
        ttl_seconds: int | None = None,
        user_metadata: dict[str, str] | None = None,
    ) -> APIFuture[SaveWeightsForSamplerResponse]:
        """Save sampler weights as ``tinker://<model_id>/sampler_weights/<name>``, with
        ``user_metadata`` (str to str) listed with the checkpoint."""
        self._check_open()
        checkpoint = as_checkpoint_name(name)
        ttl = as_ttl_seconds(ttl_seconds)
        metadata = as_user_metadata(user_metadata)
        number, body = self._reserve_request(
            lambda seq_id: SaveWeightsForSamplerRequest(
                model_id=self.model_id,
                path=checkpoint,
                seq_id=seq_id,
                ttl_seconds=ttl,
                user_metadata=metadata,
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
        self,
        name: str,
        ttl_seconds: int | None = None,
        user_metadata: dict[str, str] | None = None,
    ) -> APIFuture[SaveWeightsForSamplerResponse]:
        return self.save_weights_for_sampler(name, ttl_seconds, user_metadata)

    def save_weights_and_get_sampling_client_submit(
        self,
        retry_config: RetryConfig | None = None,
        name: str | None = None,
        record_stability_info: bool = False,
        kind: SamplingClientKind = "snapshot",
    ) -> APIFuture[SamplingClient]:
        """Save the current weights for sampling and return a future of a SamplingClient.

        Without ``name`` the save is ephemeral (not listed as a checkpoint); with ``name``
        the weights are also kept as ``tinker://<model_id>/sampler_weights/<name>``.
        ``kind`` (tinker 0.38, unnamed saves): ``snapshot`` (fixed weights) or ``inflight``
        (the training model's shared weights, which later inflight saves update).
        """
        self._check_open()
        checkpoint = None if name is None else as_checkpoint_name(name)
        retry_config = check_retry_config(retry_config)
        if kind not in ("snapshot", "inflight"):
            raise TinkexValidationError(
                "kind", f"must be 'snapshot' or 'inflight', got {kind!r}", "use 'snapshot'"
            )
        if not isinstance(record_stability_info, bool):
            raise TinkexValidationError(
                "record_stability_info", f"must be a bool, got {record_stability_info!r}"
            )
        (number,) = self._reserve(1)
        options = _SamplerOptions(retry_config, record_stability_info, kind)
        return self._launch([number], self._save_and_sample(number, checkpoint, options))

    async def _save_and_sample(
        self, number: int, name: str | None, options: _SamplerOptions
    ) -> SamplingClient:
        session = self._session
        retry_config = options.retry_config
        if name is None:
            request = SaveWeightsForSamplerRequest(
                model_id=self.model_id,
                sampling_session_seq_id=session.next_sampling_session_seq_id(),
                seq_id=number + 1,
                kind=options.kind,
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
        stability = options.record_stability_info
        if result.sampling_session_id is not None and name is None:
            return self._sampler_for(result.sampling_session_id, retry_config, stability)
        if result.path is not None:
            return await create_sampling_client(
                session,
                model_path=result.path,
                retry_config=retry_config,
                record_stability_info=stability,
            )
        if result.sampling_session_id is not None:
            return self._sampler_for(result.sampling_session_id, retry_config, stability)
        raise TinkexError(
            "save_weights_for_sampler returned neither a sampling_session_id nor a path"
        )

    def _sampler_for(
        self, sampling_session_id: str, retry_config: RetryConfig | None, stability: bool
    ) -> SamplingClient:
        ledger_of(self._session).link_sampler(sampling_session_id, self.model_id, self._base_model)
        return SamplingClient(
            self._session,
            sampling_session_id=sampling_session_id,
            retry_config=retry_config,
            base_model=self._base_model,
            record_stability_info=stability,
        )

    def save_weights_and_get_sampling_client(
        self,
        name: str | None = None,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
        kind: SamplingClientKind = "snapshot",
    ) -> SamplingClient:
        """Save the current weights and return a SamplingClient serving them (blocks; see
        :meth:`save_weights_and_get_sampling_client_submit`)."""
        return self.save_weights_and_get_sampling_client_submit(
            retry_config, name, record_stability_info, kind
        ).result()

    async def save_weights_and_get_sampling_client_async(
        self,
        name: str | None = None,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
        kind: SamplingClientKind = "snapshot",
    ) -> SamplingClient:
        return await self.save_weights_and_get_sampling_client_submit(
            retry_config, name, record_stability_info, kind
        )

    def create_sampling_client(
        self,
        model_path: str,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
    ) -> SamplingClient:
        """A SamplingClient for saved weights (``tinker://…``)."""
        return self._session.call(
            self._create_sampler(model_path, retry_config, record_stability_info),
            "TrainingClient",
        )

    async def create_sampling_client_async(
        self,
        model_path: str,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
    ) -> SamplingClient:
        return await self._session.bridge(
            self._create_sampler(model_path, retry_config, record_stability_info),
            "TrainingClient",
        )

    def _create_sampler(
        self, model_path: str, retry_config: RetryConfig | None, stability: bool
    ) -> Coroutine[Any, Any, SamplingClient]:
        self._check_open()
        parsed = as_any_tinker_path(model_path, "model_path")
        retry_config = check_retry_config(retry_config)
        if not isinstance(stability, bool):
            raise TinkexValidationError(
                "record_stability_info", f"must be a bool, got {stability!r}"
            )
        return create_sampling_client(
            self._session,
            model_path=parsed,
            retry_config=retry_config,
            record_stability_info=stability,
        )


@dataclass(frozen=True)
class _SamplerOptions:
    """How the SamplingClient of a save is made."""

    retry_config: RetryConfig | None
    record_stability_info: bool
    kind: SamplingClientKind
