"""The ``telemetry`` table: raw telemetry batches as the server received them."""

from __future__ import annotations

import time
from typing import Any

from tinkex_server._store.base import StoreBase
from tinkex_server._store.rows import TelemetryRow
from tinkex_server._store.schema import dumps, loads

__all__ = ["TelemetryStore"]


class TelemetryStore(StoreBase):
    """Stored telemetry batches."""

    def insert_telemetry(self, body: Any, *, session_id: str | None) -> int:
        with self.tx() as c:
            cur = c.execute(
                "INSERT INTO telemetry (received_at, session_id, body) VALUES (?, ?, ?)",
                (time.time(), session_id, dumps(body)),
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
            TelemetryRow(r["id"], r["received_at"], r["session_id"], loads(r["body"])) for r in rows
        ]
