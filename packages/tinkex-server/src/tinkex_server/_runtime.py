"""The service layer: what every endpoint does, independent of HTTP framing.

:class:`Runtime` owns the store, the checkpoint files, the engine worker and the scheduler
of one data directory. Submit methods validate cheaply, de-duplicate, record the future and
queue a :class:`~tinkex_server._scheduler.Job`; they return the future body at once. Every
refusal is an :class:`~tinkex_server._problems.ApiProblem` (4xx with a ``detail`` naming the
field). Work that fails inside the engine becomes a failed future
(``{"error", "category"}``).

What survives a restart (kill -9 included): sessions, training runs (models) with their
LoRA config and seed, every completed future result (until ``result_ttl_s``), every saved
checkpoint and sampler, de-duplication keys, telemetry and the applied-steps log. Futures
that were still pending are answered 410 afterwards. A model's weights and optimizer state
are rebuilt lazily, at its next request, from its newest saved training-state checkpoint
(``save_weights``/``save_state``), or from its seeded initialisation if it has none. If steps
that change the state (``forward_backward``, ``optim_step``, ``load_weights``) were applied
after that checkpoint, they are gone: the model is then marked ``corrupted`` and every
request on it fails with an error naming the lost ``seq_id`` range and the ``seq_id`` its
state is back to, until a ``load_weights`` puts a checkpoint back (nothing continues silently
from an older state).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from tinkex_server._catalog import BaseModelDesc, builtin_descs, describe_base_model
from tinkex_server._checkpoints import CheckpointFiles, dir_size
from tinkex_server._config import ServerConfig
from tinkex_server._problems import ApiProblem, bad_request, not_found
from tinkex_server._scheduler import FutureHub, Job, Scheduler
from tinkex_server._store import CheckpointRow, ModelRow, SamplerRow, Store
from tinkex_server._worker import EngineWorker
from tinkex_types import (
    CreateModelRequest,
    CreateSamplingSessionRequest,
    CreateSessionRequest,
    EncodedTextChunk,
    ForwardBackwardInput,
    ForwardBackwardRequest,
    ForwardRequest,
    FutureRetrieveRequest,
    GetInfoRequest,
    LoadWeightsRequest,
    ModelInput,
    OptimStepRequest,
    SampleRequest,
    SaveWeightsForSamplerRequest,
    SaveWeightsRequest,
    SessionHeartbeatRequest,
    SetCheckpointTtlRequest,
    TinkerPath,
    TinkexValidationError,
    UnloadModelRequest,
    WeightsInfoRequest,
)

if TYPE_CHECKING:
    from tinkex_server._engine import Engine

__all__ = ["Runtime"]

_log = logging.getLogger("tinkex_server")

MAX_LORA_RANK = 1024
_ACCESS_SCOPES = ("owned", "accessible")
#: Operations whose effect lives only in the engine's memory (lost on a restart unless a
#: later training checkpoint holds it).
_STATEFUL = frozenset({"ForwardBackward", "OptimStep", "LoadWeights"})


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


_INT64 = 2**63


def _int64(field: str, value: int | None, *, minimum: int = -_INT64) -> None:
    """400 unless ``value`` is None or fits a signed 64-bit integer (and >= ``minimum``)."""
    if value is not None and not minimum <= value < _INT64:
        raise bad_request(
            field, f"{value} is out of range", f"use an integer in [{minimum}, 2**63)"
        )


def _text_tokens(model_input: ModelInput, field: str) -> list[int]:
    out: list[int] = []
    for j, chunk in enumerate(model_input.chunks):
        if not isinstance(chunk, EncodedTextChunk):
            raise bad_request(
                f"{field}.chunks[{j}]",
                f"{chunk.type} chunks are not supported: this server serves text-only models",
                "send token chunks ({'tokens': [...]}) only",
            )
        out.extend(chunk.tokens)
    return out


class _DataDirLock:
    """An exclusive lock on ``<data_dir>/server.lock`` (one server per data directory)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "server.lock"
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            owner = fh.read().strip() or "unknown"
            fh.close()
            raise RuntimeError(
                f"data directory {self.path.parent} is in use by another tinkex-server "
                f"(pid {owner}); stop it or choose another --data-dir / TINKEX_DATA_DIR"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None


class Runtime:
    """State and operations of one server (one data directory)."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        engine_factory: Callable[[], Engine] | None = None,
    ) -> None:
        self.config = config
        self._engine_factory = engine_factory
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._lock = _DataDirLock(config.data_dir)
        self._janitor: asyncio.Task[None] | None = None
        # Created by start():
        self.store: Store
        self.files: CheckpointFiles
        self.worker: EngineWorker
        self.hub: FutureHub
        self.scheduler: Scheduler

    # ====================================================================== lifecycle
    @property
    def started(self) -> bool:
        return self._started

    async def ensure_started(self) -> None:
        """Open the store and start the scheduler on the running loop (once)."""
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            self._start()

    def _start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self.store = Store.open(self.config.db_path)
            lost = self.store.recover_after_restart()
            if lost:
                _log.warning("%d futures were pending when the server stopped: now 410", len(lost))
            self.files = CheckpointFiles(self.config.data_dir, self.store.secret())
            self.worker = EngineWorker(self._engine_factory)
            self.hub = FutureHub()
            self.scheduler = Scheduler(
                self.store,
                self.worker,
                self.hub,
                grace_s=self.config.seq_gap_grace_s,
                max_batch=self.config.max_sample_batch,
            )
            self.scheduler.start()
            self._janitor = asyncio.get_running_loop().create_task(self._janitor_loop())
        except BaseException:
            self._lock.release()
            raise
        self._started = True

    async def aclose(self) -> None:
        """Stop the scheduler and the engine worker, close the store, release the lock."""
        if not self._started:
            return
        self._started = False
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
        await self.scheduler.stop()
        await asyncio.get_running_loop().run_in_executor(None, self.worker.close)
        self.store.close()
        self._lock.release()

    async def _janitor_loop(self) -> None:
        while True:
            try:
                self.housekeeping()
            except Exception:
                _log.exception("housekeeping failed")
            await asyncio.sleep(min(3600.0, self.config.result_ttl_s))

    def housekeeping(self) -> None:
        """Expire old results, forget old create_session answers, delete expired
        checkpoints' files."""
        now = time.time()
        self.store.expire_results(now - self.config.result_ttl_s)
        self.store.dedup_purge("idem:create_session:", now - self.config.idempotency_ttl_s)
        for ckpt in self.store.expired_checkpoints(now):
            self.files.remove(ckpt.training_run_id, ckpt.kind, ckpt.name)
            self.store.delete_checkpoint(ckpt.training_run_id, ckpt.kind, ckpt.name)

    # ====================================================================== helpers
    @staticmethod
    def _new_request_id() -> str:
        return uuid.uuid4().hex

    def _session(self, session_id: str) -> None:
        if self.store.get_session(session_id) is None:
            raise not_found("session_id", session_id, "create a session first (create_session)")

    def _base(self, name: str, field: str = "base_model") -> BaseModelDesc:
        desc = describe_base_model(name)
        if desc is None:
            known = ", ".join(d.name for d in builtin_descs())
            raise bad_request(
                field,
                f"unknown base model {name!r}",
                f"use a built-in model ({known}) or a local directory holding config.json "
                "and model.safetensors",
            )
        return desc

    def _model(self, model_id: str) -> ModelRow:
        row = self.store.get_model(model_id)
        if row is None:
            raise not_found("model_id", model_id, "create the model first (create_model)")
        if row.status == "failed":
            raise bad_request("model_id", f"model {model_id!r} could not be created: {row.error}")
        if row.status == "unloaded":
            raise bad_request(
                "model_id",
                f"model {model_id!r} was unloaded",
                "create a new model, or one from a saved checkpoint",
            )
        return row

    def _future_body(self, request_id: str) -> dict[str, Any]:
        row = self.store.get_future(request_id)
        body: dict[str, Any] = {"request_id": request_id}
        if row is not None and row.request_type != "Sample" and row.target is not None:
            body["model_id"] = row.target
        return body

    def _submit(
        self,
        *,
        target: str,
        seq_id: int | None,
        request_type: str,
        endpoint: str,
        idempotency_key: str | None,
        session_id: str | None,
        make_job: Callable[[str], Job],
        dedup_keys: tuple[str, ...] = (),
        dedup_seq: bool = True,
    ) -> dict[str, Any]:
        keys: list[str] = []
        if idempotency_key:
            keys.append(f"idem:{endpoint}:{idempotency_key}")
        if seq_id is not None and dedup_seq:
            keys.append(f"seq:{target}:{seq_id}")
        keys.extend(dedup_keys)
        for key in keys:
            existing, _ = self.store.dedup_get(key)
            if existing is not None:
                return self._future_body(existing)
        request_id = self._new_request_id()
        self.store.insert_future(
            request_id,
            target=target,
            seq_id=seq_id,
            request_type=request_type,
            session_id=session_id,
            dedup_keys=keys,
        )
        self.hub.add(request_id)
        self.scheduler.submit(make_job(request_id))
        return self._future_body(request_id)

    # -- engine-side helpers (run on the engine thread) --------------------------------------
    def _lost_state(self, model_id: str, ckpt: CheckpointRow | None) -> str | None:
        """Why rebuilding ``model_id`` from ``ckpt`` (its newest training checkpoint, or its
        seeded initialisation when ``None``) would not give its state back: the stateful
        steps applied after that point. ``None`` when nothing was lost."""
        steps = [s for s in self.store.applied_steps(model_id) if s.outcome == "ok"]
        start = 0
        kept = "its seeded initialisation (it has no training checkpoint)"
        if ckpt is not None:
            # The save that wrote ckpt committed in the transaction that stamped created_at.
            start = next(
                (i for i, s in enumerate(steps) if s.applied_at >= ckpt.created_at), len(steps)
            )
            if start < len(steps) and steps[start].request_type == "SaveWeights":
                kept = f"its newest training checkpoint {ckpt.tinker_path}"
                if steps[start].seq_id is not None:
                    kept += f" (saved by seq_id {steps[start].seq_id})"
                start += 1
            else:
                kept = f"its newest training checkpoint {ckpt.tinker_path}"
        lost = [s for s in steps[start:] if s.request_type in _STATEFUL]
        if not lost:
            return None
        seqs = [s.seq_id for s in lost if s.seq_id is not None]
        kinds = ", ".join(sorted({s.request_type for s in lost}))
        span = f"seq_id {seqs[0]}..{seqs[-1]}" if seqs else "steps"
        durable = [s.seq_id for s in steps[:start] if s.seq_id is not None]
        last = (
            f"its state is back to what it was after seq_id {durable[-1]}"
            if durable
            else "its state is back to its seeded initialisation"
        )
        return (
            f"model {model_id!r} lost {len(lost)} step(s) when the server restarted: "
            f"{span} ({kinds}) were applied after {kept}, and only training checkpoints "
            f"survive a restart; {last}"
        )

    def _ensure_model(self, engine: Engine, model_id: str, *, allow_lost: bool = False) -> bool:
        """Make sure the engine holds ``model_id``; rebuild it from the store if not.

        A model whose stateful steps after its newest training checkpoint were lost (a
        restart) is refused (and marked corrupted) unless ``allow_lost`` (``load_weights``,
        which replaces the state); returns whether such a model was rebuilt.
        """
        if engine.has_adapter(model_id):
            return False
        from tinkex_server._engine import LoraConfig as EngineLora
        from tinkex_server._engine import UnknownModelError

        row = self.store.get_model(model_id)
        if row is None:
            raise UnknownModelError("model_id", f"unknown model {model_id!r}")
        if row.status == "failed":
            raise TinkexValidationError(
                "model_id", f"model {model_id!r} could not be created: {row.error}"
            )
        if row.status == "unloaded":
            raise TinkexValidationError("model_id", f"model {model_id!r} was unloaded")
        ckpt = self.store.latest_checkpoint(model_id, "weights")
        lost = self._lost_state(model_id, ckpt)
        if lost is not None and not allow_lost:
            self.store.set_corrupted(model_id, True)
            raise TinkexValidationError(
                "model_id",
                lost,
                "load a checkpoint into this model (load_state / load_state_with_optimizer) "
                "or create a training client from one, then repeat the steps after it",
            )
        lc = row.lora_config
        engine.create_adapter(
            model_id,
            row.base_model,
            EngineLora(
                rank=int(lc["rank"]),
                seed=lc.get("seed"),
                train_attn=bool(lc.get("train_attn", True)),
                train_mlp=bool(lc.get("train_mlp", True)),
                train_unembed=bool(lc.get("train_unembed", True)),
                alpha=lc.get("alpha"),
            ),
        )
        if ckpt is not None:
            directory = self.files.absolute(ckpt.directory)
            try:
                info = engine.read_state_info(directory)
                engine.load_state(model_id, directory, with_optimizer=info.has_optimizer)
            except Exception:
                engine.remove_adapter(model_id)
                raise
            _log.info("model %s restored from checkpoint %s", model_id, ckpt.tinker_path)
        return lost is not None

    def _touch(self, model_id: str, **fields: Any) -> None:
        self.store.update_model(model_id, last_request_time=time.time(), **fields)

    # ====================================================================== sessions
    def create_session(
        self, req: CreateSessionRequest, idempotency_key: str | None
    ) -> dict[str, Any]:
        key = f"idem:create_session:{idempotency_key}" if idempotency_key else None
        if key is not None:
            _, cached = self.store.dedup_get(key)
            if cached is not None:
                return dict(cached)
        session_id = str(uuid.uuid4())
        self.store.create_session(
            session_id,
            tags=list(req.tags),
            user_metadata=req.user_metadata,
            sdk_version=req.sdk_version,
            project_id=req.project_id,
        )
        body = {"session_id": session_id}
        if key is not None:
            self.store.dedup_put(key, response=body)
        return body

    def heartbeat(self, req: SessionHeartbeatRequest) -> dict[str, Any]:
        if not self.store.touch_session(req.session_id):
            raise not_found("session_id", req.session_id)
        return {"type": "session_heartbeat"}

    # ====================================================================== models
    def create_model(
        self,
        req: CreateModelRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        lc = req.lora_config
        dedup = f"create_model:{req.session_id}:{req.model_seq_id}"
        existing, _ = self.store.dedup_get(dedup)
        if existing is not None:
            return self._future_body(existing)
        _int64("model_seq_id", req.model_seq_id, minimum=0)
        _int64("lora_config.seed", lc.seed)
        self._session(req.session_id)
        self._base(req.base_model)
        if lc.rank > MAX_LORA_RANK:
            raise bad_request(
                "lora_config.rank", f"{lc.rank} is too large", f"use at most {MAX_LORA_RANK}"
            )
        model_id = f"{req.session_id}:train:{req.model_seq_id}"
        if self.store.get_model(model_id) is not None:
            raise bad_request(
                "model_seq_id",
                f"model {model_id!r} already exists",
                "use the next model_seq_id of this session",
            )
        lora = {
            "rank": lc.rank,
            "seed": lc.seed,
            "train_attn": lc.train_attn,
            "train_mlp": lc.train_mlp,
            "train_unembed": lc.train_unembed,
        }
        self.store.insert_model(
            model_id,
            session_id=req.session_id,
            model_seq_id=req.model_seq_id,
            base_model=req.base_model,
            lora_config=lora,
            user_metadata=req.user_metadata,
        )

        def execute(engine: Engine) -> Any:
            from tinkex_server._engine import LoraConfig as EngineLora

            return engine.create_adapter(
                model_id,
                req.base_model,
                EngineLora(
                    rank=lc.rank,
                    seed=lc.seed,
                    train_attn=lc.train_attn,
                    train_mlp=lc.train_mlp,
                    train_unembed=lc.train_unembed,
                ),
            )

        def finish(info: Any) -> dict[str, Any]:
            self.store.update_model(
                model_id,
                status="ready",
                lora_config={**lora, "seed": info.seed, "alpha": info.alpha},
            )
            return {"model_id": model_id}

        def on_failure(exc: BaseException) -> None:
            self.store.update_model(model_id, status="failed", error=str(exc))

        def make(request_id: str) -> Job:
            return Job(
                request_id=request_id,
                target=model_id,
                seq_id=None,
                request_type="CreateModel",
                execute=execute,
                finish=finish,
                on_failure=on_failure,
                carrier=carrier,
                attributes={"model_id": model_id, "base_model": req.base_model},
            )

        return self._submit(
            target=model_id,
            seq_id=None,
            request_type="CreateModel",
            endpoint="create_model",
            idempotency_key=idempotency_key,
            session_id=req.session_id,
            make_job=make,
            dedup_keys=(dedup,),
        )

    def get_info(self, req: GetInfoRequest) -> dict[str, Any]:
        row = self.store.get_model(req.model_id)
        if row is None:
            raise not_found("model_id", req.model_id)
        desc = describe_base_model(row.base_model)
        model_data: dict[str, Any] = {"model_name": row.base_model}
        if desc is not None:
            model_data["arch"] = desc.arch
            if desc.tokenizer_id is not None:
                model_data["tokenizer_id"] = desc.tokenizer_id
        return {
            "model_id": row.model_id,
            "model_data": model_data,
            "is_lora": True,
            "lora_rank": int(row.lora_config["rank"]),
            "model_name": row.base_model,
        }

    def unload_model(
        self,
        req: UnloadModelRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        model_id = req.model_id
        if self.store.get_model(model_id) is None:
            raise not_found("model_id", model_id)

        def execute(engine: Engine) -> Any:
            if engine.has_adapter(model_id):
                engine.remove_adapter(model_id)
            return None

        def finish(_: Any) -> dict[str, Any]:
            self._touch(model_id, status="unloaded")
            return {"model_id": model_id}

        return self._submit(
            target=model_id,
            seq_id=None,
            request_type="UnloadModel",
            endpoint="unload_model",
            idempotency_key=idempotency_key,
            session_id=None,
            make_job=lambda rid: Job(
                rid,
                model_id,
                None,
                "UnloadModel",
                execute=execute,
                finish=finish,
                carrier=carrier,
                attributes={"model_id": model_id},
            ),
            dedup_keys=(f"unload:{model_id}",),
        )

    # ====================================================================== training
    def _ordered(
        self,
        *,
        model_id: str,
        seq_id: int | None,
        request_type: str,
        endpoint: str,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
        execute: Callable[[Engine], Any],
        finish: Callable[[Any], dict[str, Any]],
        dedup_keys: tuple[str, ...] = (),
        extra_attrs: Mapping[str, Any] | None = None,
        replaces_state: bool = False,
    ) -> dict[str, Any]:
        def run(engine: Engine) -> Any:
            lost = self._ensure_model(engine, model_id, allow_lost=replaces_state)
            if not lost:
                return execute(engine)
            try:
                out = execute(engine)
            except BaseException:
                engine.remove_adapter(model_id)  # still lost: keep refusing
                raise
            self.store.set_corrupted(model_id, False)
            return out

        def make(request_id: str) -> Job:
            return Job(
                request_id=request_id,
                target=model_id,
                seq_id=seq_id,
                request_type=request_type,
                execute=run,
                finish=finish,
                carrier=carrier,
                attributes={"model_id": model_id, "seq_id": seq_id, **(extra_attrs or {})},
            )

        return self._submit(
            target=model_id,
            seq_id=seq_id,
            request_type=request_type,
            endpoint=endpoint,
            idempotency_key=idempotency_key,
            session_id=None,
            make_job=make,
            dedup_keys=dedup_keys,
        )

    def _check_seq(self, model_id: str, seq_id: int | None) -> None:
        _int64("seq_id", seq_id, minimum=0)

    def forward(
        self,
        req: ForwardRequest | ForwardBackwardRequest,
        *,
        backward: bool,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        self._model(req.model_id)
        self._check_seq(req.model_id, req.seq_id)
        fb: ForwardBackwardInput
        if isinstance(req, ForwardBackwardRequest):
            fb, field = req.forward_backward_input, "forward_backward_input"
        else:
            fb, field = req.forward_input, "forward_input"
        if not fb.data:
            raise bad_request(f"{field}.data", "is empty", "send at least one datum")
        from tinkex_server._engine.types import Datum as EngineDatum

        data = [
            EngineDatum(
                tokens=_text_tokens(d.model_input, f"{field}.data[{i}].model_input"),
                loss_fn_inputs=d.loss_fn_inputs,
            )
            for i, d in enumerate(fb.data)
        ]
        model_id = req.model_id
        loss_fn = fb.loss_fn
        loss_cfg = fb.loss_fn_config

        def execute(engine: Engine) -> Any:
            if backward:
                return engine.forward_backward(model_id, data, loss_fn, loss_cfg)
            return engine.forward(model_id, data, loss_fn, loss_cfg)

        def finish(out: Any) -> dict[str, Any]:
            self._touch(model_id)
            return {
                "loss_fn_output_type": out.loss_fn_output_type,
                "loss_fn_outputs": [
                    {name: t.to_dict() for name, t in item.items()} for item in out.loss_fn_outputs
                ],
                "metrics": dict(out.metrics),
            }

        kind = "ForwardBackward" if backward else "Forward"
        return self._ordered(
            model_id=model_id,
            seq_id=req.seq_id,
            request_type=kind,
            endpoint="forward_backward" if backward else "forward",
            idempotency_key=idempotency_key,
            carrier=carrier,
            execute=execute,
            finish=finish,
            extra_attrs={"loss_fn": loss_fn, "num_datums": len(data)},
        )

    def optim_step(
        self,
        req: OptimStepRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        self._model(req.model_id)
        self._check_seq(req.model_id, req.seq_id)
        model_id = req.model_id
        params = req.adam_params

        def execute(engine: Engine) -> Any:
            metrics = engine.optim_step(model_id, params)
            return metrics, engine.adapter_info(model_id).step

        def finish(out: Any) -> dict[str, Any]:
            metrics, step = out
            self._touch(model_id, step=int(step))
            return {"metrics": {k: float(v) for k, v in metrics.items()}}

        return self._ordered(
            model_id=model_id,
            seq_id=req.seq_id,
            request_type="OptimStep",
            endpoint="optim_step",
            idempotency_key=idempotency_key,
            carrier=carrier,
            execute=execute,
            finish=finish,
        )

    def _save_checkpoint_row(
        self, model_id: str, kind: str, name: str, directory: Path, ttl: int | None, step: int
    ) -> CheckpointRow:
        if not (directory / "adapter_model.safetensors").is_file():
            raise RuntimeError(f"the engine wrote no adapter_model.safetensors in {directory}")
        expires = time.time() + ttl if ttl is not None else None
        with contextlib.suppress(FileNotFoundError):
            self.files.archive_path(model_id, kind, name).unlink()
        return self.store.upsert_checkpoint(
            model_id,
            kind,
            name,
            directory=self.files.relative(directory),
            size_bytes=dir_size(directory),
            expires_at=expires,
            step=step,
        )

    def save_weights(
        self,
        req: SaveWeightsRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        self._model(req.model_id)
        self._check_seq(req.model_id, req.seq_id)
        if req.path is None:
            raise bad_request("path", "is missing", "give the checkpoint a name, e.g. 'step-10'")
        return self._ordered_save(
            req.model_id,
            req.seq_id,
            "weights",
            req.path,
            req.ttl_seconds,
            idempotency_key=idempotency_key,
            carrier=carrier,
        )

    def _ordered_save(
        self,
        model_id: str,
        seq_id: int | None,
        kind: str,
        name: str,
        ttl: int | None,
        *,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        """Queue a named save of training state (``weights``) or sampler weights
        (``sampler_weights``) in ``seq_id`` order; the result is ``{"path": tinker://...}``."""
        directory = self.files.checkpoint_dir(model_id, kind, name)
        training_state = kind == "weights"

        def execute(engine: Engine) -> Any:
            if training_state:
                engine.save_state(model_id, directory, with_optimizer=True)
            else:
                engine.save_sampler_weights(model_id, directory)
            return engine.adapter_info(model_id).step

        def finish(step: Any) -> dict[str, Any]:
            ckpt = self._save_checkpoint_row(model_id, kind, name, directory, ttl, int(step))
            if training_state:
                self._touch(model_id, last_state=name)
            else:
                self._touch(model_id)
            return {"path": ckpt.tinker_path}

        return self._ordered(
            model_id=model_id,
            seq_id=seq_id,
            request_type="SaveWeights" if training_state else "SaveWeightsForSampler",
            endpoint="save_weights" if training_state else "save_weights_for_sampler",
            idempotency_key=idempotency_key,
            carrier=carrier,
            execute=execute,
            finish=finish,
        )

    def save_weights_for_sampler(
        self,
        req: SaveWeightsForSamplerRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        row = self._model(req.model_id)
        self._check_seq(req.model_id, req.seq_id)
        model_id, ttl = req.model_id, req.ttl_seconds
        if req.path is not None:
            return self._ordered_save(
                model_id,
                req.seq_id,
                "sampler_weights",
                req.path,
                ttl,
                idempotency_key=idempotency_key,
                carrier=carrier,
            )
        _int64("sampling_session_seq_id", req.sampling_session_seq_id, minimum=0)
        if req.sampling_session_seq_id is None:
            raise bad_request(
                "path",
                "give either path (a checkpoint name) or sampling_session_seq_id",
                "named saves need a name; unnamed saves need the session's next "
                "sampling_session_seq_id",
            )
        session_id = row.session_id
        sampler_id = f"{session_id}:sample:{req.sampling_session_seq_id}"
        existing = self.store.get_sampler(sampler_id)
        if existing is not None:
            dup, _ = self.store.dedup_get(f"sampler:{sampler_id}")
            if dup is not None:
                return self._future_body(dup)
            raise bad_request(
                "sampling_session_seq_id",
                f"{req.sampling_session_seq_id} is already used by sampler {sampler_id!r}",
                "use the session's next sampling_session_seq_id",
            )
        snapshot = self.files.sampler_dir(sampler_id)
        base_model = row.base_model

        def execute_unnamed(engine: Engine) -> Any:
            engine.save_sampler_weights(model_id, snapshot)
            if engine.has_adapter(sampler_id):
                engine.remove_adapter(sampler_id)
            engine.load_sampler_weights(sampler_id, snapshot, base_model=base_model)
            return None

        def finish_unnamed(_: Any) -> dict[str, Any]:
            self.store.insert_sampler(
                sampler_id,
                session_id=session_id,
                base_model=base_model,
                model_path=None,
                source_dir=self.files.relative(snapshot),
                source_kind="sampler",
            )
            self._touch(model_id)
            return {"sampling_session_id": sampler_id}

        return self._ordered(
            model_id=model_id,
            seq_id=req.seq_id,
            request_type="SaveWeightsForSampler",
            endpoint="save_weights_for_sampler",
            idempotency_key=idempotency_key,
            carrier=carrier,
            execute=execute_unnamed,
            finish=finish_unnamed,
            dedup_keys=(f"sampler:{sampler_id}",),
        )

    def _parse_path(self, path: str, field: str) -> TinkerPath:
        try:
            return TinkerPath.parse(path)
        except (TypeError, ValueError) as exc:
            raise bad_request(
                field, str(exc), "use tinker://<training_run_id>/weights/<name>"
            ) from None

    def load_weights(
        self,
        req: LoadWeightsRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        self._model(req.model_id)
        self._check_seq(req.model_id, req.seq_id)
        tp = self._parse_path(req.path, "path")
        model_id, with_opt = req.model_id, req.optimizer
        files, store = self.files, self.store

        def execute(engine: Engine) -> Any:
            ckpt = store.get_checkpoint(tp.training_run_id, tp.kind, tp.name)
            if ckpt is None:
                raise TinkexValidationError(
                    "path",
                    f"checkpoint {str(tp)!r} does not exist (or has expired)",
                    "list checkpoints with GET /api/v1/training_runs/<id>/checkpoints",
                )
            info = engine.load_state(
                model_id, files.absolute(ckpt.directory), with_optimizer=with_opt
            )
            return info.step

        def finish(step: Any) -> dict[str, Any]:
            self._touch(model_id, step=int(step))
            return {"path": str(tp)}

        return self._ordered(
            model_id=model_id,
            seq_id=req.seq_id,
            request_type="LoadWeights",
            endpoint="load_weights",
            idempotency_key=idempotency_key,
            carrier=carrier,
            execute=execute,
            finish=finish,
            replaces_state=True,
        )

    # ====================================================================== sampling
    def _checkpoint_or_404(self, tp: TinkerPath) -> CheckpointRow:
        ckpt = self.store.get_checkpoint(tp.training_run_id, tp.kind, tp.name)
        if ckpt is None:
            raise not_found("checkpoint", str(tp), "it was never saved, was deleted or expired")
        return ckpt

    def create_sampling_session(self, req: CreateSamplingSessionRequest) -> dict[str, Any]:
        _int64("sampling_session_seq_id", req.sampling_session_seq_id, minimum=0)
        self._session(req.session_id)
        sampler_id = f"{req.session_id}:sample:{req.sampling_session_seq_id}"
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
            return {"sampling_session_id": sampler_id}
        if req.model_path is not None:
            tp = self._parse_path(req.model_path, "model_path")
            ckpt = self._checkpoint_or_404(tp)
            run = self.store.get_model(tp.training_run_id)
            if run is None:
                raise not_found("training run", tp.training_run_id)
            if req.base_model is not None and req.base_model != run.base_model:
                raise bad_request(
                    "base_model",
                    f"{req.model_path} was trained on {run.base_model!r}, not {req.base_model!r}",
                    "omit base_model or give the checkpoint's own",
                )
            self.store.insert_sampler(
                sampler_id,
                session_id=req.session_id,
                base_model=run.base_model,
                model_path=str(tp),
                source_dir=ckpt.directory,
                source_kind=ckpt.checkpoint_type,
            )
        elif req.base_model is not None:
            self._base(req.base_model)
            self.store.insert_sampler(
                sampler_id,
                session_id=req.session_id,
                base_model=req.base_model,
                model_path=None,
                source_dir=None,
                source_kind=None,
            )
        else:
            raise bad_request(
                "base_model", "give base_model or model_path", "say what the sampler should serve"
            )
        return {"sampling_session_id": sampler_id}

    def get_sampler(self, sampler_id: str) -> dict[str, Any]:
        row = self.store.get_sampler(sampler_id)
        if row is None:
            raise not_found("sampler_id", sampler_id)
        body: dict[str, Any] = {"sampler_id": row.sampler_id, "base_model": row.base_model}
        if row.model_path is not None:
            body["model_path"] = row.model_path
        return body

    def _sampler_for(self, req: SampleRequest) -> SamplerRow:
        if req.sampling_session_id is not None:
            row = self.store.get_sampler(req.sampling_session_id)
            if row is None:
                raise not_found(
                    "sampling_session_id",
                    req.sampling_session_id,
                    "create one with create_sampling_session",
                )
            return row
        if req.model_path is not None:
            tp = self._parse_path(req.model_path, "model_path")
            ckpt = self._checkpoint_or_404(tp)
            run = self.store.get_model(tp.training_run_id)
            if run is None:
                raise not_found("training run", tp.training_run_id)
            return SamplerRow(
                sampler_id=f"path:{tp}",
                session_id=None,
                base_model=run.base_model,
                model_path=str(tp),
                source_dir=ckpt.directory,
                source_kind=ckpt.checkpoint_type,
                created_at=ckpt.created_at,
            )
        assert req.base_model is not None
        self._base(req.base_model)
        return SamplerRow(
            sampler_id=f"base:{req.base_model}",
            session_id=None,
            base_model=req.base_model,
            model_path=None,
            source_dir=None,
            source_kind=None,
            created_at=0.0,
        )

    def asample(
        self,
        req: SampleRequest,
        idempotency_key: str | None,
        carrier: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        cfg = self.config
        _int64("seq_id", req.seq_id)
        sampler = self._sampler_for(req)
        desc = self._base(sampler.base_model)
        prompt = _text_tokens(req.prompt, "prompt")
        if not prompt:
            raise bad_request("prompt", "is empty", "give at least one token")
        if desc.vocab_size and any(t < 0 or t >= desc.vocab_size for t in prompt):
            raise bad_request(
                "prompt",
                f"holds token ids outside [0, {desc.vocab_size})",
                f"tokenize with the tokenizer of {sampler.base_model!r}",
            )
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
        room = desc.context_length - len(prompt)
        if room < 1:
            raise bad_request(
                "prompt",
                f"{len(prompt)} tokens leave no room in the context ({desc.context_length})",
                "shorten the prompt",
            )
        sp = req.sampling_params
        if sp.max_tokens is None:
            max_tokens = min(room, cfg.default_max_tokens)
        elif sp.max_tokens < 1:
            raise bad_request("sampling_params.max_tokens", "must be >= 1")
        elif sp.max_tokens > room:
            raise bad_request(
                "sampling_params.max_tokens",
                f"{sp.max_tokens} exceeds the room left in the context: prompt "
                f"{len(prompt)} + max_tokens must be <= {desc.context_length}",
                f"use max_tokens <= {room}",
            )
        else:
            max_tokens = sp.max_tokens
        stop_ids: list[int] = []
        stop_strings: list[str] = []
        if isinstance(sp.stop, str):
            stop_strings = [sp.stop]
        elif sp.stop:
            for item in sp.stop:
                if isinstance(item, str):
                    stop_strings.append(item)
                else:
                    stop_ids.append(item)
        if any(not s for s in stop_strings):
            raise bad_request("sampling_params.stop", "holds an empty string", "remove it")
        if self.scheduler.queued_samples >= cfg.max_queued_samples:
            raise ApiProblem(
                429,
                "the sampling queue is full; retry shortly",
                extra={
                    "queue_state": "paused_capacity",
                    "queue_state_reason": "the local sampling queue is full",
                },
                headers={"retry-after-ms": "1000"},
            )
        from tinkex_server._engine.types import SampleRequest as EngineSample

        adapter_id = sampler.sampler_id if sampler.source_dir is not None else None
        engine_req = EngineSample(
            prompt=prompt,
            max_tokens=max_tokens,
            model_id=adapter_id,
            base_model=sampler.base_model if adapter_id is None else None,
            num_samples=req.num_samples,
            temperature=sp.temperature,
            top_k=sp.top_k,
            top_p=sp.top_p,
            seed=sp.seed,
            stop_token_ids=tuple(stop_ids),
            stop_strings=tuple(stop_strings),
            prompt_logprobs=req.prompt_logprobs,
            topk_prompt_logprobs=req.topk_prompt_logprobs,
        )
        source_dir = sampler.source_dir
        base_model = sampler.base_model
        files = self.files

        def prepare(engine: Engine) -> None:
            if adapter_id is None or engine.has_adapter(adapter_id):
                return
            assert source_dir is not None
            directory = files.absolute(source_dir)
            if not directory.is_dir():
                raise TinkexValidationError(
                    "sampling_session_id",
                    f"the weights of sampler {sampler.sampler_id!r} are gone (checkpoint deleted?)",
                    "create a new sampling session",
                )
            engine.load_sampler_weights(adapter_id, directory, base_model=base_model)

        want_prompt_lp = req.prompt_logprobs
        want_topk = req.topk_prompt_logprobs

        def finish(out: Any) -> dict[str, Any]:
            body: dict[str, Any] = {
                "type": "sample",
                "sequences": [
                    {
                        "stop_reason": s.stop_reason,
                        "tokens": list(s.tokens),
                        "logprobs": list(s.logprobs),
                    }
                    for s in out.sequences
                ],
            }
            if want_prompt_lp:
                body["prompt_logprobs"] = out.prompt_logprobs
            if want_topk:
                body["topk_prompt_logprobs"] = (
                    None
                    if out.topk_prompt_logprobs is None
                    else [
                        None if pos is None else [[int(t), float(lp)] for t, lp in pos]
                        for pos in out.topk_prompt_logprobs
                    ]
                )
            return body

        target = sampler.sampler_id

        def make(request_id: str) -> Job:
            return Job(
                request_id=request_id,
                target=target,
                seq_id=req.seq_id,
                request_type="Sample",
                sample=engine_req,
                prepare=prepare,
                finish=finish,
                ordered=False,
                carrier=carrier,
                attributes={"sampler_id": target, "num_samples": req.num_samples},
            )

        return self._submit(
            target=target,
            seq_id=req.seq_id,
            request_type="Sample",
            endpoint="asample",
            idempotency_key=idempotency_key,
            session_id=sampler.session_id,
            make_job=make,
            dedup_seq=False,
        )

    # ====================================================================== futures
    async def retrieve_future(self, req: FutureRetrieveRequest) -> tuple[int, dict[str, Any]]:
        """``(status, body)`` of a poll: 200 with the result or failure, 408 ``try_again``
        after the hold, 404 unknown, 410 lost or expired."""
        row = self.store.get_future(req.request_id)
        if row is None:
            raise not_found("request_id", req.request_id)
        if row.status == "pending":
            if not self.hub.is_pending(req.request_id):
                return 410, {
                    "detail": f"future {req.request_id!r} was lost (the server restarted)",
                }
            await self.hub.wait(req.request_id, self.config.poll_hold_s)
            row = self.store.get_future(req.request_id)
            assert row is not None
            if row.status == "pending":
                return 408, {
                    "type": "try_again",
                    "request_id": req.request_id,
                    "queue_state": "active",
                }
        if row.status in ("done", "failed"):
            return 200, dict(row.result)
        reason = (
            "was lost when the server restarted"
            if row.status == "lost"
            else "expired (results are kept for a limited time)"
        )
        return 410, {"detail": f"future {req.request_id!r} {reason}; submit the request again"}

    # ====================================================================== telemetry
    def telemetry(self, body: Any) -> dict[str, Any]:
        session_id = body.get("session_id") if isinstance(body, dict) else None
        self.store.insert_telemetry(
            body, session_id=session_id if isinstance(session_id, str) else None
        )
        return {"status": "accepted"}

    # ====================================================================== REST
    def capabilities(self) -> dict[str, Any]:
        models: list[dict[str, Any]] = []
        seen: set[str] = set()
        descs = list(builtin_descs())
        for row in self.store.all_models():
            if row.base_model not in seen and not any(d.name == row.base_model for d in descs):
                desc = describe_base_model(row.base_model)
                if desc is not None:
                    descs.append(desc)
        for desc in descs:
            if desc.name in seen:
                continue
            seen.add(desc.name)
            models.append(
                {
                    "model_name": desc.name,
                    "model_id": desc.name,
                    "arch": desc.arch,
                    "max_context_length": desc.context_length,
                    "trainable": True,
                    "sampleable": True,
                }
            )
        return {"supported_models": models}

    def weights_info(self, req: WeightsInfoRequest) -> dict[str, Any]:
        tp = self._parse_path(req.tinker_path, "tinker_path")
        self._checkpoint_or_404(tp)
        run = self.store.get_model(tp.training_run_id)
        if run is None:
            raise not_found("training run", tp.training_run_id)
        lc = run.lora_config
        return {
            "base_model": run.base_model,
            "is_lora": True,
            "lora_rank": int(lc["rank"]),
            "train_unembed": bool(lc.get("train_unembed", True)),
            "train_mlp": bool(lc.get("train_mlp", True)),
            "train_attn": bool(lc.get("train_attn", True)),
        }

    @staticmethod
    def checkpoint_json(ckpt: CheckpointRow) -> dict[str, Any]:
        return {
            "checkpoint_id": f"{ckpt.kind}/{ckpt.name}",
            "checkpoint_type": ckpt.checkpoint_type,
            "time": _iso(ckpt.created_at),
            "tinker_path": ckpt.tinker_path,
            "size_bytes": ckpt.size_bytes,
            "public": ckpt.public,
            "expires_at": _iso(ckpt.expires_at),
        }

    def training_run_json(self, row: ModelRow) -> dict[str, Any]:
        body: dict[str, Any] = {
            "training_run_id": row.model_id,
            "base_model": row.base_model,
            "model_owner": self.config.model_owner,
            "is_lora": True,
            "corrupted": row.corrupted,
            "lora_rank": int(row.lora_config["rank"]),
            "last_request_time": _iso(row.last_request_time),
        }
        last = self.store.latest_checkpoint(row.model_id, "weights")
        if last is not None:
            body["last_checkpoint"] = self.checkpoint_json(last)
        last_s = self.store.latest_checkpoint(row.model_id, "sampler_weights")
        if last_s is not None:
            body["last_sampler_checkpoint"] = self.checkpoint_json(last_s)
        if row.user_metadata:
            body["user_metadata"] = {str(k): str(v) for k, v in row.user_metadata.items()}
        return body

    @staticmethod
    def _scope(access_scope: str) -> None:
        if access_scope not in _ACCESS_SCOPES:
            raise bad_request(
                "access_scope", f"unknown value {access_scope!r}", "use 'owned' or 'accessible'"
            )

    def list_training_runs(self, limit: int, offset: int, access_scope: str) -> dict[str, Any]:
        self._scope(access_scope)
        rows, total = self.store.list_models(limit=limit, offset=offset)
        return {
            "training_runs": [self.training_run_json(r) for r in rows],
            "cursor": {"offset": offset, "limit": limit, "total_count": total},
        }

    def get_training_run(self, run_id: str, access_scope: str) -> dict[str, Any]:
        self._scope(access_scope)
        row = self.store.get_model(run_id)
        if row is None:
            raise not_found("training run", run_id)
        return self.training_run_json(row)

    def list_run_checkpoints(self, run_id: str) -> dict[str, Any]:
        if self.store.get_model(run_id) is None:
            raise not_found("training run", run_id)
        rows, total = self.store.list_checkpoints(run_id)
        return {
            "checkpoints": [self.checkpoint_json(c) for c in rows],
            "cursor": {"offset": 0, "limit": total, "total_count": total},
        }

    def list_user_checkpoints(self, limit: int, offset: int) -> dict[str, Any]:
        rows, total = self.store.list_checkpoints(limit=limit, offset=offset)
        return {
            "checkpoints": [self.checkpoint_json(c) for c in rows],
            "cursor": {"offset": offset, "limit": limit, "total_count": total},
        }

    def _kind(self, kind: str) -> None:
        if kind not in ("weights", "sampler_weights"):
            raise not_found(
                "checkpoint kind",
                kind,
                "checkpoint ids look like weights/<name> or sampler_weights/<name>",
            )

    def checkpoint(self, run_id: str, kind: str, name: str) -> CheckpointRow:
        self._kind(kind)
        ckpt = self.store.get_checkpoint(run_id, kind, name)
        if ckpt is None:
            raise not_found("checkpoint", f"tinker://{run_id}/{kind}/{name}")
        return ckpt

    def delete_checkpoint(self, run_id: str, kind: str, name: str) -> dict[str, Any]:
        self.checkpoint(run_id, kind, name)
        self.store.delete_checkpoint(run_id, kind, name)
        self.files.remove(run_id, kind, name)
        return {}

    def publish(self, run_id: str, kind: str, name: str, public: bool) -> dict[str, Any]:
        self.checkpoint(run_id, kind, name)
        self.store.set_checkpoint_public(run_id, kind, name, public)
        return {}

    def set_ttl(self, run_id: str, kind: str, name: str, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise bad_request("body", 'must be a JSON object like {"ttl_seconds": 3600}')
        ttl = raw.get("ttl_seconds")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0):
            raise bad_request(
                "ttl_seconds",
                f"must be a positive integer or null, got {ttl!r}",
                "use null to remove the expiry",
            )
        req = SetCheckpointTtlRequest(ttl_seconds=ttl)
        self.checkpoint(run_id, kind, name)
        expires = None if req.ttl_seconds is None else time.time() + req.ttl_seconds
        self.store.set_checkpoint_expiry(run_id, kind, name, expires)
        return {}

    def archive_redirect(self, run_id: str, kind: str, name: str, base_url: str) -> tuple[str, str]:
        """``(location, expires HTTP-date)`` of a signed archive download URL."""
        self.checkpoint(run_id, kind, name)
        expires = int(time.time() + self.config.archive_url_ttl_s)
        sig = self.files.sign(run_id, kind, name, expires)
        path = "/".join(quote(part, safe="") for part in (run_id, kind, name))
        base = base_url if base_url.endswith("/") else base_url + "/"
        location = f"{base}api/v1/checkpoint_archives/{path}?expires={expires}&signature={sig}"
        return location, formatdate(expires, usegmt=True)

    async def archive_file(
        self, run_id: str, kind: str, name: str, expires: int, signature: str
    ) -> Path:
        if not self.files.verify(run_id, kind, name, expires, signature):
            raise ApiProblem(403, "the download link is invalid or has expired; ask for a new one")
        ckpt = self.checkpoint(run_id, kind, name)
        source = self.files.absolute(ckpt.directory)
        try:
            return await asyncio.to_thread(self.files.build_archive, source, run_id, kind, name)
        except FileNotFoundError as exc:
            raise ApiProblem(404, f"checkpoint {ckpt.tinker_path} is incomplete: {exc}") from None

    def list_sessions(self, limit: int, offset: int, access_scope: str) -> dict[str, Any]:
        self._scope(access_scope)
        ids, total = self.store.list_sessions(limit=limit, offset=offset)
        return {
            "sessions": ids,
            "cursor": {"offset": offset, "limit": limit, "total_count": total},
        }

    def get_session(self, session_id: str, access_scope: str) -> dict[str, Any]:
        self._scope(access_scope)
        self._session(session_id)
        runs, samplers = self.store.session_children(session_id)
        return {"training_run_ids": runs, "sampler_ids": samplers}

    # -- test hooks -------------------------------------------------------------------------
    def set_corrupted(self, run_id: str, corrupted: bool) -> dict[str, Any]:
        if not self.store.set_corrupted(run_id, corrupted):
            raise not_found("training run", run_id)
        return {"training_run_id": run_id, "corrupted": corrupted}
