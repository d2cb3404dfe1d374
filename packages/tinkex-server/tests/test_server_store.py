"""The store on a real SQLite file: transactions, restart recovery, each table's operations."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinkex_server._store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "state" / "tinkex.db")
    yield s
    s.close()


def _model(store: Store, model_id: str = "s1:train:0") -> None:
    store.insert_model(
        model_id,
        session_id="s1",
        model_seq_id=0,
        base_model="tinkex/tiny-llama-100k",
        lora_config={"rank": 4, "seed": 1},
        user_metadata=None,
    )


def test_a_failed_transaction_leaves_nothing_and_nested_ones_join(store: Store) -> None:
    def insert_then_fail() -> None:
        with store.tx():
            _model(store)  # joins the outer transaction
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        insert_then_fail()
    assert store.get_model("s1:train:0") is None
    _model(store)
    assert store.get_model("s1:train:0") is not None


def test_reopening_keeps_state_and_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "tinkex.db"
    first = Store.open(path)
    secret = first.secret()
    first.create_session(
        "s1", tags=["a"], user_metadata={"k": 1}, sdk_version="0.1", project_id=None
    )
    first.close()
    again = Store.open(path)
    assert again.secret() == secret
    session = again.get_session("s1")
    assert session is not None
    assert session.tags == ["a"]
    assert session.user_metadata == {"k": 1}
    again.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="newer tinkex-server"):
        Store.open(path)


def test_sessions_and_their_children(store: Store) -> None:
    for sid in ("s1", "s2"):
        store.create_session(sid, tags=[], user_metadata={}, sdk_version=None, project_id="p")
    _model(store)
    store.insert_sampler(
        "s1:sample:0",
        session_id="s1",
        base_model="tinkex/tiny-llama-100k",
        model_path=None,
        source_dir=None,
        source_kind=None,
    )
    ids, total = store.list_sessions(limit=1, offset=0)
    assert total == 2
    assert len(ids) == 1
    assert store.session_children("s1") == (["s1:train:0"], ["s1:sample:0"])
    assert store.touch_session("s1")
    assert not store.touch_session("nope")
    sampler = store.get_sampler("s1:sample:0")
    assert sampler is not None
    assert sampler.base_model == "tinkex/tiny-llama-100k"


def test_dedup_keys_keep_the_first_answer_and_purge_by_prefix(store: Store) -> None:
    store.dedup_put("idem:a", response={"ok": 1})
    store.dedup_put("idem:a", response={"ok": 2})
    assert store.dedup_get("idem:a") == (None, {"ok": 1})
    store.insert_future(
        "r1", target=None, seq_id=None, request_type="x", session_id=None, dedup_keys=["seq:m:1"]
    )
    assert store.dedup_get("seq:m:1") == ("r1", None)
    assert store.dedup_purge("idem:", time.time() + 1) == 1
    assert store.dedup_get("idem:a") == (None, None)
    assert store.dedup_get("seq:m:1")[0] == "r1"


def test_models_update_only_known_fields(store: Store) -> None:
    _model(store)
    store.update_model("s1:train:0", status="ready", corrupted=True, lora_config={"rank": 8})
    row = store.get_model("s1:train:0")
    assert row is not None
    assert (row.status, row.corrupted, row.lora_config) == ("ready", True, {"rank": 8})
    with pytest.raises(ValueError, match="unknown model fields"):
        store.update_model("s1:train:0", base_model="other")
    assert store.set_corrupted("s1:train:0", False)
    assert not store.set_corrupted("nope")
    rows, total = store.list_models(limit=10, offset=0)
    assert total == 1
    assert rows[0].corrupted is False
    assert [m.model_id for m in store.all_models()] == ["s1:train:0"]


def test_futures_complete_into_the_applied_log_and_expire(store: Store) -> None:
    store.insert_future("r1", target="m", seq_id=1, request_type="fwd", session_id="s1")
    store.complete_future("r1", {"loss": 1.5}, failed=False, applied=("m", 1, "fwd"))
    store.insert_future("r2", target="m", seq_id=2, request_type="fwd", session_id="s1")
    store.complete_future("r2", {"error": "x"}, failed=True, applied=("m", 2, "fwd"))
    done = store.get_future("r1")
    assert done is not None
    assert (done.status, done.result) == ("done", {"loss": 1.5})
    assert [(a.seq_id, a.outcome) for a in store.applied_steps("m")] == [(1, "ok"), (2, "failed")]
    assert store.applied_steps("other") == []
    assert store.expire_results(time.time() + 1) == 2
    expired = store.get_future("r1")
    assert expired is not None
    assert (expired.status, expired.result) == ("expired", None)


def test_restart_marks_pending_futures_lost_and_moves_seq_ids(store: Store) -> None:
    _model(store)
    store.insert_model(
        "s1:train:1",
        session_id="s1",
        model_seq_id=1,
        base_model="b",
        lora_config={},
        user_metadata=None,
    )
    store.update_model("s1:train:0", status="ready")
    store.insert_future("r7", target="s1:train:0", seq_id=7, request_type="fwd", session_id="s1")
    assert store.recover_after_restart() == [("s1:train:0", 7)]
    lost = store.get_future("r7")
    assert lost is not None
    assert lost.status == "lost"
    ready = store.get_model("s1:train:0")
    creating = store.get_model("s1:train:1")
    assert ready is not None
    assert ready.next_seq_id == 8
    assert creating is not None
    assert creating.status == "failed"


def test_checkpoints_expire_and_deleting_the_last_state_forgets_it(store: Store) -> None:
    _model(store)
    store.update_model("s1:train:0", last_state="c1")
    old = store.upsert_checkpoint(
        "s1:train:0", "weights", "c1", directory="/d/c1", size_bytes=10, expires_at=None, step=1
    )
    assert old.tinker_path == "tinker://s1:train:0/weights/c1"
    assert old.checkpoint_type == "training"
    store.upsert_checkpoint(
        "s1:train:0",
        "sampler_weights",
        "c2",
        directory="/d/c2",
        size_bytes=5,
        expires_at=time.time() - 1,
        step=1,
    )
    assert store.get_checkpoint("s1:train:0", "sampler_weights", "c2") is None
    assert [c.name for c in store.expired_checkpoints()] == ["c2"]
    rows, total = store.list_checkpoints("s1:train:0")
    assert total == 1
    assert rows[0].name == "c1"
    store.set_checkpoint_public("s1:train:0", "weights", "c1", True)
    latest = store.latest_checkpoint("s1:train:0", "weights")
    assert latest is not None
    assert latest.public
    store.set_checkpoint_expiry("s1:train:0", "weights", "c1", time.time() - 1)
    assert store.latest_checkpoint("s1:train:0", "weights") is None
    assert store.delete_checkpoint("s1:train:0", "weights", "c1")
    row = store.get_model("s1:train:0")
    assert row is not None
    assert row.last_state is None


def test_telemetry_batches_are_kept_in_order(store: Store) -> None:
    store.insert_telemetry({"events": [1]}, session_id="s1")
    store.insert_telemetry({"events": [2]}, session_id=None)
    assert [t.body for t in store.telemetry()] == [{"events": [1]}, {"events": [2]}]
    assert [t.body for t in store.telemetry(session_id="s1")] == [{"events": [1]}]
