"""What every service of a running server shares: its parts, the submission desk and the
small checks several services make.

:class:`ServerParts` holds the store, checkpoint files, future hub and scheduler of one data
directory (built by :class:`~tinkex_server._runtime.Runtime`). :class:`Desk` is where a
validated :class:`~tinkex_server._jobs.Job` becomes a future: de-duplication (idempotency
keys, ``seq_id`` and per-operation keys), the future row, the queue.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from tinkex_server._catalog import BaseModelDesc, builtin_descs, describe_base_model
from tinkex_server._checkpoints import CheckpointFiles
from tinkex_server._config import ServerConfig
from tinkex_server._jobs import Job
from tinkex_server._problems import ApiProblem, bad_request, not_found
from tinkex_server._scheduler import FutureHub, Scheduler
from tinkex_server._store import CheckpointRow, ModelRow, Store
from tinkex_types import (
    EncodedTextChunk,
    Hooks,
    ModelInput,
    TinkerPath,
    TinkexValidationError,
    UntypedAPIFuture,
)

__all__ = ["Desk", "ServerParts", "check_int64", "text_tokens", "user_error"]

_INT64 = 2**63


def check_int64(field: str, value: int | None, *, minimum: int = -_INT64) -> None:
    """400 unless ``value`` is None or fits a signed 64-bit integer (and >= ``minimum``)."""
    if value is not None and not minimum <= value < _INT64:
        raise bad_request(
            field, f"{value} is out of range", f"use an integer in [{minimum}, 2**63)"
        )


def user_error(exc: TinkexValidationError) -> ApiProblem:
    """A shared validation's refusal as a 400 naming the same field."""
    return bad_request(exc.field, exc.problem, exc.fix)


def text_tokens(model_input: ModelInput, field: str) -> list[int]:
    """The tokens of a text-only model input (400 naming the first non-text chunk)."""
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


@dataclass(frozen=True)
class ServerParts:
    """The running parts of one server (one data directory)."""

    config: ServerConfig
    store: Store
    files: CheckpointFiles
    hub: FutureHub
    scheduler: Scheduler
    hooks: Hooks


class Desk:
    """Lookups with 4xx refusals, and the submission of jobs as futures."""

    def __init__(self, parts: ServerParts) -> None:
        self.parts = parts
        self.store = parts.store

    # -- lookups ----------------------------------------------------------------------------
    def session(self, session_id: str) -> None:
        """404 unless the session exists."""
        if self.store.get_session(session_id) is None:
            raise not_found("session_id", session_id, "create a session first (create_session)")

    def live_session(self, session_id: str) -> None:
        """404 unless the session exists, 410 once it was finished (``sessions/{id}/finish``)."""
        self.session(session_id)
        _, ended = self.store.dedup_get(f"finished:{session_id}")
        if isinstance(ended, dict):
            raise ApiProblem(
                410,
                f"session {session_id!r} was finished ({ended.get('reason')}); "
                "create a new session",
            )

    def base(self, name: str, field: str = "base_model") -> BaseModelDesc:
        """The description of a base model (400 naming the known ones)."""
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

    def model(self, model_id: str) -> ModelRow:
        """A usable training run: 404 unknown, 400 failed or unloaded."""
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

    def parse_path(self, path: str, field: str, prefer: str = "weights") -> TinkerPath:
        """A ``tinker://`` path (400 naming ``field``).

        On a server with ``path_style="two-part"``, a two-part ``tinker://<run>/<name>``
        (what it issues) names the checkpoint of kind ``prefer``, or of the other kind when
        only that one exists.
        """
        try:
            return TinkerPath.parse(path)
        except (TypeError, ValueError) as exc:
            two_part = self.parts.config.path_style == "two-part"
            two = self._two_part(path, prefer) if two_part else None
            if two is not None:
                return two
            raise bad_request(
                field, str(exc), "use tinker://<training_run_id>/weights/<name>"
            ) from None

    def _two_part(self, path: object, prefer: str) -> TinkerPath | None:
        if not isinstance(path, str) or not path.startswith("tinker://"):
            return None
        parts = path[len("tinker://") :].split("/")
        if len(parts) != 2 or not all(parts):
            return None
        run, name = parts
        kinds = [prefer, *(k for k in ("weights", "sampler_weights") if k != prefer)]
        try:
            candidates = [TinkerPath(run, k, name) for k in kinds]  # type: ignore[arg-type]
        except ValueError:
            return None
        for tp in candidates:
            if self.store.get_checkpoint(run, tp.kind, name) is not None:
                return tp
        return candidates[0]

    def checkpoint_at(self, tp: TinkerPath) -> CheckpointRow:
        """The checkpoint a path names (404 when it was never saved, deleted or expired)."""
        ckpt = self.store.get_checkpoint(tp.training_run_id, tp.kind, tp.name)
        if ckpt is None:
            raise not_found("checkpoint", str(tp), "it was never saved, was deleted or expired")
        return ckpt

    def run_of(self, tp: TinkerPath) -> ModelRow:
        """The training run a checkpoint path belongs to (404)."""
        run = self.store.get_model(tp.training_run_id)
        if run is None:
            raise not_found("training run", tp.training_run_id)
        return run

    # -- submission -------------------------------------------------------------------------
    def future(self, request_id: str) -> UntypedAPIFuture:
        """The answer of a submission: the request id (and the model id, except samples)."""
        row = self.store.get_future(request_id)
        model_id = None
        if row is not None and row.request_type != "Sample" and row.target is not None:
            model_id = row.target
        return UntypedAPIFuture(request_id=request_id, model_id=model_id)

    def existing(self, key: str) -> UntypedAPIFuture | None:
        """The future already submitted under a de-duplication key, if any."""
        request_id, _ = self.store.dedup_get(key)
        return None if request_id is None else self.future(request_id)

    def submit(
        self,
        job: Job,
        *,
        endpoint: str,
        idempotency_key: str | None,
        session_id: str | None = None,
        dedup_keys: tuple[str, ...] = (),
        dedup_seq: bool = True,
    ) -> UntypedAPIFuture:
        """Queue ``job`` as a new future, or answer the future of an earlier identical
        submission (same idempotency key, same model ``seq_id``, same ``dedup_keys``)."""
        keys: list[str] = []
        if idempotency_key:
            keys.append(f"idem:{endpoint}:{idempotency_key}")
        if job.seq_id is not None and dedup_seq:
            keys.append(f"seq:{job.target}:{job.seq_id}")
        keys.extend(dedup_keys)
        for key in keys:
            earlier = self.existing(key)
            if earlier is not None:
                return earlier
        job.request_id = uuid.uuid4().hex
        self.store.insert_future(
            job.request_id,
            target=job.target,
            seq_id=job.seq_id,
            request_type=job.request_type,
            session_id=session_id,
            dedup_keys=keys,
        )
        self.parts.hub.add(job.request_id)
        self.parts.scheduler.submit(job)
        # What self.future() reads back from the row just written.
        model_id = job.target if job.request_type != "Sample" else None
        return UntypedAPIFuture(request_id=job.request_id, model_id=model_id)
