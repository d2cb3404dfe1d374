"""Recovery reports each step to ``tinkex_on_recovery`` observers (issue 19): detected,
started, attempt_failed, completed and failed, during real recoveries on the local server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinkex_clients import (
    RecoveryError,
    RecoveryExecutor,
    RecoveryMonitor,
    RecoveryPolicy,
    ServiceClient,
)
from tinkex_types import Hooks, RecoveryEvent, hookimpl, make_plugin_manager

from .conftest import FAST_POLLS

MODEL = "tinkex/tiny-llama-100k"


class RecoveryRecorder:
    def __init__(self) -> None:
        self.events: list[RecoveryEvent] = []
        self.finished = threading.Event()

    @hookimpl
    def tinkex_on_recovery(self, event: RecoveryEvent) -> None:
        self.events.append(event)
        if event.phase in ("completed", "failed"):
            self.finished.set()


class ExplodingObserver:
    @hookimpl
    def tinkex_on_recovery(self, event: RecoveryEvent) -> None:
        raise RuntimeError("observer bug")


def _service(recorder: object, *extra: object) -> ServiceClient:
    import tinkex_clients._plugin as clients_plugin
    import tinkex_http._plugin as http_plugin
    import tinkex_server._plugin as server_plugin

    plugins = [http_plugin, clients_plugin, server_plugin, recorder, *extra]
    hooks = Hooks(make_plugin_manager(load_entrypoints=False, plugins=plugins))
    return ServiceClient(base_url="local://", hooks=hooks, poll_policy=FAST_POLLS)


@pytest.fixture
def recorder() -> RecoveryRecorder:
    return RecoveryRecorder()


@pytest.fixture
def service(local_env: Path, recorder: RecoveryRecorder) -> Iterator[ServiceClient]:
    client = _service(recorder)
    try:
        yield client
    finally:
        client.close()


def _mark_corrupted(service: ServiceClient, run_id: str) -> None:
    session = service._session
    session.call(
        session.post(
            f"/api/v1/_test/training_runs/{run_id}/corrupted", {"corrupted": True}, retries=False
        )
    )


def test_successful_recovery_reports_detected_started_completed(
    service: ServiceClient, recorder: RecoveryRecorder
) -> None:
    policy = RecoveryPolicy(enabled=True, poll_interval=3600, backoff=0.01)
    monitor = RecoveryMonitor(service, RecoveryExecutor(service, policy))
    tc = service.create_lora_training_client(MODEL, rank=4, seed=31)
    path = tc.save_state("before-corruption").result(60).path
    monitor.monitor_run(tc.model_id, tc)
    assert monitor.poll_once() == []
    assert recorder.events == []
    _mark_corrupted(service, tc.model_id)
    assert monitor.poll_once() == [tc.model_id]
    result = monitor.recoveries[tc.model_id].result(60)
    assert recorder.finished.wait(10)
    monitor.stop()
    assert [e.phase for e in recorder.events] == ["detected", "started", "completed"]
    assert {e.run_id for e in recorder.events} == {tc.model_id}
    started, completed = recorder.events[1], recorder.events[2]
    assert started.attempt == 1
    assert started.checkpoint == path
    assert completed.attempt == 1
    assert completed.checkpoint == path
    assert completed.new_model_id == result.training_client.model_id != tc.model_id
    assert completed.error is None


def test_failed_recovery_reports_each_attempt_and_the_end(
    service: ServiceClient, recorder: RecoveryRecorder
) -> None:
    tc = service.create_lora_training_client(MODEL, rank=4)
    policy = RecoveryPolicy(
        enabled=True,
        max_attempts=2,
        backoff=0.01,
        max_backoff=0.01,
        checkpoint_strategy=f"tinker://{tc.model_id}/weights/never-saved",
    )
    with pytest.raises(RecoveryError) as info:
        RecoveryExecutor(service, policy).recover(tc.model_id).result(60)
    assert recorder.finished.wait(10)
    phases = [e.phase for e in recorder.events]
    assert phases == ["started", "attempt_failed", "started", "attempt_failed", "failed"]
    assert [e.attempt for e in recorder.events] == [1, 1, 2, 2, 2]
    failed_attempts = [e for e in recorder.events if e.phase == "attempt_failed"]
    assert all(e.error and "never-saved" in e.error for e in failed_attempts)
    assert recorder.events[-1].error == str(info.value)
    assert recorder.events[-1].new_model_id is None


def test_a_raising_observer_does_not_break_recovery(local_env: Path) -> None:
    recorder = RecoveryRecorder()
    service = _service(recorder, ExplodingObserver())
    try:
        tc = service.create_lora_training_client(MODEL, rank=4)
        path = tc.save_state("s").result(60).path
        policy = RecoveryPolicy(enabled=True)
        executor = RecoveryExecutor(service, policy)
        result = executor.recover(tc.model_id, last_checkpoint=path).result(60)
        assert result.checkpoint == path
        assert result.attempts == 1
    finally:
        service.close()
