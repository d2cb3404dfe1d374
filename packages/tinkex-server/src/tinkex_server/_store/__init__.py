"""The server's durable state: one SQLite database in WAL mode.

Tables: ``meta`` (schema version, URL-signing secret), ``sessions``, ``models`` (training
runs: base model, LoRA config, last checkpoint, next expected ``seq_id``, corrupted flag),
``samplers``, ``futures`` (request id, target, ``seq_id``, type, status, result JSON),
``dedup`` (de-duplication and idempotency keys → request id or cached answer),
``checkpoints``, ``telemetry`` (raw batches as received) and ``applied`` (one row per
operation the engine executed: the applied-steps log).

Every multi-row change runs in one ``BEGIN IMMEDIATE`` transaction (:meth:`Store.tx`), so
a kill leaves either all of it or none. One connection is shared under a lock; the store is
safe to call from any thread.

Layout: :mod:`.schema` (tables, JSON columns), :mod:`.rows` (the row dataclasses),
:mod:`.base` (connection, transactions, meta, restart recovery) and one module per concern:
:mod:`.sessions` (sessions, de-duplication/idempotency keys), :mod:`.models` (training runs,
samplers), :mod:`.futures` (futures, applied-steps log), :mod:`.checkpoints` and
:mod:`.telemetry`. :class:`Store` is all of them.
"""

from __future__ import annotations

from tinkex_server._store.checkpoints import CheckpointStore
from tinkex_server._store.futures import FutureStore
from tinkex_server._store.models import ModelStore, SamplerStore
from tinkex_server._store.rows import (
    AppliedStep,
    CheckpointRow,
    FutureRow,
    ModelRow,
    SamplerRow,
    SessionRow,
    TelemetryRow,
)
from tinkex_server._store.sessions import DedupStore, SessionStore
from tinkex_server._store.telemetry import TelemetryStore

__all__ = [
    "AppliedStep",
    "CheckpointRow",
    "FutureRow",
    "ModelRow",
    "SamplerRow",
    "SessionRow",
    "Store",
    "TelemetryRow",
]


class Store(
    SessionStore,
    DedupStore,
    ModelStore,
    SamplerStore,
    FutureStore,
    CheckpointStore,
    TelemetryStore,
):
    """SQLite-backed state (see the module docstring). Open with :meth:`open`."""
