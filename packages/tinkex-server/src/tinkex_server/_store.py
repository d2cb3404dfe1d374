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
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

SCHEMA_VERSION = 1

_SCHEMA = """
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


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=True)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


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


class Store:
    """SQLite-backed state (see the module docstring). Open with :meth:`open`."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open (creating if needed) the database at ``path``; WAL mode, schema applied."""
        db = Path(path)
        db.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=OFF")
        store = cls(conn, db)
        conn.executescript(_SCHEMA)
        with store.tx() as c:
            row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                c.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row["value"]) > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{db} was written by a newer tinkex-server (schema {row['value']}); "
                    "upgrade tinkex-server or use another data directory"
                )
        return store

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._conn.close()

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction (nested calls join the outer one)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._depth = 0
                self._conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self._conn.execute("COMMIT")

    def _one(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, args).fetchone()
            return row

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, args).fetchall())

    # -- meta -----------------------------------------------------------------------------
    def secret(self) -> bytes:
        """The per-data-dir secret that signs archive URLs (created on first use)."""
        with self.tx() as c:
            row = c.execute("SELECT value FROM meta WHERE key='url_secret'").fetchone()
            if row is not None:
                return bytes.fromhex(row["value"])
            value = secrets.token_bytes(32)
            c.execute("INSERT INTO meta (key, value) VALUES ('url_secret', ?)", (value.hex(),))
            return value

    def recover_after_restart(self) -> list[tuple[str, int]]:
        """Mark futures left ``pending`` by a previous process as ``lost``; move each
        model's expected ``seq_id`` past the lost ones. Returns the lost (target, seq_id)."""
        now = time.time()
        with self.tx() as c:
            lost = c.execute("SELECT target, seq_id FROM futures WHERE status='pending'").fetchall()
            c.execute(
                "UPDATE futures SET status='lost', completed_at=? WHERE status='pending'", (now,)
            )
            out: list[tuple[str, int]] = []
            for row in lost:
                if row["target"] is not None and row["seq_id"] is not None:
                    out.append((row["target"], int(row["seq_id"])))
                    c.execute(
                        "UPDATE models SET next_seq_id = MAX(next_seq_id, ?) WHERE model_id=?",
                        (int(row["seq_id"]) + 1, row["target"]),
                    )
            c.execute(
                "UPDATE models SET status='failed', error='the server stopped while creating "
                "this model' WHERE status='creating'"
            )
            return out

    # -- sessions ---------------------------------------------------------------------------
    def create_session(
        self,
        session_id: str,
        *,
        tags: list[str],
        user_metadata: Mapping[str, Any],
        sdk_version: str | None,
        project_id: str | None,
    ) -> None:
        now = time.time()
        with self.tx() as c:
            c.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    session_id,
                    now,
                    now,
                    _dumps(tags),
                    _dumps(dict(user_metadata)),
                    sdk_version,
                    project_id,
                ),
            )

    @staticmethod
    def _session(row: sqlite3.Row) -> SessionRow:
        return SessionRow(
            session_id=row["session_id"],
            created_at=row["created_at"],
            last_heartbeat=row["last_heartbeat"],
            tags=_loads(row["tags"]),
            user_metadata=_loads(row["user_metadata"]),
            sdk_version=row["sdk_version"],
            project_id=row["project_id"],
        )

    def get_session(self, session_id: str) -> SessionRow | None:
        row = self._one("SELECT * FROM sessions WHERE session_id=?", (session_id,))
        return None if row is None else self._session(row)

    def touch_session(self, session_id: str) -> bool:
        with self.tx() as c:
            cur = c.execute(
                "UPDATE sessions SET last_heartbeat=? WHERE session_id=?", (time.time(), session_id)
            )
            return cur.rowcount > 0

    def list_sessions(self, *, limit: int, offset: int) -> tuple[list[str], int]:
        total = self._one("SELECT COUNT(*) AS n FROM sessions")
        rows = self._all(
            "SELECT session_id FROM sessions ORDER BY created_at DESC, session_id LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [r["session_id"] for r in rows], int(total["n"]) if total else 0

    def session_children(self, session_id: str) -> tuple[list[str], list[str]]:
        runs = self._all(
            "SELECT model_id FROM models WHERE session_id=? ORDER BY created_at", (session_id,)
        )
        samplers = self._all(
            "SELECT sampler_id FROM samplers WHERE session_id=? ORDER BY created_at", (session_id,)
        )
        return [r["model_id"] for r in runs], [r["sampler_id"] for r in samplers]

    # -- de-duplication ---------------------------------------------------------------------
    def dedup_get(self, key: str) -> tuple[str | None, Any]:
        """``(request_id, cached response)`` recorded under ``key``, or ``(None, None)``."""
        row = self._one("SELECT request_id, response FROM dedup WHERE key=?", (key,))
        if row is None:
            return None, None
        return row["request_id"], _loads(row["response"])

    def dedup_put(self, key: str, *, request_id: str | None = None, response: Any = None) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO dedup (key, request_id, response, created_at) "
                "VALUES (?, ?, ?, ?)",
                (key, request_id, None if response is None else _dumps(response), time.time()),
            )

    def dedup_purge(self, prefix: str, older_than: float) -> int:
        """Forget keys starting with ``prefix`` recorded before ``older_than``."""
        with self.tx() as c:
            cur = c.execute(
                "DELETE FROM dedup WHERE key LIKE ? AND created_at < ?",
                (prefix.replace("%", r"\%") + "%", older_than),
            )
            return cur.rowcount

    # -- models -----------------------------------------------------------------------------
    def insert_model(
        self,
        model_id: str,
        *,
        session_id: str,
        model_seq_id: int | None,
        base_model: str,
        lora_config: Mapping[str, Any],
        user_metadata: Mapping[str, Any] | None,
    ) -> None:
        now = time.time()
        with self.tx() as c:
            c.execute(
                "INSERT INTO models (model_id, session_id, model_seq_id, base_model, "
                "lora_config, user_metadata, created_at, last_request_time, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'creating')",
                (
                    model_id,
                    session_id,
                    model_seq_id,
                    base_model,
                    _dumps(dict(lora_config)),
                    None if user_metadata is None else _dumps(dict(user_metadata)),
                    now,
                    now,
                ),
            )

    @staticmethod
    def _model(row: sqlite3.Row) -> ModelRow:
        return ModelRow(
            model_id=row["model_id"],
            session_id=row["session_id"],
            model_seq_id=row["model_seq_id"],
            base_model=row["base_model"],
            lora_config=_loads(row["lora_config"]),
            user_metadata=_loads(row["user_metadata"]),
            created_at=row["created_at"],
            last_request_time=row["last_request_time"],
            status=row["status"],
            error=row["error"],
            corrupted=bool(row["corrupted"]),
            next_seq_id=int(row["next_seq_id"]),
            last_state=row["last_state"],
            step=int(row["step"]),
        )

    def get_model(self, model_id: str) -> ModelRow | None:
        row = self._one("SELECT * FROM models WHERE model_id=?", (model_id,))
        return None if row is None else self._model(row)

    _MODEL_FIELDS = frozenset(
        {
            "status",
            "error",
            "corrupted",
            "next_seq_id",
            "last_state",
            "step",
            "lora_config",
            "last_request_time",
        }
    )

    def update_model(self, model_id: str, **fields: Any) -> None:
        """Set some columns of a model (``lora_config`` given as a dict)."""
        bad = set(fields) - self._MODEL_FIELDS
        if bad:
            raise ValueError(f"unknown model fields {sorted(bad)}")
        if "lora_config" in fields:
            fields["lora_config"] = _dumps(fields["lora_config"])
        if "corrupted" in fields:
            fields["corrupted"] = int(bool(fields["corrupted"]))
        cols = ", ".join(f"{k}=?" for k in fields)
        with self.tx() as c:
            c.execute(f"UPDATE models SET {cols} WHERE model_id=?", (*fields.values(), model_id))

    def touch_model(self, model_id: str) -> None:
        self.update_model(model_id, last_request_time=time.time())

    def set_corrupted(self, model_id: str, corrupted: bool = True) -> bool:
        """Mark a training run corrupted (or not); False if the run is unknown."""
        with self.tx() as c:
            cur = c.execute(
                "UPDATE models SET corrupted=? WHERE model_id=?", (int(corrupted), model_id)
            )
            return cur.rowcount > 0

    def list_models(self, *, limit: int, offset: int) -> tuple[list[ModelRow], int]:
        total = self._one("SELECT COUNT(*) AS n FROM models")
        rows = self._all(
            "SELECT * FROM models ORDER BY created_at DESC, model_id LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [self._model(r) for r in rows], int(total["n"]) if total else 0

    def all_models(self) -> list[ModelRow]:
        return [self._model(r) for r in self._all("SELECT * FROM models ORDER BY created_at")]

    # -- samplers ---------------------------------------------------------------------------
    def insert_sampler(
        self,
        sampler_id: str,
        *,
        session_id: str | None,
        base_model: str,
        model_path: str | None,
        source_dir: str | None,
        source_kind: str | None,
    ) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO samplers VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    sampler_id,
                    session_id,
                    base_model,
                    model_path,
                    source_dir,
                    source_kind,
                    time.time(),
                ),
            )

    def get_sampler(self, sampler_id: str) -> SamplerRow | None:
        row = self._one("SELECT * FROM samplers WHERE sampler_id=?", (sampler_id,))
        if row is None:
            return None
        return SamplerRow(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - sqlite3.Row

    # -- futures ----------------------------------------------------------------------------
    def insert_future(
        self,
        request_id: str,
        *,
        target: str | None,
        seq_id: int | None,
        request_type: str,
        session_id: str | None,
        dedup_keys: Sequence[str] = (),
    ) -> None:
        now = time.time()
        with self.tx() as c:
            c.execute(
                "INSERT INTO futures (request_id, target, seq_id, request_type, session_id, "
                "status, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                (request_id, target, seq_id, request_type, session_id, now),
            )
            for key in dedup_keys:
                c.execute(
                    "INSERT OR IGNORE INTO dedup (key, request_id, created_at) VALUES (?, ?, ?)",
                    (key, request_id, now),
                )

    def complete_future(
        self,
        request_id: str,
        result: Any,
        *,
        failed: bool,
        applied: tuple[str, int | None, str] | None = None,
    ) -> None:
        """Store a future's final body; optionally append to the applied-steps log."""
        now = time.time()
        with self.tx() as c:
            c.execute(
                "UPDATE futures SET status=?, result=?, completed_at=? WHERE request_id=?",
                ("failed" if failed else "done", _dumps(result), now, request_id),
            )
            if applied is not None:
                target, seq_id, request_type = applied
                c.execute(
                    "INSERT INTO applied (target, seq_id, request_type, request_id, outcome, "
                    "applied_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (target, seq_id, request_type, request_id, "failed" if failed else "ok", now),
                )

    def get_future(self, request_id: str) -> FutureRow | None:
        row = self._one("SELECT * FROM futures WHERE request_id=?", (request_id,))
        if row is None:
            return None
        return FutureRow(
            request_id=row["request_id"],
            target=row["target"],
            seq_id=row["seq_id"],
            request_type=row["request_type"],
            session_id=row["session_id"],
            status=row["status"],
            result=_loads(row["result"]),
            created_at=row["created_at"],
            completed_at=row["completed_at"],
        )

    def count_futures(self, status: str | None = None) -> int:
        if status is None:
            row = self._one("SELECT COUNT(*) AS n FROM futures")
        else:
            row = self._one("SELECT COUNT(*) AS n FROM futures WHERE status=?", (status,))
        return int(row["n"]) if row else 0

    def expire_results(self, older_than: float) -> int:
        """Drop the results of futures completed before ``older_than`` (they answer 410)."""
        with self.tx() as c:
            cur = c.execute(
                "UPDATE futures SET status='expired', result=NULL "
                "WHERE status IN ('done', 'failed') AND completed_at < ?",
                (older_than,),
            )
            return cur.rowcount

    # -- checkpoints ------------------------------------------------------------------------
    def upsert_checkpoint(
        self,
        training_run_id: str,
        kind: str,
        name: str,
        *,
        directory: str,
        size_bytes: int | None,
        expires_at: float | None,
        step: int | None,
    ) -> CheckpointRow:
        now = time.time()
        with self.tx() as c:
            c.execute(
                "INSERT INTO checkpoints (training_run_id, kind, name, created_at, size_bytes, "
                "public, expires_at, directory, step) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?) "
                "ON CONFLICT (training_run_id, kind, name) DO UPDATE SET "
                "created_at=excluded.created_at, size_bytes=excluded.size_bytes, "
                "expires_at=excluded.expires_at, directory=excluded.directory, "
                "step=excluded.step",
                (training_run_id, kind, name, now, size_bytes, expires_at, directory, step),
            )
            row = c.execute(
                "SELECT * FROM checkpoints WHERE training_run_id=? AND kind=? AND name=?",
                (training_run_id, kind, name),
            ).fetchone()
            return self._checkpoint(row)

    @staticmethod
    def _checkpoint(row: sqlite3.Row) -> CheckpointRow:
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
        )

    def get_checkpoint(
        self, training_run_id: str, kind: str, name: str, *, now: float | None = None
    ) -> CheckpointRow | None:
        """The checkpoint, or ``None`` if unknown or expired."""
        row = self._one(
            "SELECT * FROM checkpoints WHERE training_run_id=? AND kind=? AND name=?",
            (training_run_id, kind, name),
        )
        if row is None:
            return None
        ckpt = self._checkpoint(row)
        t = time.time() if now is None else now
        if ckpt.expires_at is not None and ckpt.expires_at <= t:
            return None
        return ckpt

    def list_checkpoints(
        self,
        training_run_id: str | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        kind: str | None = None,
    ) -> tuple[list[CheckpointRow], int]:
        """Unexpired checkpoints, newest first (of one run, or all)."""
        where = ["(expires_at IS NULL OR expires_at > ?)"]
        args: list[Any] = [time.time()]
        if training_run_id is not None:
            where.append("training_run_id=?")
            args.append(training_run_id)
        if kind is not None:
            where.append("kind=?")
            args.append(kind)
        cond = " AND ".join(where)
        total = self._one(f"SELECT COUNT(*) AS n FROM checkpoints WHERE {cond}", args)
        sql = f"SELECT * FROM checkpoints WHERE {cond} ORDER BY created_at DESC, name DESC"
        page_args = list(args)
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            page_args += [limit, offset]
        rows = self._all(sql, page_args)
        return [self._checkpoint(r) for r in rows], int(total["n"]) if total else 0

    def latest_checkpoint(self, training_run_id: str, kind: str) -> CheckpointRow | None:
        rows, _ = self.list_checkpoints(training_run_id, limit=1, kind=kind)
        return rows[0] if rows else None

    def delete_checkpoint(self, training_run_id: str, kind: str, name: str) -> bool:
        with self.tx() as c:
            cur = c.execute(
                "DELETE FROM checkpoints WHERE training_run_id=? AND kind=? AND name=?",
                (training_run_id, kind, name),
            )
            if kind == "weights":
                c.execute(
                    "UPDATE models SET last_state=NULL WHERE model_id=? AND last_state=?",
                    (training_run_id, name),
                )
            return cur.rowcount > 0

    def set_checkpoint_public(
        self, training_run_id: str, kind: str, name: str, public: bool
    ) -> None:
        with self.tx() as c:
            c.execute(
                "UPDATE checkpoints SET public=? WHERE training_run_id=? AND kind=? AND name=?",
                (int(public), training_run_id, kind, name),
            )

    def set_checkpoint_expiry(
        self, training_run_id: str, kind: str, name: str, expires_at: float | None
    ) -> None:
        with self.tx() as c:
            c.execute(
                "UPDATE checkpoints SET expires_at=? WHERE training_run_id=? AND kind=? AND name=?",
                (expires_at, training_run_id, kind, name),
            )

    def expired_checkpoints(self, now: float | None = None) -> list[CheckpointRow]:
        t = time.time() if now is None else now
        rows = self._all(
            "SELECT * FROM checkpoints WHERE expires_at IS NOT NULL AND expires_at <= ?", (t,)
        )
        return [self._checkpoint(r) for r in rows]

    # -- telemetry ----------------------------------------------------------------------------
    def insert_telemetry(self, body: Any, *, session_id: str | None) -> int:
        with self.tx() as c:
            cur = c.execute(
                "INSERT INTO telemetry (received_at, session_id, body) VALUES (?, ?, ?)",
                (time.time(), session_id, _dumps(body)),
            )
            return int(cur.lastrowid or 0)

    def telemetry(self, *, session_id: str | None = None) -> list[TelemetryRow]:
        """Every stored telemetry batch, oldest first (optionally of one session)."""
        if session_id is None:
            rows = self._all("SELECT * FROM telemetry ORDER BY id")
        else:
            rows = self._all(
                "SELECT * FROM telemetry WHERE session_id=? ORDER BY id", (session_id,)
            )
        return [
            TelemetryRow(r["id"], r["received_at"], r["session_id"], _loads(r["body"]))
            for r in rows
        ]

    # -- applied-steps log ------------------------------------------------------------------
    def applied_steps(self, target: str | None = None) -> list[AppliedStep]:
        """The applied-steps log, oldest first (optionally of one model or sampler)."""
        if target is None:
            rows = self._all("SELECT * FROM applied ORDER BY id")
        else:
            rows = self._all("SELECT * FROM applied WHERE target=? ORDER BY id", (target,))
        return [
            AppliedStep(
                id=r["id"],
                target=r["target"],
                seq_id=r["seq_id"],
                request_type=r["request_type"],
                request_id=r["request_id"],
                outcome=r["outcome"],
                applied_at=r["applied_at"],
            )
            for r in rows
        ]
