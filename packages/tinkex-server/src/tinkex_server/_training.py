"""Training runs: create, info, unload and the ``seq_id``-ordered steps.

Each method validates cheaply (a 4xx :class:`~tinkex_server._problems.ApiProblem` naming
the field), builds one job of :mod:`tinkex_server._training_jobs` and hands it to the
:class:`~tinkex_server._context.Desk`; it answers the future at once.

The ``seq_id`` turnstile (:meth:`TrainingService.turnstile`): an ordered request's
``seq_id`` must fit an int64; when the request is refused with a 4xx that the client will
not retry, the model's queue is told that number will never come (so the next request of
that model does not wait the gap grace for it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from tinkex_server._catalog import describe_base_model, tokenizer_id_for
from tinkex_server._checkpoints import checkpoint_name_problem
from tinkex_server._context import Desk, ServerParts, check_int64, text_tokens, user_error
from tinkex_server._custom_losses import custom_loss_for
from tinkex_server._problems import ApiProblem, bad_request, not_found
from tinkex_server._restore import ModelRestorer, lora_settings
from tinkex_server._training_jobs import (
    ForwardJob,
    LoadWeightsJob,
    OptimStepJob,
    SamplerSnapshotJob,
    SaveJob,
    UnloadModelJob,
)
from tinkex_server._training_loads import LoadsMixin, check_optimizer
from tinkex_types import (
    CUSTOM_LOSS_FN,
    AdamParams,
    CreateModelRequest,
    ForwardBackwardInput,
    ForwardBackwardRequest,
    ForwardRequest,
    GetInfoRequest,
    GetInfoResponse,
    ModelData,
    OptimStepRequest,
    SaveWeightsForSamplerRequest,
    SaveWeightsRequest,
    TinkexValidationError,
    UnloadModelRequest,
    UntypedAPIFuture,
    resolve_loss_config,
)

if TYPE_CHECKING:
    from tinkex_server._engine import Datum

__all__ = ["MAX_LORA_RANK", "TrainingService"]

MAX_LORA_RANK = 1024
#: Refusals after which the client sends the same ``seq_id`` again, so the number must stay
#: free: 408/409/429 are retried, and a 415 is re-sent in the other wire format (JSON).
_NOT_RETRIED = frozenset({408, 409, 415, 429})


def _checkpoint_name(name: str | None) -> None:
    problem = checkpoint_name_problem(name) if name is not None else None
    if problem is not None:
        raise bad_request(
            "path",
            problem,
            "use a short name of letters, digits, '-', '_' and '.', e.g. 'step-0010'",
        )


def loss_config(fb: ForwardBackwardInput) -> dict[str, float | str] | None:
    """The whole loss config: ``loss_fn_config`` with ``loss_fn_config_v2`` (0.38: numbers
    or text; its values win) merged over it."""
    merged = {**(fb.loss_fn_config or {}), **(fb.loss_fn_config_v2 or {})}
    return merged or None


def _engine_data(fb: ForwardBackwardInput, field: str) -> tuple[list[Datum], dict[str, float]]:
    """The batch as engine data and the resolved loss config; 400 on an empty batch,
    non-text input or a bad config."""
    if not fb.data:
        raise bad_request(f"{field}.data", "is empty", "send at least one datum")
    try:
        config = (
            {}  # a created loss (loss_id): see custom_loss_for
            if fb.loss_fn == CUSTOM_LOSS_FN
            else resolve_loss_config(fb.loss_fn, loss_config(fb), f"{field}.loss_fn_config")
        )
    except TinkexValidationError as exc:
        raise user_error(exc) from None
    from tinkex_server._engine import Datum

    data = [
        Datum(
            tokens=text_tokens(d.model_input, f"{field}.data[{i}].model_input"),
            loss_fn_inputs=d.loss_fn_inputs,
        )
        for i, d in enumerate(fb.data)
    ]
    return data, config


class TrainingService(LoadsMixin):
    """create_model, get_info, unload_model and the ordered training steps."""

    def __init__(self, parts: ServerParts, desk: Desk) -> None:
        self.parts = parts
        self.desk = desk
        self.store = parts.store
        self.files = parts.files
        self.restorer = ModelRestorer(parts.store, parts.files)
        #: model id -> its inflight samplers (tinker 0.38 ``kind="inflight"``), in save
        #: order: each inflight save moves the earlier ones to its weights.
        self._inflight: dict[str, list[str]] = {}

    # -- the seq_id turnstile ---------------------------------------------------------------
    @contextmanager
    def turnstile(self, model_id: str, seq_id: int | None) -> Iterator[None]:
        """Admit one ordered request of ``model_id``: its ``seq_id`` must fit an int64; a
        refusal (a 4xx the client will not retry) frees the number in the model's queue."""
        try:
            check_int64("seq_id", seq_id, minimum=0)
            yield
        except ApiProblem as exc:
            if 400 <= exc.status < 500 and exc.status not in _NOT_RETRIED:
                self.parts.scheduler.void(model_id, seq_id)
            raise

    def void_refused(self, model_id: str | None, seq_id: int | None, status: int) -> None:
        """A body refused before it was read (malformed, unknown loss...) still frees its
        ``seq_id`` (when the client will not retry the refusal), as :meth:`turnstile` does."""
        if model_id is None or seq_id is None or not 400 <= status < 500:
            return
        if status in _NOT_RETRIED or self.store.get_model(model_id) is None:
            return
        self.parts.scheduler.void(model_id, seq_id)

    def _ordered(
        self,
        job: ForwardJob | OptimStepJob | SaveJob | SamplerSnapshotJob | LoadWeightsJob,
        endpoint: str,
        idempotency_key: str | None,
        dedup_keys: tuple[str, ...] = (),
    ) -> UntypedAPIFuture:
        job.attributes = {"model_id": job.target, "seq_id": job.seq_id, **job.attributes}
        return self.desk.submit(
            job, endpoint=endpoint, idempotency_key=idempotency_key, dedup_keys=dedup_keys
        )

    # -- models -----------------------------------------------------------------------------
    def create_model(
        self,
        req: CreateModelRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> UntypedAPIFuture:
        lc = req.lora_config
        dedup = f"create_model:{req.session_id}:{req.model_seq_id}"
        earlier = self.desk.existing(dedup)
        if earlier is not None:
            return earlier
        check_int64("model_seq_id", req.model_seq_id, minimum=0)
        check_int64("lora_config.seed", lc.seed)
        self.desk.live_session(req.session_id)
        self.desk.base(req.base_model)
        check_optimizer(req.optimizer_config, "optimizer_config")
        if lc.rank > MAX_LORA_RANK:
            raise bad_request(
                "lora_config.rank", f"{lc.rank} is too large", f"use at most {MAX_LORA_RANK}"
            )
        model_id = f"{req.session_id}:train:{req.model_seq_id}"
        return self._new_model(
            model_id,
            req.session_id,
            req.model_seq_id,
            req.base_model,
            lora_settings(lc),
            req.user_metadata,
            carrier,
            idempotency_key=idempotency_key,
        )

    def get_info(self, req: GetInfoRequest) -> GetInfoResponse:
        row = self.store.get_model(req.model_id)
        if row is None:
            raise not_found("model_id", req.model_id)
        desc = describe_base_model(row.base_model)
        return GetInfoResponse(
            model_id=row.model_id,
            model_data=ModelData(
                model_name=row.base_model,
                arch=desc.arch if desc is not None else None,
                tokenizer_id=(
                    tokenizer_id_for(desc, self.parts.config.data_dir) if desc is not None else None
                ),
            ),
            is_lora=True,
            lora_rank=int(row.lora_config["rank"]),
            model_name=row.base_model,
        )

    def unload_model(
        self,
        req: UnloadModelRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> UntypedAPIFuture:
        model_id = req.model_id
        if self.store.get_model(model_id) is None:
            raise not_found("model_id", model_id)
        job = UnloadModelJob(
            target=model_id,
            seq_id=None,
            request_type="UnloadModel",
            carrier=carrier,
            attributes={"model_id": model_id},
            store=self.store,
        )
        return self.desk.submit(
            job,
            endpoint="unload_model",
            idempotency_key=idempotency_key,
            dedup_keys=(f"unload:{model_id}",),
        )

    # -- ordered steps ----------------------------------------------------------------------
    def forward(
        self,
        req: ForwardRequest | ForwardBackwardRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> UntypedAPIFuture:
        # forward_only (protobuf, SDK >= 0.25): the forward of the same message.
        backward = isinstance(req, ForwardBackwardRequest) and not req.forward_only
        with self.turnstile(req.model_id, req.seq_id):
            row = self.desk.model(req.model_id)
            if isinstance(req, ForwardBackwardRequest):
                fb, field = req.forward_backward_input, "forward_backward_input"
            else:
                fb, field = req.forward_input, "forward_input"
            data, config = _engine_data(fb, field)
            custom = custom_loss_for(self.store, row.session_id, fb, field)
        job = ForwardJob(
            target=req.model_id,
            seq_id=req.seq_id,
            request_type="ForwardBackward" if backward else "Forward",
            carrier=carrier,
            attributes={"loss_fn": fb.loss_fn, "num_datums": len(data)},
            store=self.store,
            restorer=self.restorer,
            data=data,
            loss_fn=fb.loss_fn,
            loss_fn_config=config,
            backward=backward,
            custom_loss=custom,
        )
        return self._ordered(job, "forward_backward" if backward else "forward", idempotency_key)

    def optim_step(
        self,
        req: OptimStepRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> UntypedAPIFuture:
        with self.turnstile(req.model_id, req.seq_id):
            self.desk.model(req.model_id)
            params = req.optim_params
            if not isinstance(params, AdamParams):
                raise bad_request(
                    "optim_params.type",
                    f"is {params.type!r} but this model's optimizer is AdamW",
                    "pass AdamParams (the parameters of the model's optimizer)",
                )
        job = OptimStepJob(
            target=req.model_id,
            seq_id=req.seq_id,
            request_type="OptimStep",
            carrier=carrier,
            store=self.store,
            restorer=self.restorer,
            adam_params=params,
        )
        return self._ordered(job, "optim_step", idempotency_key)

    def _named_save(
        self,
        model_id: str,
        seq_id: int | None,
        kind: str,
        name: str,
        ttl_seconds: int | None,
        carrier: Mapping[str, str] | None,
        *,
        overwrite: bool,
        user_metadata: dict[str, str] | None,
    ) -> SaveJob:
        training_state = kind == "weights"
        return SaveJob(
            target=model_id,
            seq_id=seq_id,
            request_type="SaveWeights" if training_state else "SaveWeightsForSampler",
            carrier=carrier,
            store=self.store,
            restorer=self.restorer,
            files=self.files,
            kind=kind,
            name=name,
            ttl_seconds=ttl_seconds,
            directory=self.files.checkpoint_dir(model_id, kind, name),
            path_style=self.parts.config.path_style,
            overwrite=overwrite,
            user_metadata=user_metadata,
        )

    def save_weights(
        self,
        req: SaveWeightsRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> UntypedAPIFuture:
        with self.turnstile(req.model_id, req.seq_id):
            _checkpoint_name(req.path)
            self.desk.model(req.model_id)
            if req.path is None:
                raise bad_request(
                    "path", "is missing", "give the checkpoint a name, e.g. 'step-10'"
                )
        job = self._named_save(
            req.model_id,
            req.seq_id,
            "weights",
            req.path,
            req.ttl_seconds,
            carrier,
            overwrite=req.overwrite,
            user_metadata=req.user_metadata,
        )
        return self._ordered(job, "save_weights", idempotency_key)

    def save_weights_for_sampler(
        self,
        req: SaveWeightsForSamplerRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> UntypedAPIFuture:
        with self.turnstile(req.model_id, req.seq_id):
            _checkpoint_name(req.path)
            row = self.desk.model(req.model_id)
            if req.path is not None:
                # No overwrite flag for sampler weights (tinker 0.38): a name is replaced.
                job = self._named_save(
                    req.model_id,
                    req.seq_id,
                    "sampler_weights",
                    req.path,
                    req.ttl_seconds,
                    carrier,
                    overwrite=True,
                    user_metadata=req.user_metadata,
                )
                return self._ordered(job, "save_weights_for_sampler", idempotency_key)
            check_int64("sampling_session_seq_id", req.sampling_session_seq_id, minimum=0)
            if req.sampling_session_seq_id is None:
                raise bad_request(
                    "path",
                    "give either path (a checkpoint name) or sampling_session_seq_id",
                    "named saves need a name; unnamed saves need the session's next "
                    "sampling_session_seq_id",
                )
            sampler_id = f"{row.session_id}:sample:{req.sampling_session_seq_id}"
            if self.store.get_sampler(sampler_id) is not None:
                earlier = self.desk.existing(f"sampler:{sampler_id}")
                if earlier is not None:
                    return earlier
                raise bad_request(
                    "sampling_session_seq_id",
                    f"{req.sampling_session_seq_id} is already used by sampler {sampler_id!r}",
                    "use the session's next sampling_session_seq_id",
                )
        adopters: tuple[str, ...] = ()
        if req.kind == "inflight":
            inflight = self._inflight.setdefault(req.model_id, [])
            adopters = tuple(s for s in inflight if s != sampler_id)
            if sampler_id not in inflight:
                inflight.append(sampler_id)
        snapshot = SamplerSnapshotJob(
            target=req.model_id,
            seq_id=req.seq_id,
            request_type="SaveWeightsForSampler",
            carrier=carrier,
            store=self.store,
            restorer=self.restorer,
            files=self.files,
            sampler_id=sampler_id,
            session_id=row.session_id,
            base_model=row.base_model,
            snapshot=self.files.sampler_dir(sampler_id),
            adopters=adopters,
        )
        return self._ordered(
            snapshot, "save_weights_for_sampler", idempotency_key, (f"sampler:{sampler_id}",)
        )
