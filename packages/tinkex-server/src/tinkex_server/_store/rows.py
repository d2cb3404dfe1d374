"""The rows the store returns: frozen dataclasses, one per table."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from tinkex_server._store.schema import loads

__all__ = [
    "AppliedStep",
    "CheckpointRow",
    "FutureRow",
    "ModelRow",
    "SamplerRow",
    "SessionRow",
    "TelemetryRow",
    "checkpoint_row",
    "future_row",
    "model_row",
    "sampler_row",
    "session_row",
]


@dataclass(frozen=True)
class SessionRow:
    session_id: str
    created_at: float
    last_heartbeat: float
    tags: list[str]
    user_metadata: dict[str, Any]
    sdk_version: str | None
    project_id: str | None


@dataclass(frozen=True)
class ModelRow:
    """A training run. ``status``: ``creating``, ``ready``, ``failed`` or ``unloaded``.
    ``lora_config`` holds the concrete seed once the model exists. ``last_state`` is the
    name of the newest training-state checkpoint (``weights/<name>``) or ``None``."""

    model_id: str
    session_id: str
    model_seq_id: int | None
    base_model: str
    lora_config: dict[str, Any]
    user_metadata: dict[str, Any] | None
    created_at: float
    last_request_time: float
    status: str
    error: str | None
    corrupted: bool
    next_seq_id: int
    last_state: str | None
    step: int


@dataclass(frozen=True)
class SamplerRow:
    """A sampling session: the bare ``base_model`` (``source_dir`` ``None``) or adapter
    weights in ``source_dir`` (``source_kind`` ``sampler`` = PEFT dir, ``training`` =
    training-state dir)."""

    sampler_id: str
    session_id: str | None
    base_model: str
    model_path: str | None
    source_dir: str | None
    source_kind: str | None
    created_at: float


@dataclass(frozen=True)
class FutureRow:
    """``status``: ``pending``, ``done``, ``failed``, ``lost`` (pending at a crash) or
    ``expired`` (result dropped after the retention time)."""

    request_id: str
    target: str | None
    seq_id: int | None
    request_type: str
    session_id: str | None
    status: str
    result: Any
    created_at: float
    completed_at: float | None


@dataclass(frozen=True)
class CheckpointRow:
    training_run_id: str
    kind: str
    name: str
    created_at: float
    size_bytes: int | None
    public: bool
    expires_at: float | None
    directory: str
    step: int | None
    #: What the user attached when saving (``None``: nothing).
    user_metadata: dict[str, str] | None = None

    @property
    def checkpoint_type(self) -> str:
        return "training" if self.kind == "weights" else "sampler"

    @property
    def tinker_path(self) -> str:
        return f"tinker://{self.training_run_id}/{self.kind}/{self.name}"


@dataclass(frozen=True)
class TelemetryRow:
    id: int
    received_at: float
    session_id: str | None
    body: Any


@dataclass(frozen=True)
class AppliedStep:
    """One operation the engine executed (``outcome`` ``ok`` or ``failed``)."""

    id: int
    target: str
    seq_id: int | None
    request_type: str
    request_id: str
    outcome: str
    applied_at: float


def session_row(row: sqlite3.Row) -> SessionRow:
    """A ``sessions`` row."""
    return SessionRow(
        session_id=row["session_id"],
        created_at=row["created_at"],
        last_heartbeat=row["last_heartbeat"],
        tags=loads(row["tags"]),
        user_metadata=loads(row["user_metadata"]),
        sdk_version=row["sdk_version"],
        project_id=row["project_id"],
    )


def model_row(row: sqlite3.Row) -> ModelRow:
    """A ``models`` row."""
    return ModelRow(
        model_id=row["model_id"],
        session_id=row["session_id"],
        model_seq_id=row["model_seq_id"],
        base_model=row["base_model"],
        lora_config=loads(row["lora_config"]),
        user_metadata=loads(row["user_metadata"]),
        created_at=row["created_at"],
        last_request_time=row["last_request_time"],
        status=row["status"],
        error=row["error"],
        corrupted=bool(row["corrupted"]),
        next_seq_id=int(row["next_seq_id"]),
        last_state=row["last_state"],
        step=int(row["step"]),
    )


def sampler_row(row: sqlite3.Row) -> SamplerRow:
    """A ``samplers`` row."""
    return SamplerRow(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - sqlite3.Row


def future_row(row: sqlite3.Row) -> FutureRow:
    """A ``futures`` row (the result decoded from JSON)."""
    return FutureRow(
        request_id=row["request_id"],
        target=row["target"],
        seq_id=row["seq_id"],
        request_type=row["request_type"],
        session_id=row["session_id"],
        status=row["status"],
        result=loads(row["result"]),
        created_at=row["created_at"],
        completed_at=row["completed_at"],
    )


def checkpoint_row(row: sqlite3.Row) -> CheckpointRow:
    """A ``checkpoints`` row."""
    return CheckpointRow(
        training_run_id=row["training_run_id"],
        kind=row["kind"],
        name=row["name"],
        created_at=row["created_at"],
        size_bytes=row["size_bytes"],
        public=bool(row["public"]),
        expires_at=row["expires_at"],
        directory=row["directory"],
        step=row["step"],
        user_metadata=loads(row["user_metadata"]),
    )
