"""Sessions and the de-duplication / idempotency keys."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from tinkex_server._store.base import StoreBase
from tinkex_server._store.rows import SessionRow, session_row
from tinkex_server._store.schema import dumps, loads

__all__ = ["DedupStore", "SessionStore"]


class SessionStore(StoreBase):
    """The ``sessions`` table."""

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
                    dumps(tags),
                    dumps(dict(user_metadata)),
                    sdk_version,
                    project_id,
                ),
            )

    def get_session(self, session_id: str) -> SessionRow | None:
        row = self._one("SELECT * FROM sessions WHERE session_id=?", (session_id,))
        return None if row is None else session_row(row)

    def touch_session(self, session_id: str) -> bool:
        with self.tx() as c:
            cur = c.execute(
                "UPDATE sessions SET last_heartbeat=? WHERE session_id=?", (time.time(), session_id)
            )
            return cur.rowcount > 0

    def list_sessions(self, *, limit: int, offset: int) -> tuple[list[str], int]:
        total = self._count("SELECT COUNT(*) AS n FROM sessions")
        rows = self._all(
            "SELECT session_id FROM sessions ORDER BY created_at DESC, session_id LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [r["session_id"] for r in rows], total

    def session_children(self, session_id: str) -> tuple[list[str], list[str]]:
        runs = self._all(
            "SELECT model_id FROM models WHERE session_id=? ORDER BY created_at", (session_id,)
        )
        samplers = self._all(
            "SELECT sampler_id FROM samplers WHERE session_id=? ORDER BY created_at", (session_id,)
        )
        return [r["model_id"] for r in runs], [r["sampler_id"] for r in samplers]


class DedupStore(StoreBase):
    """The ``dedup`` table: de-duplication and idempotency keys -> request id or answer."""

    def dedup_get(self, key: str) -> tuple[str | None, Any]:
        """``(request_id, cached response)`` recorded under ``key``, or ``(None, None)``."""
        row = self._one("SELECT request_id, response FROM dedup WHERE key=?", (key,))
        if row is None:
            return None, None
        return row["request_id"], loads(row["response"])

    def dedup_put(self, key: str, *, request_id: str | None = None, response: Any = None) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO dedup (key, request_id, response, created_at) "
                "VALUES (?, ?, ?, ?)",
                (key, request_id, None if response is None else dumps(response), time.time()),
            )

    def dedup_purge(self, prefix: str, older_than: float) -> int:
        """Forget keys starting with ``prefix`` recorded before ``older_than``."""
        with self.tx() as c:
            cur = c.execute(
                "DELETE FROM dedup WHERE key LIKE ? AND created_at < ?",
                (prefix.replace("%", r"\%") + "%", older_than),
            )
            return cur.rowcount
