"""SamplingClient: text generation and prompt logprobs from a base model or saved weights."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import structlog

from tinkex_clients._backcompat import ClientAsFuture
from tinkex_clients._future import APIFuture
from tinkex_clients._retry_config import as_retry_config
from tinkex_clients._sampling_extras import SampleExtras, as_extras, check_honoured
from tinkex_clients._session import Session, parse_result
from tinkex_clients._streaming import AsyncSampleStream, SampleStream, open_sample_stream
from tinkex_clients._tokenizers import resolve_tokenizer, tokenizer_id_for_model
from tinkex_clients._usage import ledger_of
from tinkex_clients._validate import (
    as_model_input,
    as_non_negative_int,
    as_positive_int,
    as_sampling_params,
)
from tinkex_http import (
    ByteEstimator,
    RetryConfig,
    RetrySemaphore,
    SamplingDispatch,
    retry_async,
)
from tinkex_types import (
    GetSamplerResponse,
    ModelInput,
    RateLimitError,
    SampleRequest,
    SampleResponse,
    SamplingParams,
    TensorData,
    TinkexValidationError,
)

if TYPE_CHECKING:  # pragma: no cover
    from tinkex_types import Tokenizer

__all__ = ["SamplingClient"]

_log = structlog.get_logger("tinkex.clients.sampling")

#: At most this many sample calls of one sampler run their retry loop at once.
MAX_CONCURRENT_SAMPLES_PER_SESSION = 1000


class SamplingClient(ClientAsFuture):
    """Generates tokens (and prompt logprobs) from one sampling session.

    Get one from ``service_client.create_sampling_client(...)`` or
    ``training_client.save_weights_and_get_sampling_client()``. Safe to share across threads
    and coroutines: every request runs on the ServiceClient's background loop behind the
    layered admission of :class:`tinkex_http.SamplingDispatch` (400 concurrent requests per
    tenant, 10 and ×20 bytes for 10 s after a 429, 5 MiB per client) and the sampling retry
    loop (``retry_config``, default :meth:`tinkex_http.RetryConfig.sampling`).

    ``record_stability_info`` (tinker 0.38, StableReinforce) is sent with every sample;
    tinkex serve refuses it (400 naming the field).
    """

    def __init__(
        self,
        session: Session,
        *,
        sampling_session_id: str,
        retry_config: RetryConfig | None = None,
        base_model: str | None = None,
        model_path: str | None = None,
        dispatch: SamplingDispatch | None = None,
        record_stability_info: bool = False,
    ) -> None:
        retry_config = as_retry_config(retry_config)
        if not isinstance(record_stability_info, bool):
            raise TinkexValidationError(
                "record_stability_info", f"must be a bool, got {record_stability_info!r}"
            )
        self.record_stability_info = record_stability_info
        self._session = session
        self.sampling_session_id = sampling_session_id
        self.retry_config = retry_config or RetryConfig.sampling()
        self.model_path = model_path
        self._base_model = base_model
        self._seq = 0
        # Config's sampling_concurrency / sampling_throttled_concurrency /
        # sampling_byte_budget (TINKEX_SAMPLING_*) set the limits.
        self._dispatch = dispatch or SamplingDispatch.from_config(session.config)
        self._tokenizer: Any = None

    def __repr__(self) -> str:
        return f"SamplingClient(sampling_session_id={self.sampling_session_id!r})"

    @staticmethod
    def create(
        holder: Any,
        *,
        model_path: str | None = None,
        base_model: str | None = None,
        sampling_session_id: str | None = None,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
    ) -> APIFuture[SamplingClient]:
        """A SamplingClient of ``holder`` (a ServiceClient, TrainingClient or their session),
        as tinker's ``SamplingClient.create``: for an existing ``sampling_session_id``, or a
        new sampling session of ``model_path`` / ``base_model``."""
        session = getattr(holder, "_session", holder)
        if not isinstance(session, Session):
            raise TinkexValidationError(
                "holder", f"must be a ServiceClient or TrainingClient, got {type(holder).__name__}"
            )
        config = as_retry_config(retry_config)
        if sampling_session_id is not None:
            client = SamplingClient(
                session,
                sampling_session_id=sampling_session_id,
                retry_config=config,
                base_model=base_model,
                model_path=model_path,
                record_stability_info=record_stability_info,
            )
            return session.run(_ready(client), "SamplingClient")
        if model_path is None and base_model is None:
            raise TinkexValidationError(
                "model_path", "give model_path, base_model or sampling_session_id"
            )
        coro = create_sampling_client(
            session,
            model_path=model_path,
            base_model=base_model,
            retry_config=config,
            record_stability_info=record_stability_info,
        )
        return session.run(coro, "SamplingClient")

    def get_telemetry(self) -> Any | None:
        """The session's telemetry handle, or ``None`` (see ``ServiceClient.get_telemetry``)."""
        return self._session.telemetry

    def on_queue_state_change(self, queue_state: str, queue_state_reason: str | None) -> None:
        """Called when the server reports backpressure (a 429 with a queue state); logs it.
        Override in a subclass to react (tinker's hook of the same name)."""
        _log.debug(
            "sampling_queue_state",
            sampler=self.sampling_session_id,
            queue_state=queue_state,
            reason=queue_state_reason,
        )

    @property
    def dispatch(self) -> SamplingDispatch:
        """The admission layers of this client (in-flight counters for inspection)."""
        return self._dispatch

    # -- internals ------------------------------------------------------------------------
    def _next_seq(self) -> int:
        value = self._seq
        self._seq += 1
        return value

    async def _attempt(self, request: SampleRequest, estimated: int) -> SampleResponse:
        session = self._session
        limiter = self._dispatch.rate_limiter
        await limiter.wait_for_backoff()
        body = request.model_copy(update={"seq_id": self._next_seq()}).to_json_dict()
        started = time.monotonic()
        try:
            submitted = await session.http.post("/api/v1/asample", body, request_type="Sample")
        except RateLimitError as exc:
            seconds = self._dispatch.set_backoff(estimated)
            if isinstance(exc.body, dict) and exc.body.get("queue_state"):
                _log.info(
                    "sampling_backpressure",
                    sampler=self.sampling_session_id,
                    queue_state=exc.body.get("queue_state"),
                    reason=exc.body.get("queue_state_reason"),
                    backoff_s=seconds,
                )
                reason = exc.body.get("queue_state_reason")
                self.on_queue_state_change(
                    str(exc.body["queue_state"]), reason if isinstance(reason, str) else None
                )
            raise
        limiter.clear_backoff()
        return await session.resolve(
            submitted, SampleResponse, request_type="Sample", started=started
        )

    async def _sample(
        self, request: SampleRequest, operation: str, extras: SampleExtras | None = None
    ) -> SampleResponse:
        session = self._session
        estimated = ByteEstimator.model_input_bytes(request.prompt)
        with session.span(
            operation,
            sampler_id=self.sampling_session_id,
            num_samples=request.num_samples,
            prompt_tokens=estimated // ByteEstimator.BYTES_PER_TOKEN,
        ):
            async with self._dispatch.slot(estimated):
                async with RetrySemaphore.hold(
                    ("sampler", self.sampling_session_id), MAX_CONCURRENT_SAMPLES_PER_SESSION
                ):
                    response = await retry_async(
                        lambda: self._attempt(request, estimated),
                        self.retry_config,
                        sleep=session.http.sleep,
                    )
        usage = ledger_of(session)
        usage.sample(self.sampling_session_id, self._base_model, self.model_path, request, response)
        if extras is not None:
            check_honoured(response, extras)
        return response

    def _request(
        self,
        prompt: Any,
        num_samples: Any,
        sampling_params: Any,
        include_prompt_logprobs: Any,
        topk_prompt_logprobs: Any,
        extras: SampleExtras | None = None,
    ) -> SampleRequest:
        self._session.check_open("SamplingClient")
        model_input = as_model_input(prompt)
        n = as_positive_int(num_samples, "num_samples")
        params = as_sampling_params(sampling_params)
        if not isinstance(include_prompt_logprobs, bool):
            raise TinkexValidationError(
                "include_prompt_logprobs", f"must be a bool, got {include_prompt_logprobs!r}"
            )
        topk = as_non_negative_int(topk_prompt_logprobs, "topk_prompt_logprobs")
        return SampleRequest(
            num_samples=n,
            prompt=model_input,
            sampling_params=params,
            sampling_session_id=self.sampling_session_id,
            prompt_logprobs=include_prompt_logprobs,
            topk_prompt_logprobs=topk,
            record_stability_info=True if self.record_stability_info else None,
            **(extras.fields() if extras is not None else {}),
        )

    def _sample_request(self, *args: Any) -> tuple[SampleRequest, SampleExtras]:
        """``sample``'s arguments (tinker 0.38's order) as the request and its extras."""
        prompt, num_samples, params, include, topk_prompt, *extra = args
        extras = as_extras(include, *extra)
        request = self._request(prompt, num_samples, params, include, topk_prompt, extras)
        return request, extras

    # -- public API -----------------------------------------------------------------------
    def sample(
        self,
        prompt: ModelInput,
        num_samples: int,
        sampling_params: SamplingParams,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
        topk_sample_logprobs: int = 0,
        target_prompt_logprobs: TensorData | None = None,
        prompt_alt_tokens_k: int = 0,
        prompt_logprobs_last_n: int | None = None,
    ) -> APIFuture[SampleResponse]:
        """Generate ``num_samples`` continuations of ``prompt``.

        tinker 0.38's extras: ``topk_sample_logprobs`` (top-k ``(token, logprob)`` at each
        sampled position: ``SampledSequence.topk_logprobs``), ``target_prompt_logprobs``
        (int64 ids ``[len(prompt) - 1, K]``, row ``i`` scored at prompt position ``i + 1``,
        ``-1`` for none: ``SampleResponse.target_prompt_logprobs``), ``prompt_alt_tokens_k``
        (k draws at every prompt position after the first: ``prompt_alt_tokens``),
        ``prompt_logprobs_last_n`` (score only the last N prompt tokens; earlier entries
        ``None``; needs ``include_prompt_logprobs``). A server that ignores an extra it was
        asked for is an error.

        Returns a future of :class:`SampleResponse` (``.result()`` or ``await``).
        """
        request, extras = self._sample_request(
            prompt,
            num_samples,
            sampling_params,
            include_prompt_logprobs,
            topk_prompt_logprobs,
            topk_sample_logprobs,
            target_prompt_logprobs,
            prompt_alt_tokens_k,
            prompt_logprobs_last_n,
        )
        return self._session.run(self._sample(request, "sample", extras), "SamplingClient")

    async def sample_async(
        self,
        prompt: ModelInput,
        num_samples: int,
        sampling_params: SamplingParams,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
        topk_sample_logprobs: int = 0,
        target_prompt_logprobs: TensorData | None = None,
        prompt_alt_tokens_k: int = 0,
        prompt_logprobs_last_n: int | None = None,
    ) -> SampleResponse:
        """Async version of :meth:`sample` (returns the response itself)."""
        request, extras = self._sample_request(
            prompt,
            num_samples,
            sampling_params,
            include_prompt_logprobs,
            topk_prompt_logprobs,
            topk_sample_logprobs,
            target_prompt_logprobs,
            prompt_alt_tokens_k,
            prompt_logprobs_last_n,
        )
        return await self._session.bridge(self._sample(request, "sample", extras), "SamplingClient")

    # -- streaming (tinkex_clients._streaming) -------------------------------------------
    def sample_stream(
        self, prompt: ModelInput, sampling_params: SamplingParams, *, num_samples: int = 1
    ) -> SampleStream:
        """Stream the tokens of ``num_samples`` continuations as they are generated: an
        iterator of :class:`SampleStreamChunk` (the last one of each sequence carries its
        ``finish_reason``); ``close()`` it (or ``break``) to stop generation."""
        request = self._request(prompt, num_samples, sampling_params, False, 0)
        return SampleStream(open_sample_stream(self, request))

    def sample_stream_async(
        self, prompt: ModelInput, sampling_params: SamplingParams, *, num_samples: int = 1
    ) -> AsyncSampleStream:
        """Async version of :meth:`sample_stream` (``async for``; ``aclose()`` to stop)."""
        request = self._request(prompt, num_samples, sampling_params, False, 0)
        return AsyncSampleStream(open_sample_stream(self, request))

    async def _compute_logprobs(
        self, request: SampleRequest, extras: SampleExtras | None = None
    ) -> list[float | None]:
        response = await self._sample(request, "compute_logprobs", extras)
        if response.prompt_logprobs is None:
            raise TinkexValidationError(
                "prompt",
                "the server returned no prompt logprobs",
                "check that the server supports prompt_logprobs",
            )
        return list(response.prompt_logprobs)

    def _logprobs_request(self, prompt: Any, last_n: Any) -> tuple[SampleRequest, SampleExtras]:
        extras = as_extras(True, 0, None, 0, last_n)
        return self._request(prompt, 1, SamplingParams(max_tokens=1), True, 0, extras), extras

    def compute_logprobs(
        self, prompt: ModelInput, prompt_logprobs_last_n: int | None = None
    ) -> APIFuture[list[float | None]]:
        """Log-probability of every prompt token given the ones before it (``None`` first);
        with ``prompt_logprobs_last_n`` N only the last N are scored (earlier ones ``None``)."""
        request, extras = self._logprobs_request(prompt, prompt_logprobs_last_n)
        return self._session.run(self._compute_logprobs(request, extras), "SamplingClient")

    async def compute_logprobs_async(
        self, prompt: ModelInput, prompt_logprobs_last_n: int | None = None
    ) -> list[float | None]:
        request, extras = self._logprobs_request(prompt, prompt_logprobs_last_n)
        return await self._session.bridge(self._compute_logprobs(request, extras), "SamplingClient")

    async def _get_sampler(self) -> GetSamplerResponse:
        from urllib.parse import quote

        body = await self._session.get(
            f"/api/v1/samplers/{quote(self.sampling_session_id, safe=':')}"
        )
        return parse_result(body, GetSamplerResponse, what="get_sampler")

    async def _base_model_coro(self) -> str:
        if self._base_model is None:
            self._base_model = (await self._get_sampler()).base_model
        return self._base_model

    def get_base_model(self) -> str:
        """The base model this sampler serves (asked from the server once, then cached)."""
        if self._base_model is not None:
            return self._base_model
        return self._session.call(self._base_model_coro(), "SamplingClient")

    async def get_base_model_async(self) -> str:
        if self._base_model is not None:
            return self._base_model
        return await self._session.bridge(self._base_model_coro(), "SamplingClient")

    def get_tokenizer(self) -> Tokenizer:
        """The tokenizer of the base model (through the ``tinkex_resolve_tokenizer`` hook)."""
        if self._tokenizer is None:
            name = tokenizer_id_for_model(self.get_base_model())
            self._tokenizer = resolve_tokenizer(name, self._session.hooks)
        return self._tokenizer  # type: ignore[no-any-return]

    async def get_tokenizer_async(self) -> Tokenizer:
        if self._tokenizer is None:
            name = tokenizer_id_for_model(await self.get_base_model_async())
            self._tokenizer = await asyncio.to_thread(resolve_tokenizer, name, self._session.hooks)
        return self._tokenizer  # type: ignore[no-any-return]


async def _ready(client: SamplingClient) -> SamplingClient:
    return client


async def create_sampling_client(
    session: Session,
    *,
    model_path: str | None = None,
    base_model: str | None = None,
    retry_config: RetryConfig | None = None,
    record_stability_info: bool = False,
) -> SamplingClient:
    """Create a sampling session on the server and a :class:`SamplingClient` for it
    (arguments already validated)."""
    from tinkex_types import CreateSamplingSessionRequest, CreateSamplingSessionResponse

    request = CreateSamplingSessionRequest(
        session_id=session.session_id or "",
        sampling_session_seq_id=session.next_sampling_session_seq_id(),
        base_model=base_model,
        model_path=model_path,
    )
    with session.span("create_sampling_client", base_model=base_model, model_path=model_path):
        body = await session.post(
            "/api/v1/create_sampling_session", request.to_json_dict(), retries=False
        )
    response = parse_result(body, CreateSamplingSessionResponse, what="create_sampling_session")
    return SamplingClient(
        session,
        sampling_session_id=response.sampling_session_id,
        retry_config=retry_config,
        base_model=base_model,
        model_path=model_path,
        record_stability_info=record_stability_info,
    )
