"""The jobs of training runs: create, unload, and the ``seq_id``-ordered steps (forward,
forward_backward, optim_step, named saves, unnamed sampler saves, load_weights).

Every ordered step first makes sure the engine holds its model (:class:`ModelRestorer`);
a model rebuilt after lost steps is refused, except by ``load_weights``, which replaces
the lost state and clears the ``corrupted`` mark.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tinkex_server._checkpoints import CheckpointFiles, dir_size, issued_path
from tinkex_server._custom_losses import StoredCustomLoss
from tinkex_server._jobs import Job
from tinkex_server._restore import ModelRestorer, engine_lora
from tinkex_server._store import Store
from tinkex_types import (
    AdamParams,
    CreateModelResponse,
    ForwardBackwardOutput,
    LoadWeightsResponse,
    OptimStepResponse,
    SaveWeightsForSamplerResponse,
    SaveWeightsResponse,
    TensorData,
    TinkerPath,
    TinkexValidationError,
    UnloadModelResponse,
    WireModel,
)

if TYPE_CHECKING:
    from tinkex_server._engine import Datum, Engine, ForwardResult

__all__ = [
    "CreateModelJob",
    "ForwardJob",
    "LoadWeightsJob",
    "OptimStepJob",
    "OrderedJob",
    "SamplerSnapshotJob",
    "SaveJob",
    "UnloadModelJob",
]


def touch(store: Store, model_id: str, **fields: Any) -> None:
    """Stamp a run's ``last_request_time`` (and update ``fields``)."""
    store.update_model(model_id, last_request_time=time.time(), **fields)


@dataclass(kw_only=True, eq=False)
class CreateModelJob(Job):
    """Build a new adapter; the run row becomes ``ready`` with its concrete seed/alpha."""

    store: Store
    base_model: str
    lora: dict[str, Any]

    def execute(self, engine: Engine) -> Any:
        return engine.create_adapter(self.target, self.base_model, engine_lora(self.lora))

    def finish(self, output: Any) -> WireModel:
        settings = {**self.lora, "seed": output.seed, "alpha": output.alpha}
        self.store.update_model(self.target, status="ready", lora_config=settings)
        return CreateModelResponse(model_id=self.target)

    def on_failure(self, exc: BaseException) -> None:
        self.store.update_model(self.target, status="failed", error=str(exc))


@dataclass(kw_only=True, eq=False)
class UnloadModelJob(Job):
    """Drop a run's adapter from the engine; the run is ``unloaded`` for good."""

    store: Store

    def execute(self, engine: Engine) -> Any:
        if engine.has_adapter(self.target):
            engine.remove_adapter(self.target)
        return None

    def finish(self, output: Any) -> WireModel:
        touch(self.store, self.target, status="unloaded")
        return UnloadModelResponse(model_id=self.target)


@dataclass(kw_only=True, eq=False)
class OrderedJob(Job):
    """A ``seq_id``-ordered step of a training run (subclasses implement :meth:`step`)."""

    store: Store
    restorer: ModelRestorer
    #: The step replaces the model's state (``load_weights``): a lost state is no refusal.
    replaces_state: bool = False

    def step(self, engine: Engine) -> Any:
        raise NotImplementedError

    def execute(self, engine: Engine) -> Any:
        lost = self.restorer.ensure(engine, self.target, allow_lost=self.replaces_state)
        if not lost:
            return self.step(engine)
        try:
            out = self.step(engine)
        except BaseException:
            engine.remove_adapter(self.target)  # still lost: keep refusing
            raise
        self.store.set_corrupted(self.target, False)
        return out


@dataclass(kw_only=True, eq=False)
class ForwardJob(OrderedJob):
    """``forward`` (no gradients) or ``forward_backward`` (gradients accumulate)."""

    chains: ClassVar[bool] = True

    data: list[Datum]
    loss_fn: str
    loss_fn_config: dict[str, float] | None
    backward: bool
    #: ``loss_fn="custom"``: the created loss ``loss_fn_config.loss_id`` names.
    custom_loss: StoredCustomLoss | None = None

    def step(self, engine: Engine) -> ForwardResult:
        if self.custom_loss is not None:
            program = self.custom_loss.program()
            return engine.run_custom_loss(self.target, self.data, program, self.backward)
        if self.backward:
            return engine.forward_backward(
                self.target, self.data, self.loss_fn, self.loss_fn_config
            )
        return engine.forward(self.target, self.data, self.loss_fn, self.loss_fn_config)

    def finish(self, output: ForwardResult) -> WireModel:
        touch(self.store, self.target)
        outputs = [
            {
                name: TensorData.model_construct(data=t.data, dtype=t.dtype, shape=t.shape)
                for name, t in item.items()
            }
            for item in output.loss_fn_outputs
        ]
        return ForwardBackwardOutput(
            loss_fn_output_type=output.loss_fn_output_type,
            loss_fn_outputs=outputs,
            metrics=dict(output.metrics),
        )


@dataclass(kw_only=True, eq=False)
class OptimStepJob(OrderedJob):
    """One AdamW step over the accumulated gradients."""

    chains: ClassVar[bool] = True
    brief: ClassVar[bool] = True

    adam_params: AdamParams

    def step(self, engine: Engine) -> tuple[dict[str, float], int]:
        metrics = engine.optim_step(self.target, self.adam_params)
        return metrics, engine.adapter_info(self.target).step

    def finish(self, output: tuple[dict[str, float], int]) -> WireModel:
        metrics, step = output
        touch(self.store, self.target, step=int(step))
        return OptimStepResponse(metrics={k: float(v) for k, v in metrics.items()})


@dataclass(kw_only=True, eq=False)
class SaveJob(OrderedJob):
    """A named save: training state (``weights``) or sampler weights (``sampler_weights``)."""

    files: CheckpointFiles
    kind: str
    name: str
    ttl_seconds: int | None
    directory: Path
    #: ``ServerConfig.path_style`` of the answered path.
    path_style: str = "standard"
    #: Replace a checkpoint of the same name (``False``: such a save fails, naming the field).
    overwrite: bool = True
    user_metadata: dict[str, str] | None = None

    @property
    def training_state(self) -> bool:
        return self.kind == "weights"

    def step(self, engine: Engine) -> int:
        if not self.overwrite and self.store.get_checkpoint(self.target, self.kind, self.name):
            path = issued_path(self.path_style, self.target, self.kind, self.name)
            raise TinkexValidationError(
                "overwrite",
                f"a checkpoint named {self.name!r} already exists ({path})",
                "save under another name, or pass overwrite=True to replace it",
            )
        if self.training_state:
            engine.save_state(self.target, self.directory, with_optimizer=True)
        else:
            engine.save_sampler_weights(self.target, self.directory)
        return engine.adapter_info(self.target).step

    def finish(self, output: int) -> WireModel:
        if not (self.directory / "adapter_model.safetensors").is_file():
            raise RuntimeError(f"the engine wrote no adapter_model.safetensors in {self.directory}")
        ttl = self.ttl_seconds
        with contextlib.suppress(FileNotFoundError):
            self.files.archive_path(self.target, self.kind, self.name).unlink()
        ckpt = self.store.upsert_checkpoint(
            self.target,
            self.kind,
            self.name,
            directory=self.files.relative(self.directory),
            size_bytes=dir_size(self.directory),
            expires_at=time.time() + ttl if ttl is not None else None,
            step=int(output),
            user_metadata=self.user_metadata,
        )
        path = issued_path(self.path_style, ckpt.training_run_id, ckpt.kind, ckpt.name)
        if self.training_state:
            touch(self.store, self.target, last_state=self.name)
            return SaveWeightsResponse(path=path)
        touch(self.store, self.target)
        return SaveWeightsForSamplerResponse(path=path)


@dataclass(kw_only=True, eq=False)
class SamplerSnapshotJob(OrderedJob):
    """An unnamed ``save_weights_for_sampler``: a snapshot served as a new sampler.

    ``adopters`` (an ``inflight`` save): the model's earlier inflight samplers, which move
    to the new weights too (tinker 0.38's inflight contract)."""

    files: CheckpointFiles
    sampler_id: str
    session_id: str
    base_model: str
    snapshot: Path
    adopters: tuple[str, ...] = ()

    def step(self, engine: Engine) -> None:
        engine.save_sampler_weights(self.target, self.snapshot)
        for sampler_id in (self.sampler_id, *self.adopters):
            if engine.has_adapter(sampler_id):
                engine.remove_adapter(sampler_id)
            elif sampler_id != self.sampler_id:
                continue  # not loaded: it loads the new weights from the store when used
            engine.load_sampler_weights(sampler_id, self.snapshot, base_model=self.base_model)

    def finish(self, output: None) -> WireModel:
        for sampler_id in self.adopters:
            self.store.set_sampler_source(sampler_id, self.files.relative(self.snapshot))
        self.store.insert_sampler(
            self.sampler_id,
            session_id=self.session_id,
            base_model=self.base_model,
            model_path=None,
            source_dir=self.files.relative(self.snapshot),
            source_kind="sampler",
        )
        touch(self.store, self.target)
        return SaveWeightsForSamplerResponse(sampling_session_id=self.sampler_id)


@dataclass(kw_only=True, eq=False)
class LoadWeightsJob(OrderedJob):
    """Replace the model's state by a training checkpoint (optionally with the optimizer)."""

    files: CheckpointFiles
    path: TinkerPath
    optimizer: bool

    def step(self, engine: Engine) -> int:
        tp = self.path
        ckpt = self.store.get_checkpoint(tp.training_run_id, tp.kind, tp.name)
        if ckpt is None:
            raise TinkexValidationError(
                "path",
                f"checkpoint {str(tp)!r} does not exist (or has expired)",
                "list checkpoints with GET /api/v1/training_runs/<id>/checkpoints",
            )
        directory = self.files.absolute(ckpt.directory)
        return engine.load_state(self.target, directory, with_optimizer=self.optimizer).step

    def finish(self, output: int) -> WireModel:
        touch(self.store, self.target, step=int(output))
        return LoadWeightsResponse(path=str(self.path))
