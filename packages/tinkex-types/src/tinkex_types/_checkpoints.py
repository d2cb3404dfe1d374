"""REST models: checkpoints, training runs, sessions, archive URLs (protocol.md §2.11)."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Self

from pydantic import AliasChoices, Field, model_validator

from tinkex_types._base import CheckpointType, WireModel
from tinkex_types._paths import TinkerPath

__all__ = [
    "Checkpoint",
    "CheckpointArchiveUrlResponse",
    "CheckpointsListResponse",
    "Cursor",
    "GetSessionResponse",
    "ListSessionsResponse",
    "TrainingRun",
    "TrainingRunsResponse",
]


class Cursor(WireModel):
    """Pagination: ``offset``, ``limit`` and ``total_count`` (all required)."""

    offset: int = Field(ge=0)
    limit: int = Field(ge=0)
    total_count: int = Field(ge=0)


class Checkpoint(WireModel):
    """A saved checkpoint. ``training_run_id`` is derived from ``tinker_path`` if absent."""

    checkpoint_id: str
    checkpoint_type: CheckpointType
    time: datetime
    tinker_path: str
    size_bytes: int | None = Field(default=None, ge=0)
    public: bool = False
    #: Metadata the user attached when saving (``save_state(user_metadata=...)``).
    user_metadata: dict[str, str] | None = None
    expires_at: datetime | None = None
    training_run_id: str | None = None

    @model_validator(mode="after")
    def _derive_run(self) -> Self:
        if self.training_run_id is None:
            with contextlib.suppress(ValueError):
                run = TinkerPath.parse(self.tinker_path).training_run_id
                self.__dict__["training_run_id"] = run
        return self

    @property
    def parsed_path(self) -> TinkerPath:
        """``tinker_path`` parsed (ValueError if it is malformed)."""
        return TinkerPath.parse(self.tinker_path)


class CheckpointsListResponse(WireModel):
    checkpoints: list[Checkpoint] = Field(default_factory=list)
    cursor: Cursor | None = None


class CheckpointArchiveUrlResponse(WireModel):
    """Where to download a checkpoint archive, and until when the URL works."""

    url: str
    expires: datetime | None = None


class TrainingRun(WireModel):
    training_run_id: str = Field(validation_alias=AliasChoices("training_run_id", "id"))
    base_model: str
    model_owner: str
    is_lora: bool
    corrupted: bool = False
    lora_rank: int | None = None
    last_request_time: datetime
    last_checkpoint: Checkpoint | None = None
    last_sampler_checkpoint: Checkpoint | None = None
    user_metadata: dict[str, str] | None = None


class TrainingRunsResponse(WireModel):
    training_runs: list[TrainingRun] = Field(default_factory=list)
    cursor: Cursor


class ListSessionsResponse(WireModel):
    sessions: list[str] = Field(default_factory=list)


class GetSessionResponse(WireModel):
    training_run_ids: list[str]
    sampler_ids: list[str]
    user_metadata: dict[str, str] | None = None
    #: The session's human-readable name (``ServiceClient(display_name=...)``).
    display_name: str | None = None
