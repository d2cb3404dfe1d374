"""The ``checkpoints`` table: saved training states and sampler weights, with expiry."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from tinkex_server._store.base import StoreBase
from tinkex_server._store.rows import CheckpointRow, checkpoint_row
from tinkex_server._store.schema import dumps

__all__ = ["CheckpointStore"]

_KEY = "training_run_id=? AND kind=? AND name=?"


class CheckpointStore(StoreBase):
    """Checkpoints are keyed by (training run, kind, name); expired ones are invisible."""

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
        user_metadata: Mapping[str, str] | None = None,
    ) -> CheckpointRow:
        """Insert the checkpoint, or replace every column of the one of that name (its
        ``user_metadata`` too: ``None`` removes the old one)."""
        now = time.time()
        metadata = None if user_metadata is None else dumps(dict(user_metadata))
        with self.tx() as c:
            c.execute(
                "INSERT INTO checkpoints (training_run_id, kind, name, created_at, size_bytes, "
                "public, expires_at, directory, step, user_metadata) "
                "VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?) "
                "ON CONFLICT (training_run_id, kind, name) DO UPDATE SET "
                "created_at=excluded.created_at, size_bytes=excluded.size_bytes, "
                "expires_at=excluded.expires_at, directory=excluded.directory, "
                "step=excluded.step, user_metadata=excluded.user_metadata",
                (
                    training_run_id,
                    kind,
                    name,
                    now,
                    size_bytes,
                    expires_at,
                    directory,
                    step,
                    metadata,
                ),
            )
            row = c.execute(
                f"SELECT * FROM checkpoints WHERE {_KEY}", (training_run_id, kind, name)
            ).fetchone()
            return checkpoint_row(row)

    def get_checkpoint(
        self, training_run_id: str, kind: str, name: str, *, now: float | None = None
    ) -> CheckpointRow | None:
        """The checkpoint, or ``None`` if unknown or expired."""
        row = self._one(f"SELECT * FROM checkpoints WHERE {_KEY}", (training_run_id, kind, name))
        if row is None:
            return None
        ckpt = checkpoint_row(row)
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
        total = self._count(f"SELECT COUNT(*) AS n FROM checkpoints WHERE {cond}", args)
        sql = f"SELECT * FROM checkpoints WHERE {cond} ORDER BY created_at DESC, name DESC"
        page_args = list(args)
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            page_args += [limit, offset]
        rows = self._all(sql, page_args)
        return [checkpoint_row(r) for r in rows], total

    def latest_checkpoint(self, training_run_id: str, kind: str) -> CheckpointRow | None:
        rows, _ = self.list_checkpoints(training_run_id, limit=1, kind=kind)
        return rows[0] if rows else None

    def delete_checkpoint(self, training_run_id: str, kind: str, name: str) -> bool:
        with self.tx() as c:
            cur = c.execute(f"DELETE FROM checkpoints WHERE {_KEY}", (training_run_id, kind, name))
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
                f"UPDATE checkpoints SET public=? WHERE {_KEY}",
                (int(public), training_run_id, kind, name),
            )

    def set_checkpoint_expiry(
        self, training_run_id: str, kind: str, name: str, expires_at: float | None
    ) -> None:
        with self.tx() as c:
            c.execute(
                f"UPDATE checkpoints SET expires_at=? WHERE {_KEY}",
                (expires_at, training_run_id, kind, name),
            )

    def expired_checkpoints(self, now: float | None = None) -> list[CheckpointRow]:
        t = time.time() if now is None else now
        rows = self._all(
            "SELECT * FROM checkpoints WHERE expires_at IS NOT NULL AND expires_at <= ?", (t,)
        )
        return [checkpoint_row(r) for r in rows]
