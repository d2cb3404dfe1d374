"""``load_weights`` of :class:`~tinkex_server._training.TrainingService`: into an existing
model (legacy addressing, ordered by ``seq_id``), or creating the model from the checkpoint
(tinker 0.38: ``session_id`` + ``model_seq_id``, with ``base_model``, ``user_metadata`` and
``optimizer_config``)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from tinkex_server._context import Desk, ServerParts, check_int64
from tinkex_server._generations import LoadWeightsCreateRequest
from tinkex_server._problems import bad_request
from tinkex_server._restore import ModelRestorer
from tinkex_server._store import Store
from tinkex_server._training_jobs import CreateModelJob, LoadWeightsJob
from tinkex_types import OptimizerConfigBase, TinkerPath, UntypedAPIFuture

if TYPE_CHECKING:
    from tinkex_server._checkpoints import CheckpointFiles

__all__ = ["LoadsMixin", "check_optimizer"]


def check_optimizer(config: OptimizerConfigBase | None, field: str) -> None:
    """Only AdamW trains here: another family is a 400 naming ``<field>.type``."""
    if config is None or config.type == "adamw":
        return
    raise bad_request(
        f"{field}.type",
        f"{config.type!r} is not supported by tinkex serve (Dimuon's update rule depends on "
        "constants tinker does not publish)",
        "use the default optimizer: {'type': 'adamw'} (AdamOptimizerConfig)",
    )


class LoadsMixin:
    """``load_weights`` in both addressings."""

    parts: ServerParts
    desk: Desk
    store: Store
    files: CheckpointFiles
    restorer: ModelRestorer

    if TYPE_CHECKING:  # pragma: no cover - TrainingService's own

        def turnstile(self, model_id: str, seq_id: int | None) -> AbstractContextManager[None]: ...

        def _ordered(
            self,
            job: LoadWeightsJob,
            endpoint: str,
            idempotency_key: str | None,
            dedup_keys: tuple[str, ...] = (),
        ) -> UntypedAPIFuture: ...

    def _new_model(
        self,
        model_id: str,
        session_id: str,
        model_seq_id: int,
        base_model: str,
        lora: dict[str, Any],
        user_metadata: Any,
        carrier: Mapping[str, str] | None,
        *,
        idempotency_key: str | None,
    ) -> UntypedAPIFuture:
        """Register model ``model_id`` (refused when the session already has it) and submit
        its creation, the model's step 0: the one path of ``create_model`` and of a
        ``load_weights`` that creates the model."""
        if self.store.get_model(model_id) is not None:
            raise bad_request(
                "model_seq_id",
                f"model {model_id!r} already exists",
                "use the next model_seq_id of this session",
            )
        self.store.insert_model(
            model_id,
            session_id=session_id,
            model_seq_id=model_seq_id,
            base_model=base_model,
            lora_config=lora,
            user_metadata=user_metadata,
        )
        job = CreateModelJob(
            target=model_id,
            seq_id=None,
            request_type="CreateModel",
            carrier=carrier,
            attributes={"model_id": model_id, "base_model": base_model},
            store=self.store,
            base_model=base_model,
            lora=lora,
        )
        return self.desk.submit(
            job,
            endpoint="create_model",
            idempotency_key=idempotency_key,
            session_id=session_id,
            dedup_keys=(f"create_model:{session_id}:{model_seq_id}",),
        )

    def load_weights(
        self,
        req: LoadWeightsCreateRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> UntypedAPIFuture:
        """Load a training checkpoint into ``model_id`` (legacy addressing, ordered by
        ``seq_id``), or create ``<session_id>:train:<model_seq_id>`` from it (0.38)."""
        if req.model_id is None:
            return self._load_creating(req, idempotency_key, carrier)
        with self.turnstile(req.model_id, req.seq_id):
            self.desk.model(req.model_id)
            path = self.desk.parse_path(req.path, "path", prefer="weights")
        job = self._load_job(req.model_id, req.seq_id, path, req.optimizer, carrier)
        return self._ordered(job, "load_weights", idempotency_key)

    def _load_job(
        self,
        model_id: str,
        seq_id: int | None,
        path: TinkerPath,
        optimizer: bool,
        carrier: Mapping[str, str] | None,
    ) -> LoadWeightsJob:
        return LoadWeightsJob(
            target=model_id,
            seq_id=seq_id,
            request_type="LoadWeights",
            carrier=carrier,
            store=self.store,
            restorer=self.restorer,
            replaces_state=True,
            files=self.files,
            path=path,
            optimizer=optimizer,
        )

    def _load_creating(
        self,
        req: LoadWeightsCreateRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> UntypedAPIFuture:
        """0.38: the load is the new model's seq 0; base model and LoRA settings come from
        the checkpoint's training run. Later steps of the model start at ``seq_id`` 1."""
        session_id, model_seq_id = req.session_id, req.model_seq_id
        assert session_id is not None
        assert model_seq_id is not None
        check_int64("model_seq_id", model_seq_id, minimum=0)
        model_id = f"{session_id}:train:{model_seq_id}"
        dedup = f"load_create:{model_id}:{req.path}"  # a retry answers the same future
        earlier = self.desk.existing(dedup)
        if earlier is not None:
            return earlier
        self.desk.live_session(session_id)
        path = self.desk.parse_path(req.path, "path", prefer="weights")
        if path.kind != "weights":
            raise bad_request(
                "path",
                f"{req.path!r} holds sampler weights, not a training state",
                "load a tinker://<run>/weights/<name> checkpoint (save_state)",
            )
        self.desk.checkpoint_at(path)
        run = self.desk.run_of(path)
        if req.base_model is not None and req.base_model != run.base_model:
            raise bad_request(
                "base_model",
                f"{req.path} was trained on {run.base_model!r}, not {req.base_model!r}",
                "omit base_model or give the checkpoint's own",
            )
        check_optimizer(req.optimizer_config, "optimizer_config")
        self._new_model(
            model_id,
            session_id,
            model_seq_id,
            run.base_model,
            dict(run.lora_config),
            req.user_metadata,
            carrier,
            idempotency_key=None,
        )
        job = self._load_job(model_id, None, path, req.optimizer, carrier)
        return self._ordered(job, "load_weights", idempotency_key, (dedup,))
