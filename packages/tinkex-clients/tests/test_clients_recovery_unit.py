"""Recovery policy validation and the executor/monitor flow against the fake service."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tinkex_clients import (
    RecoveryError,
    RecoveryExecutor,
    RecoveryMonitor,
    RecoveryPolicy,
    ServiceClient,
)
from tinkex_types import TinkexValidationError

from .conftest import FakeTinker


def test_policy_validation() -> None:
    assert RecoveryPolicy().enabled is False
    assert RecoveryPolicy(backoff=1.0, max_backoff=5.0).delay(1) == 1.0
    assert RecoveryPolicy(backoff=1.0, max_backoff=5.0).delay(4) == 5.0
    assert [RecoveryPolicy(backoff=0.5, max_backoff=3.0).delay(n) for n in range(1, 6)] == [
        0.5,
        1.0,
        2.0,
        3.0,
        3.0,
    ]
    assert RecoveryPolicy(backoff=2.0).schedule.jitter == 0.0
    bad: list[dict[str, Any]] = [
        {"max_attempts": 0},
        {"backoff": -1.0},
        {"backoff": float("inf")},
        {"max_backoff": float("inf")},
        {"poll_interval": float("nan")},
        {"backoff": 5.0, "max_backoff": 1.0},
        {"poll_interval": 0},
        {"checkpoint_strategy": "best"},
        {"checkpoint_strategy": "tinker://run/sampler_weights/x"},
        {"on_recovery": 3},
        {"enabled": "yes"},
    ]
    for kwargs in bad:
        with pytest.raises(TinkexValidationError) as info:
            RecoveryPolicy(**kwargs)
        assert info.value.field.startswith("RecoveryPolicy.")


def test_disabled_policy_refuses(service: ServiceClient) -> None:
    executor = RecoveryExecutor(service, RecoveryPolicy())
    with pytest.raises(TinkexValidationError, match="disabled"):
        executor.recover("run")
    monitor = RecoveryMonitor(service, executor)
    with pytest.raises(TinkexValidationError, match="disabled"):
        monitor.monitor_run("run")


def test_corrupted_run_is_restarted_from_last_checkpoint(
    service: ServiceClient, fake: FakeTinker
) -> None:
    events: list[tuple[Any, Any, str]] = []
    done = threading.Event()

    def on_recovery(old: Any, new: Any, checkpoint: str) -> None:
        events.append((old, new, checkpoint))
        done.set()

    policy = RecoveryPolicy(enabled=True, poll_interval=3600, on_recovery=on_recovery)
    executor = RecoveryExecutor(service, policy)
    monitor = RecoveryMonitor(service, executor)
    tc = service.create_lora_training_client("m", rank=4)
    fake.models[tc.model_id].theta = 0.5
    tc.save_state("s1").result(5)
    fake.models[tc.model_id].theta = 0.9
    path = tc.save_state("s2").result(5).path
    monitor.monitor_run(tc.model_id, tc)
    assert monitor.poll_once() == []
    fake.corrupted.add(tc.model_id)
    assert monitor.poll_once() == [tc.model_id]
    assert tc.model_id not in monitor.monitored
    result = monitor.recoveries[tc.model_id].result(10)
    assert done.wait(5)
    assert result.checkpoint == path
    assert result.attempts == 1
    old, new, checkpoint = events[0]
    assert old is tc
    assert new is result.training_client
    assert checkpoint == path
    assert fake.models[new.model_id].theta == 0.9
    assert fake.bodies("/api/v1/load_weights")[-1]["optimizer"] is True
    monitor.stop()


def test_failing_restart_stops_after_max_attempts(service: ServiceClient, fake: FakeTinker) -> None:
    failures: list[tuple[str, BaseException]] = []
    policy = RecoveryPolicy(
        enabled=True,
        max_attempts=3,
        backoff=0.01,
        max_backoff=0.02,
        checkpoint_strategy="tinker://ghost-run/weights/nothing",
        on_failure=lambda run_id, exc: failures.append((run_id, exc)),
    )
    executor = RecoveryExecutor(service, policy)
    fut = executor.recover("some-run")
    with pytest.raises(TinkexValidationError, match="already pending"):
        executor.recover("some-run")
    with pytest.raises(RecoveryError) as info:
        fut.result(10)
    assert info.value.attempts == 3
    assert info.value.run_id == "some-run"
    assert fake.paths().count("/api/v1/weights_info") == 3
    assert failures
    assert failures[0][0] == "some-run"
    assert "some-run" not in executor.pending


def test_no_checkpoint_means_failure(service: ServiceClient, fake: FakeTinker) -> None:
    policy = RecoveryPolicy(enabled=True, max_attempts=1)
    executor = RecoveryExecutor(service, policy)
    tc = service.create_lora_training_client("m")
    with pytest.raises(RecoveryError, match="no training checkpoint"):
        executor.recover(tc.model_id).result(10)


def test_callback_errors_are_swallowed(service: ServiceClient, fake: FakeTinker) -> None:
    def explode(*args: Any) -> None:
        raise RuntimeError("callback bug")

    policy = RecoveryPolicy(enabled=True, on_recovery=explode)
    tc = service.create_lora_training_client("m")
    path = tc.save_state("x").result(5).path
    result = RecoveryExecutor(service, policy).recover(tc.model_id, last_checkpoint=path).result(10)
    assert result.checkpoint == path
