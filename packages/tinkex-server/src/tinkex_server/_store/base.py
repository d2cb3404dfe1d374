"""The store's connection: opening, transactions, queries, the meta table and restart
recovery. The tables' own operations extend :class:`StoreBase` (see :mod:`._store`)."""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Self

from tinkex_server._store.schema import ADDED_COLUMNS, SCHEMA, SCHEMA_VERSION

__all__ = ["StoreBase"]


class StoreBase:
    """One SQLite connection shared under a lock. Open with :meth:`open`."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0

    @classmethod
    def open(cls, path: str | Path) -> Self:
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
        conn.executescript(SCHEMA)
        with store.tx() as c:
            for table, column, sql_type in ADDED_COLUMNS:
                have = {r["name"] for r in c.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")
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

    def _count(self, sql: str, args: Sequence[Any] = ()) -> int:
        """The ``n`` column of a ``SELECT COUNT(*) AS n`` query."""
        row = self._one(sql, args)
        return int(row["n"]) if row else 0

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
