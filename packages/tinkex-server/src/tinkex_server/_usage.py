"""Usage accounting: the tokens and steps the server applied, per training run and session.

:func:`record_applied` is called by the scheduler for every job whose result it stores,
inside the same transaction (:meth:`Store.tx`): a step counts exactly when it is applied, a
retried request (same ``seq_id`` or idempotency key) answers the stored future and counts
no second time, a failed step counts nothing, and the counts survive a restart with the
futures they belong to. What is counted is described in :mod:`tinkex_types._usage`.

The counts live in two tables of the server's SQLite database, created on first use:
``usage`` (one row per training run or sampler and UTC hour, with the session and base
model it belongs to; the reports sum the hours) and ``usage_origin`` (which training run an unnamed sampler snapshot was taken from,
so that sampling its weights counts for that run).

:class:`UsageBook` answers the two reports (``GET /api/v1/training_runs/{id}/usage`` and
``GET /api/v1/sessions/{id}/usage``, :mod:`tinkex_server._routes_usage`).
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import TYPE_CHECKING, Any

from tinkex_server._problems import not_found
from tinkex_server._store import Store
from tinkex_types import USAGE_COUNTERS, TinkerPath, UsageEntry, UsageResponse, usage_response

if TYPE_CHECKING:
    from tinkex_server._jobs import Job
    from tinkex_server._store import SamplerRow

__all__ = ["UsageBook", "prepare", "record_applied"]

_COLUMNS = ",\n    ".join(f"{name} INTEGER NOT NULL DEFAULT 0" for name in USAGE_COUNTERS)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS usage (
    kind TEXT NOT NULL,
    training_run_id TEXT NOT NULL,
    sampler_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    base_model TEXT NOT NULL,
    hour INTEGER NOT NULL,
    {_COLUMNS},
    PRIMARY KEY (kind, training_run_id, sampler_id, session_id, base_model, hour)
);
CREATE INDEX IF NOT EXISTS usage_session ON usage (session_id);
CREATE INDEX IF NOT EXISTS usage_run ON usage (training_run_id);
CREATE TABLE IF NOT EXISTS usage_origin (
    sampler_id TEXT PRIMARY KEY,
    training_run_id TEXT NOT NULL
);
"""
_log = logging.getLogger("tinkex_server.usage")
_KEY = ("kind", "training_run_id", "sampler_id", "session_id", "base_model", "hour")
_GROUP = ", ".join(_KEY[:-1])
_SUMS = ", ".join(f"SUM({n}) AS {n}" for n in USAGE_COUNTERS)

#: Stores whose usage tables exist (created once per open store).
_READY: weakref.WeakSet[Store] = weakref.WeakSet()


def _ensure(store: Store) -> None:
    """Create the usage tables if needed. Inside another transaction (the scheduler's) the
    creation could still be rolled back with it, so the store counts as ready only after a
    creation that committed on its own."""
    if store in _READY:
        return
    own = getattr(store, "_depth", 0) == 0
    with store.tx() as c:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                c.execute(statement)
    if own:
        _READY.add(store)


def prepare(store: Store) -> None:
    """Create the usage tables when the server opens its store (outside any transaction),
    so recording an applied step never runs DDL."""
    _ensure(store)


def _add(store: Store, key: tuple[str, str, str, str, str], counts: dict[str, int]) -> None:
    """Add ``counts`` to the row of ``key`` in the current UTC hour (created at zero)."""
    _ensure(store)
    names = [n for n in USAGE_COUNTERS if counts.get(n)]
    if not names:
        return
    hour = int(time.time() // 3600) * 3600
    columns = ", ".join((*_KEY, *names))
    marks = ", ".join("?" * (len(_KEY) + len(names)))
    updates = ", ".join(f"{n} = {n} + excluded.{n}" for n in names)
    with store.tx() as c:
        c.execute(
            f"INSERT INTO usage ({columns}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET {updates}",
            (*key, hour, *(int(counts[n]) for n in names)),
        )


def _run_of_sampler(store: Store, sampler: SamplerRow) -> str:
    """The training run whose weights a sampler serves ('' for a base model)."""
    if sampler.model_path is not None:
        try:
            return TinkerPath.parse(sampler.model_path).training_run_id
        except ValueError:
            return ""
    if sampler.source_dir is None:
        return ""
    _ensure(store)
    with store.tx() as c:
        row = c.execute(
            "SELECT training_run_id FROM usage_origin WHERE sampler_id=?", (sampler.sampler_id,)
        ).fetchone()
    return "" if row is None else str(row["training_run_id"])


def _training(store: Store, model_id: str, counts: dict[str, int]) -> None:
    row = store.get_model(model_id)
    if row is None:
        return
    _add(store, ("training", model_id, "", row.session_id, row.base_model), counts)


def _sampling(store: Store, job: Any, output: Any) -> None:
    sampler: SamplerRow = job.sampler
    prompt = len(job.sample.prompt)
    counts = {
        "sample_requests": 1,
        "sample_prompt_tokens": prompt,
        "sampled_sequences": len(output.sequences),
        "sampled_tokens": sum(len(s.tokens) for s in output.sequences),
    }
    if job.want_prompt_logprobs:
        counts["logprobs_requests"] = 1
        counts["logprobs_prompt_tokens"] = prompt
    key = (
        "sampling",
        _run_of_sampler(store, sampler),
        sampler.sampler_id,
        sampler.session_id or "",
        sampler.base_model,
    )
    _add(store, key, counts)


def record_applied(store: Store, job: Job, output: Any) -> None:
    """Count one applied job (called inside the transaction that stores its result). A
    failure to count is logged, never the step's failure."""
    try:
        _record(store, job, output)
    except Exception:
        _log.exception("could not record the usage of %s (%s)", job.request_id, job.request_type)


def _record(store: Store, job: Job, output: Any) -> None:
    from tinkex_server._sampling import ServerSampleJob
    from tinkex_server._training_jobs import ForwardJob, OptimStepJob, SamplerSnapshotJob

    if isinstance(job, ForwardJob):
        prefix = "forward_backward" if job.backward else "forward"
        counts = {
            f"{prefix}_requests": 1,
            f"{prefix}_datums": len(job.data),
            f"{prefix}_tokens": sum(len(d.tokens) for d in job.data),
        }
        _training(store, job.target, counts)
    elif isinstance(job, OptimStepJob):
        _training(store, job.target, {"optim_steps": 1})
    elif isinstance(job, ServerSampleJob):
        _sampling(store, job, output)
    elif isinstance(job, SamplerSnapshotJob):
        _ensure(store)
        with store.tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO usage_origin (sampler_id, training_run_id) VALUES (?, ?)",
                (job.sampler_id, job.target),
            )


def _entry(row: Any) -> UsageEntry:
    return UsageEntry(
        kind=row["kind"],
        base_model=row["base_model"],
        training_run_id=row["training_run_id"] or None,
        sampling_session_id=row["sampler_id"] or None,
        **{name: int(row[name]) for name in USAGE_COUNTERS},
    )


class UsageBook:
    """The usage reports of one server's store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _entries(self, column: str, value: str) -> list[UsageEntry]:
        _ensure(self.store)
        with self.store.tx() as c:
            rows = c.execute(
                f"SELECT {_GROUP}, {_SUMS} FROM usage WHERE {column}=? GROUP BY {_GROUP} "
                "ORDER BY kind DESC, training_run_id, sampler_id, base_model",
                (value,),
            ).fetchall()
        return [_entry(r) for r in rows]

    def training_run(self, run_id: str) -> UsageResponse:
        """Everything applied for a training run: its passes and steps, and the sampling of
        samplers that serve its weights (404 for an unknown run)."""
        if self.store.get_model(run_id) is None:
            raise not_found("training_run_id", run_id, "list runs with GET /api/v1/training_runs")
        return usage_response(
            "training_run", run_id, "server", self._entries("training_run_id", run_id)
        )

    def session(self, session_id: str) -> UsageResponse:
        """Everything applied for a session: its training runs and its samplers (404 for an
        unknown session)."""
        if self.store.get_session(session_id) is None:
            raise not_found("session_id", session_id, "list sessions with GET /api/v1/sessions")
        return usage_response(
            "session", session_id, "server", self._entries("session_id", session_id)
        )
