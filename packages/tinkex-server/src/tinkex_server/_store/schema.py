"""The SQLite schema of the store, and the JSON encoding of its JSON columns."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["ADDED_COLUMNS", "SCHEMA", "SCHEMA_VERSION", "dumps", "loads"]

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    last_heartbeat REAL NOT NULL,
    tags TEXT NOT NULL,
    user_metadata TEXT NOT NULL,
    sdk_version TEXT,
    project_id TEXT
);
CREATE TABLE IF NOT EXISTS models (
    model_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    model_seq_id INTEGER,
    base_model TEXT NOT NULL,
    lora_config TEXT NOT NULL,
    user_metadata TEXT,
    created_at REAL NOT NULL,
    last_request_time REAL NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    corrupted INTEGER NOT NULL DEFAULT 0,
    next_seq_id INTEGER NOT NULL DEFAULT 1,
    last_state TEXT,
    step INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS models_session ON models (session_id);
CREATE TABLE IF NOT EXISTS samplers (
    sampler_id TEXT PRIMARY KEY,
    session_id TEXT,
    base_model TEXT NOT NULL,
    model_path TEXT,
    source_dir TEXT,
    source_kind TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samplers_session ON samplers (session_id);
CREATE TABLE IF NOT EXISTS futures (
    request_id TEXT PRIMARY KEY,
    target TEXT,
    seq_id INTEGER,
    request_type TEXT NOT NULL,
    session_id TEXT,
    status TEXT NOT NULL,
    result TEXT,
    created_at REAL NOT NULL,
    completed_at REAL
);
CREATE INDEX IF NOT EXISTS futures_status ON futures (status);
CREATE TABLE IF NOT EXISTS dedup (
    key TEXT PRIMARY KEY,
    request_id TEXT,
    response TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    training_run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    size_bytes INTEGER,
    public INTEGER NOT NULL DEFAULT 0,
    expires_at REAL,
    directory TEXT NOT NULL,
    step INTEGER,
    user_metadata TEXT,
    PRIMARY KEY (training_run_id, kind, name)
);
CREATE TABLE IF NOT EXISTS telemetry (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    session_id TEXT,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS applied (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    seq_id INTEGER,
    request_type TEXT NOT NULL,
    request_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    applied_at REAL NOT NULL
);
"""


#: Columns added after a table was first released: ``(table, column, SQL type)``. A store
#: written before them gets them (``ALTER TABLE ... ADD COLUMN``) when it is opened; older
#: servers read such a store unchanged (they never name the column).
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (("checkpoints", "user_metadata", "TEXT"),)


def dumps(obj: Any) -> str:
    """Compact JSON (NaN and infinities allowed, as Python writes them)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=True)


def loads(text: str | None) -> Any:
    """The value of a JSON column (``None`` for SQL NULL)."""
    return None if text is None else json.loads(text)
