"""ServiceClient: the entry point -- one backend session, and the factory of every client."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any

import httpx

from tinkex_clients._custom_loss_graph import CustomLossServiceMixin
from tinkex_clients._peft import PeftServiceMixin
from tinkex_clients._rest import RestClient
from tinkex_clients._sampling import SamplingClient, create_sampling_client
from tinkex_clients._service_args import service_config
from tinkex_clients._service_state import FromStateMixin
from tinkex_clients._session import Session, parse_result
from tinkex_clients._training import TrainingClient
from tinkex_clients._training_core import check_retry_config
from tinkex_clients._usage import UsageServiceMixin
from tinkex_clients._validate import as_any_tinker_path, as_positive_int
from tinkex_clients._validate_optim import as_optimizer_config, as_user_metadata
from tinkex_http import Config, PollPolicy, RetryConfig
from tinkex_types import (
    DEFAULT_LORA_RANK,
    AdamOptimizerConfig,
    CreateModelRequest,
    CreateModelResponse,
    GetServerCapabilitiesResponse,
    Hooks,
    LoraConfig,
    OptimizerConfigBase,
    TinkexValidationError,
)

__all__ = ["ServiceClient"]


class ServiceClient(FromStateMixin, PeftServiceMixin, CustomLossServiceMixin, UsageServiceMixin):
    """The entry point of tinkex: one session with a Tinker service.

    Creating it starts a background event loop thread, creates the session on the server
    (eagerly) and starts heart-beating. It hands out :class:`TrainingClient`,
    :class:`SamplingClient` and :class:`RestClient` objects that share that session.

    Arguments: ``user_metadata`` and ``project_id`` are sent with the session; ``config``
    is a :class:`tinkex_http.Config`, and any other keyword argument is a ``Config`` field
    (``api_key``, ``base_url``, ``timeout``, ``max_retries``, ``default_headers``...).
    ``ServiceClient(base_url="local://")`` uses the in-process local server of the
    ``tinkex-server`` package. ``transport`` replaces the network transport (tests),
    ``hooks`` the process-wide plugin hooks. Plugins hear about the session through the
    ``tinkex_on_session`` hook (start after it was created, end on close).

    Use ``with ServiceClient(...) as client:`` (or ``async with``) or call :meth:`close`.
    """

    def __init__(
        self,
        user_metadata: dict[str, str] | None = None,
        project_id: str | None = None,
        *,
        display_name: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        default_headers_overrides: Mapping[str, str] | None = None,
        config: Config | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        hooks: Hooks | None = None,
        poll_policy: PollPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        metadata = as_user_metadata(user_metadata)
        if display_name is not None and not isinstance(display_name, str):
            raise TinkexValidationError("display_name", f"must be a str, got {display_name!r}")
        #: A name for this session (kept by the client; tinkex's server does not store it).
        self.display_name = display_name
        if project_id is not None:
            kwargs["project_id"] = project_id
        config = service_config(
            config,
            kwargs,
            base_url=base_url,
            api_key=api_key,
            default_headers_overrides=default_headers_overrides,
        )
        self._session = Session(config, transport=transport, hooks=hooks, poll_policy=poll_policy)
        try:
            self._session.call(self._session.start(metadata))
        except BaseException:
            self._session.close()
            raise
        self._session.announce_start()

    @classmethod
    async def create_async(
        cls,
        user_metadata: dict[str, str] | None = None,
        project_id: str | None = None,
        **kwargs: Any,
    ) -> ServiceClient:
        """Construct without blocking the running event loop (the session is created on a
        worker thread)."""
        return await asyncio.to_thread(lambda: cls(user_metadata, project_id, **kwargs))

    # -- properties and lifecycle -------------------------------------------------------------
    @property
    def session_id(self) -> str:
        """The server's id for this session."""
        return self._session.session_id or ""

    @property
    def config(self) -> Config:
        return self._session.config

    @property
    def closed(self) -> bool:
        return self._session.closed

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"ServiceClient(base_url={self.config.base_url!r}, session_id={self.session_id!r}, "
            f"{state})"
        )

    def close(self, status: str | None = None, detail: str | None = None) -> None:
        """End heart-beating, close connections and stop the background thread.

        ``status``/``detail`` (tinker 0.38's session outcome) are accepted. Every client created from this ServiceClient stops working (their methods raise
        :class:`tinkex_clients.ClientClosedError`). Idempotent.
        """
        self._session.close()

    async def aclose(self) -> None:
        """:meth:`close` without blocking the running event loop."""
        await self._session.aclose()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> ServiceClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def get_telemetry(self) -> Any | None:
        """The session's telemetry handle, or ``None``.

        It is what a ``tinkex_on_session`` plugin returned when the session started: with
        tinkex-telemetry installed and telemetry enabled (``TINKER_TELEMETRY`` /
        ``telemetry_enabled``), its ``BackendReporter`` (``log(name, data)``,
        ``log_exception(exc)``, ``flush()``); it sends ``SESSION_END`` when this client
        closes. Without such a plugin, ``None``.
        """
        return self._session.telemetry

    # -- helpers ----------------------------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self._session.call(coro)

    async def _bridge(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return await self._session.bridge(coro)

    # -- capabilities -----------------------------------------------------------------------------
    async def _capabilities(self) -> GetServerCapabilitiesResponse:
        session = self._session
        with session.span("get_server_capabilities"):
            body = await session.get("/api/v1/get_server_capabilities")
        return parse_result(body, GetServerCapabilitiesResponse, what="get_server_capabilities")

    def get_server_capabilities(self) -> GetServerCapabilitiesResponse:
        """The models the server supports."""
        self._session.check_open()
        result: GetServerCapabilitiesResponse = self._call(self._capabilities())
        return result

    async def get_server_capabilities_async(self) -> GetServerCapabilitiesResponse:
        self._session.check_open()
        result: GetServerCapabilitiesResponse = await self._bridge(self._capabilities())
        return result

    # -- training clients -------------------------------------------------------------------------
    def _lora_coro(
        self,
        base_model: Any,
        rank: Any,
        seed: Any,
        train_mlp: Any,
        train_attn: Any,
        train_unembed: Any,
        user_metadata: Any,
        optimizer: Any = None,
    ) -> Coroutine[Any, Any, TrainingClient]:
        self._session.check_open()
        if not isinstance(base_model, str) or not base_model.strip():
            raise TinkexValidationError(
                "base_model",
                f"must be a model name, got {base_model!r}",
                "see get_server_capabilities() for the supported models",
            )
        as_positive_int(rank, "rank")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TinkexValidationError("seed", f"must be an int or None, got {seed!r}")
        for name, flag in (
            ("train_mlp", train_mlp),
            ("train_attn", train_attn),
            ("train_unembed", train_unembed),
        ):
            if not isinstance(flag, bool):
                raise TinkexValidationError(name, f"must be a bool, got {flag!r}")
        if not (train_mlp or train_attn or train_unembed):
            raise TinkexValidationError(
                "train_mlp",
                "train_mlp, train_attn and train_unembed are all False: nothing would train",
                "set at least one of them to True",
            )
        metadata = as_user_metadata(user_metadata)
        optimizer_config = as_optimizer_config(optimizer)
        lora = LoraConfig(
            rank=rank,
            seed=seed,
            train_mlp=train_mlp,
            train_attn=train_attn,
            train_unembed=train_unembed,
        )
        model_seq_id = self._session.next_model_seq_id()
        return self._create_model(base_model, lora, metadata, model_seq_id, optimizer_config)

    async def _create_model(
        self,
        base_model: str,
        lora: LoraConfig,
        user_metadata: dict[str, str] | None,
        model_seq_id: int,
        optimizer_config: OptimizerConfigBase | None = None,
    ) -> TrainingClient:
        import time

        session = self._session
        request = CreateModelRequest(
            session_id=session.session_id or "",
            model_seq_id=model_seq_id,
            base_model=base_model,
            user_metadata=user_metadata,
            lora_config=lora,
            optimizer_config=optimizer_config or AdamOptimizerConfig(),
        )
        with session.span("create_lora_training_client", base_model=base_model, rank=lora.rank):
            started = time.monotonic()
            submitted = await session.post(
                "/api/v1/create_model",
                request.to_json_dict(),
                retries=False,
                request_type="CreateModel",
            )
            if (
                isinstance(submitted, dict)
                and "request_id" not in submitted
                and isinstance(submitted.get("model_id"), str)
            ):
                response = parse_result(submitted, CreateModelResponse, what="create_model")
            else:
                response = await session.resolve(
                    submitted, CreateModelResponse, request_type="CreateModel", started=started
                )
        return TrainingClient(
            session,
            model_id=response.model_id,
            model_seq_id=model_seq_id,
            base_model=base_model,
        )

    def create_lora_training_client(
        self,
        base_model: str,
        rank: int = DEFAULT_LORA_RANK,
        seed: int | None = None,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        user_metadata: dict[str, str] | None = None,
        optimizer: OptimizerConfigBase | None = None,
    ) -> TrainingClient:
        """Create a LoRA model on ``base_model`` and a TrainingClient for it (blocks until the
        server created it). ``optimizer`` (tinker 0.38) is fixed for the model's lifetime:
        AdamW unless given (tinkex serve trains with AdamW only)."""
        result: TrainingClient = self._call(
            self._lora_coro(
                base_model,
                rank,
                seed,
                train_mlp,
                train_attn,
                train_unembed,
                user_metadata,
                optimizer,
            )
        )
        return result

    async def create_lora_training_client_async(
        self,
        base_model: str,
        rank: int = DEFAULT_LORA_RANK,
        seed: int | None = None,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        user_metadata: dict[str, str] | None = None,
        optimizer: OptimizerConfigBase | None = None,
    ) -> TrainingClient:
        result: TrainingClient = await self._bridge(
            self._lora_coro(
                base_model,
                rank,
                seed,
                train_mlp,
                train_attn,
                train_unembed,
                user_metadata,
                optimizer,
            )
        )
        return result

    # -- sampling and REST ----------------------------------------------------------------------
    def _sampling_coro(
        self, model_path: Any, base_model: Any, retry_config: Any, stability: Any = False
    ) -> Coroutine[Any, Any, SamplingClient]:
        self._session.check_open()
        if model_path is None and base_model is None:
            raise TinkexValidationError(
                "model_path",
                "neither model_path nor base_model was given",
                "pass model_path='tinker://…' (saved weights) or base_model='<model name>'",
            )
        path = None if model_path is None else as_any_tinker_path(model_path, "model_path")
        if base_model is not None and (not isinstance(base_model, str) or not base_model.strip()):
            raise TinkexValidationError("base_model", f"must be a model name, got {base_model!r}")
        retry_config = check_retry_config(retry_config)
        if not isinstance(stability, bool):
            raise TinkexValidationError(
                "record_stability_info", f"must be a bool, got {stability!r}"
            )
        return create_sampling_client(
            self._session,
            model_path=path,
            base_model=base_model,
            retry_config=retry_config,
            record_stability_info=stability,
        )

    def create_sampling_client(
        self,
        model_path: str | None = None,
        base_model: str | None = None,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
    ) -> SamplingClient:
        """A SamplingClient for saved weights (``model_path``) or a base model.
        ``record_stability_info`` (tinker 0.38) is sent with its samples (tinkex serve
        refuses it)."""
        result: SamplingClient = self._call(
            self._sampling_coro(model_path, base_model, retry_config, record_stability_info)
        )
        return result

    async def create_sampling_client_async(
        self,
        model_path: str | None = None,
        base_model: str | None = None,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
    ) -> SamplingClient:
        result: SamplingClient = await self._bridge(
            self._sampling_coro(model_path, base_model, retry_config, record_stability_info)
        )
        return result

    def create_rest_client(self) -> RestClient:
        """A RestClient sharing this session."""
        self._session.check_open()
        return RestClient(self._session)
