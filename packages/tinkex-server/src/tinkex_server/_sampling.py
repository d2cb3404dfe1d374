"""Sampling: sampling sessions, sampler lookups, ``asample`` (and the checks of
``stream_sample``, :mod:`tinkex_server._streaming`).

A sample request names what to sample from (a sampling session, a checkpoint path or a
base model), is checked against the model's context and the server's limits (400 naming
the field), and becomes one :class:`ServerSampleJob`. Sampling jobs skip the ``seq_id``
queues: the scheduler hands every queued one (up to ``max_sample_batch``) to the engine as
one batch. A full sampling queue answers 429 with the queue state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tinkex_server._catalog import BaseModelDesc
from tinkex_server._checkpoints import CheckpointFiles
from tinkex_server._context import Desk, ServerParts, check_int64, text_tokens, user_error
from tinkex_server._generations import SampleFuture
from tinkex_server._jobs import SampleJob
from tinkex_server._problems import ApiProblem, bad_request, not_found
from tinkex_server._sampling_extras import (
    SparseLayout,
    check_extras,
    result_extras,
    sequence_model,
    target_ids,
    target_layout,
)
from tinkex_server._store import SamplerRow
from tinkex_types import (
    CreateSamplingSessionRequest,
    CreateSamplingSessionResponse,
    GetSamplerResponse,
    SampleRequest,
    SampleResponse,
    SamplingParams,
    TinkexValidationError,
    UntypedAPIFuture,
    WireModel,
    check_sampling_params,
    resolve_max_tokens,
    split_stop,
)

if TYPE_CHECKING:
    from tinkex_server._engine import Engine, SampleResult

__all__ = ["SamplingService", "ServerSampleJob"]

_Sampling = tuple[int, tuple[str, ...], tuple[int, ...]]


@dataclass(kw_only=True, eq=False)
class ServerSampleJob(SampleJob):
    """Sample from a sampler: load its weights if the engine lacks them, then sample."""

    files: CheckpointFiles
    sampler: SamplerRow
    want_prompt_logprobs: bool
    want_topk: bool
    want_sample_topk: bool = False
    #: The CSR layout of a sparse ``target_prompt_logprobs`` (its answer keeps it).
    target_layout: SparseLayout | None = None

    def prepare(self, engine: Engine) -> None:
        adapter_id = self.sample.model_id
        if adapter_id is None or engine.has_adapter(adapter_id):
            return
        assert self.sampler.source_dir is not None
        directory = self.files.absolute(self.sampler.source_dir)
        if not directory.is_dir():
            raise TinkexValidationError(
                "sampling_session_id",
                f"the weights of sampler {self.sampler.sampler_id!r} are gone "
                "(checkpoint deleted?)",
                "create a new sampling session",
            )
        engine.load_sampler_weights(adapter_id, directory, base_model=self.sampler.base_model)

    def finish(self, output: SampleResult) -> WireModel:
        sequences = [sequence_model(s, self.want_sample_topk) for s in output.sequences]
        topk: list[Any] | None = None
        if self.want_topk and output.topk_prompt_logprobs is not None:
            topk = [
                None if pos is None else [(int(t), float(lp)) for t, lp in pos]
                for pos in output.topk_prompt_logprobs
            ]
        return SampleResponse.model_construct(
            sequences=sequences,
            prompt_logprobs=output.prompt_logprobs if self.want_prompt_logprobs else None,
            topk_prompt_logprobs=topk,
            **result_extras(output, self.target_layout),
        )


class SamplingService:
    """create_sampling_session, get_sampler and asample."""

    def __init__(self, parts: ServerParts, desk: Desk) -> None:
        self.parts = parts
        self.config = parts.config
        self.desk = desk
        self.store = parts.store

    # -- samplers ---------------------------------------------------------------------------
    def create_sampling_session(
        self, req: CreateSamplingSessionRequest
    ) -> CreateSamplingSessionResponse:
        check_int64("sampling_session_seq_id", req.sampling_session_seq_id, minimum=0)
        self.desk.live_session(req.session_id)
        sampler_id = f"{req.session_id}:sample:{req.sampling_session_seq_id}"
        answer = CreateSamplingSessionResponse(sampling_session_id=sampler_id)
        existing = self.store.get_sampler(sampler_id)
        if existing is not None:
            same = (
                existing.model_path == req.model_path
                if req.model_path is not None
                else existing.model_path is None and existing.base_model == req.base_model
            )
            if not same:
                raise bad_request(
                    "sampling_session_seq_id",
                    f"{req.sampling_session_seq_id} is already used by sampler {sampler_id!r}",
                    "use the session's next sampling_session_seq_id",
                )
            return answer
        row = self._source(req.model_path, req.base_model)
        self.store.insert_sampler(
            sampler_id,
            session_id=req.session_id,
            base_model=row.base_model,
            model_path=row.model_path,
            source_dir=row.source_dir,
            source_kind=row.source_kind,
        )
        return answer

    def _source(self, model_path: str | None, base_model: str | None) -> SamplerRow:
        """What a sampler serves: a checkpoint (``model_path``) or a base model."""
        if model_path is not None:
            tp = self.desk.parse_path(model_path, "model_path", prefer="sampler_weights")
            ckpt = self.desk.checkpoint_at(tp)
            run = self.desk.run_of(tp)
            if base_model is not None and base_model != run.base_model:
                raise bad_request(
                    "base_model",
                    f"{model_path} was trained on {run.base_model!r}, not {base_model!r}",
                    "omit base_model or give the checkpoint's own",
                )
            return SamplerRow(
                sampler_id=f"path:{tp}",
                session_id=None,
                base_model=run.base_model,
                model_path=str(tp),
                source_dir=ckpt.directory,
                source_kind=ckpt.checkpoint_type,
                created_at=ckpt.created_at,
            )
        if base_model is None:
            raise bad_request(
                "base_model", "give base_model or model_path", "say what the sampler should serve"
            )
        self.desk.base(base_model)
        return SamplerRow(
            sampler_id=f"base:{base_model}",
            session_id=None,
            base_model=base_model,
            model_path=None,
            source_dir=None,
            source_kind=None,
            created_at=0.0,
        )

    def get_sampler(self, sampler_id: str) -> GetSamplerResponse:
        row = self.store.get_sampler(sampler_id)
        if row is None:
            raise not_found("sampler_id", sampler_id)
        return GetSamplerResponse(
            sampler_id=row.sampler_id, base_model=row.base_model, model_path=row.model_path
        )

    def _sampler_for(self, req: SampleRequest) -> SamplerRow:
        if req.sampling_session_id is None:
            return self._source(req.model_path, req.base_model)
        row = self.store.get_sampler(req.sampling_session_id)
        if row is None:
            raise not_found(
                "sampling_session_id",
                req.sampling_session_id,
                "create one with create_sampling_session",
            )
        return row

    # -- asample ----------------------------------------------------------------------------
    def _prompt(self, req: SampleRequest, desc: BaseModelDesc, base_model: str) -> list[int]:
        prompt = text_tokens(req.prompt, "prompt")
        if not prompt:
            raise bad_request("prompt", "is empty", "give at least one token")
        if desc.vocab_size and any(t < 0 or t >= desc.vocab_size for t in prompt):
            raise bad_request(
                "prompt",
                f"holds token ids outside [0, {desc.vocab_size})",
                f"tokenize with the tokenizer of {base_model!r}",
            )
        return prompt

    def _limits(self, req: SampleRequest) -> None:
        cfg = self.config
        if req.num_samples > cfg.max_num_samples:
            raise bad_request(
                "num_samples",
                f"{req.num_samples} is too many",
                f"use at most {cfg.max_num_samples}",
            )
        if req.topk_prompt_logprobs > cfg.max_topk_prompt_logprobs:
            raise bad_request(
                "topk_prompt_logprobs",
                f"{req.topk_prompt_logprobs} is too large",
                f"use at most {cfg.max_topk_prompt_logprobs}",
            )

    def _sampling(self, sp: SamplingParams, prompt_len: int, desc: BaseModelDesc) -> _Sampling:
        """``(max_tokens, stop strings, stop ids)``: :func:`check_sampling_params`, then
        the room the prompt leaves in the context (400 naming the sub-field)."""
        try:
            check_sampling_params(sp)
            max_tokens = resolve_max_tokens(
                sp,
                prompt_tokens=prompt_len,
                context_length=desc.context_length,
                default=self.config.default_max_tokens,
            )
            strings, ids = split_stop(sp.stop)
        except TinkexValidationError as exc:
            raise user_error(exc) from None
        return max_tokens, strings, ids

    def _back_pressure(self) -> None:
        if self.parts.scheduler.queued_samples >= self.config.max_queued_samples:
            raise ApiProblem(
                429,
                "the sampling queue is full; retry shortly",
                extra={
                    "queue_state": "paused_capacity",
                    "queue_state_reason": "the local sampling queue is full",
                },
                headers={"retry-after-ms": "1000"},
            )

    def sample_job(
        self, req: SampleRequest, carrier: Mapping[str, str] | None, request_type: str = "Sample"
    ) -> ServerSampleJob:
        """The engine job of a sample request, every check done (4xx naming the field)."""
        check_int64("seq_id", req.seq_id)
        sampler = self._sampler_for(req)
        desc = self.desk.base(sampler.base_model)
        prompt = self._prompt(req, desc, sampler.base_model)
        self._limits(req)
        check_extras(req, len(prompt), self.config.max_topk_prompt_logprobs)
        targets = target_ids(req.target_prompt_logprobs, len(prompt), desc.vocab_size)
        sp = req.sampling_params
        max_tokens, stop_strings, stop_ids = self._sampling(sp, len(prompt), desc)
        self._back_pressure()
        from tinkex_server._engine import SampleRequest as EngineSample

        adapter_id = sampler.sampler_id if sampler.source_dir is not None else None
        return ServerSampleJob(
            target=sampler.sampler_id,
            seq_id=req.seq_id,
            request_type=request_type,
            carrier=carrier,
            attributes={"sampler_id": sampler.sampler_id, "num_samples": req.num_samples},
            sample=EngineSample(
                prompt=prompt,
                max_tokens=max_tokens,
                model_id=adapter_id,
                base_model=sampler.base_model if adapter_id is None else None,
                num_samples=req.num_samples,
                temperature=sp.temperature,
                top_k=sp.top_k,
                top_p=sp.top_p,
                seed=sp.seed,
                stop_token_ids=stop_ids,
                stop_strings=stop_strings,
                prompt_logprobs=req.prompt_logprobs,
                topk_prompt_logprobs=req.topk_prompt_logprobs,
                prompt_logprobs_last_n=req.prompt_logprobs_last_n,
                topk_sample_logprobs=req.topk_sample_logprobs,
                target_prompt_logprobs=targets,
                prompt_alt_tokens_k=req.prompt_alt_tokens_k,
            ),
            files=self.parts.files,
            sampler=sampler,
            want_prompt_logprobs=req.prompt_logprobs,
            want_topk=req.topk_prompt_logprobs > 0,
            want_sample_topk=req.topk_sample_logprobs > 0,
            target_layout=target_layout(req.target_prompt_logprobs),
        )

    def asample(
        self,
        req: SampleRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> UntypedAPIFuture:
        job = self.sample_job(req, carrier)
        sampler = job.sampler
        future = self.desk.submit(
            job,
            endpoint="asample",
            idempotency_key=idempotency_key,
            session_id=sampler.session_id,
            dedup_seq=False,
        )
        # One id per sample (0.38 asserts them): unique, as the future's id is.
        ids = [f"{future.request_id}:{i}" for i in range(req.num_samples)]
        return SampleFuture(request_id=future.request_id, sample_sequence_ids=ids)
