"""Training runs (``models``) and sampling sessions (``samplers``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from tinkex_server._store.base import StoreBase
from tinkex_server._store.rows import ModelRow, SamplerRow, model_row, sampler_row
from tinkex_server._store.schema import dumps

__all__ = ["ModelStore", "SamplerStore"]

#: The ``models`` columns :meth:`ModelStore.update_model` may set.
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


class ModelStore(StoreBase):
    """The ``models`` table."""

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
                    dumps(dict(lora_config)),
                    None if user_metadata is None else dumps(dict(user_metadata)),
                    now,
                    now,
                ),
            )

    def get_model(self, model_id: str) -> ModelRow | None:
        row = self._one("SELECT * FROM models WHERE model_id=?", (model_id,))
        return None if row is None else model_row(row)

    def update_model(self, model_id: str, **fields: Any) -> None:
        """Set some columns of a model (``lora_config`` given as a dict)."""
        bad = set(fields) - _MODEL_FIELDS
        if bad:
            raise ValueError(f"unknown model fields {sorted(bad)}")
        if "lora_config" in fields:
            fields["lora_config"] = dumps(fields["lora_config"])
        if "corrupted" in fields:
            fields["corrupted"] = int(bool(fields["corrupted"]))
        cols = ", ".join(f"{k}=?" for k in fields)
        with self.tx() as c:
            c.execute(f"UPDATE models SET {cols} WHERE model_id=?", (*fields.values(), model_id))

    def set_corrupted(self, model_id: str, corrupted: bool = True) -> bool:
        """Mark a training run corrupted (or not); False if the run is unknown."""
        with self.tx() as c:
            cur = c.execute(
                "UPDATE models SET corrupted=? WHERE model_id=?", (int(corrupted), model_id)
            )
            return cur.rowcount > 0

    def list_models(self, *, limit: int, offset: int) -> tuple[list[ModelRow], int]:
        total = self._count("SELECT COUNT(*) AS n FROM models")
        rows = self._all(
            "SELECT * FROM models ORDER BY created_at DESC, model_id LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [model_row(r) for r in rows], total

    def all_models(self) -> list[ModelRow]:
        return [model_row(r) for r in self._all("SELECT * FROM models ORDER BY created_at")]


class SamplerStore(StoreBase):
    """The ``samplers`` table."""

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

    def set_sampler_source(self, sampler_id: str, source_dir: str) -> None:
        """Serve other weights from now on (an inflight sampler adopting newer ones)."""
        with self.tx() as c:
            c.execute(
                "UPDATE samplers SET source_dir=? WHERE sampler_id=?", (source_dir, sampler_id)
            )

    def get_sampler(self, sampler_id: str) -> SamplerRow | None:
        row = self._one("SELECT * FROM samplers WHERE sampler_id=?", (sampler_id,))
        return None if row is None else sampler_row(row)
