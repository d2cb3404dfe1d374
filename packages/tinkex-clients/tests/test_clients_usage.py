"""The three ways to drive the clients against the real local server: plain sync code
(also from worker threads), asyncio code, and sync calls inside a running event loop
(Jupyter), plus recovery of a run the server marks corrupted."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from tinkex_clients import (
    RecoveryError,
    RecoveryExecutor,
    RecoveryMonitor,
    RecoveryPolicy,
    ServiceClient,
)
from tinkex_types import AdamParams, Datum, Hooks, ModelInput, SamplingParams

from .conftest import FAST_POLLS

MODEL = "tinkex/tiny-llama-100k"


def _data(tokenizer: Any) -> list[Datum]:
    ids = tokenizer.encode("the quick brown fox jumps over the lazy dog")
    return [
        Datum(
            model_input=ModelInput.from_ints(ids[:-1]),
            loss_fn_inputs={"target_tokens": ids[1:], "weights": [1.0] * (len(ids) - 1)},
        )
    ]


def test_sync_usage_from_script_and_threads(local_service: ServiceClient) -> None:
    tc = local_service.create_lora_training_client(MODEL, rank=4, seed=21)
    tokenizer = tc.get_tokenizer()
    assert tokenizer.decode(tokenizer.encode("hello world")).strip() == "hello world"
    data = _data(tokenizer)
    first = tc.forward_backward(data, "cross_entropy").result(60)
    tc.optim_step(AdamParams(learning_rate=1e-2)).result(60)
    sampler = tc.save_weights_and_get_sampling_client()
    outputs: list[Any] = []

    def worker(seed: int) -> None:
        prompt = ModelInput.from_ints(tokenizer.encode("the quick"))
        outputs.append(
            sampler.sample(prompt, 1, SamplingParams(max_tokens=4, seed=seed)).result(60)
        )

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outputs) == 4
    assert all(len(o.sequences[0].tokens) == 4 for o in outputs)
    assert first.metrics["loss:sum"] > 0


async def test_async_usage(local_env: Path, local_hooks: Hooks) -> None:
    async with await ServiceClient.create_async(
        base_url="local://", hooks=local_hooks, poll_policy=FAST_POLLS
    ) as svc:
        caps = await svc.get_server_capabilities_async()
        assert MODEL in caps.model_names()
        tc = await svc.create_lora_training_client_async(MODEL, rank=4, seed=22)
        tokenizer = await tc.get_tokenizer_async()
        data = _data(tokenizer)
        fb = await tc.forward_backward_async(data, "cross_entropy")
        opt = await tc.optim_step_async(AdamParams(learning_rate=1e-2))
        first = await fb
        await opt
        second = await (await tc.forward_async(data, "cross_entropy"))
        assert second.metrics["loss:sum"] < first.metrics["loss:sum"]
        sampler = await tc.save_weights_and_get_sampling_client_async()
        results = await asyncio.gather(
            *(
                sampler.sample_async(
                    ModelInput.from_ints([5, 6]), 1, SamplingParams(max_tokens=3, seed=i)
                )
                for i in range(6)
            )
        )
        assert len(results) == 6
        info = await tc.get_info_async()
        assert info.model_data.model_name == MODEL
        rest = svc.create_rest_client()
        run = await rest.get_training_run_async(tc.model_id)
        assert run.training_run_id == tc.model_id


async def test_sync_api_inside_a_running_event_loop(local_service: ServiceClient) -> None:
    # As in a Jupyter cell: the caller's loop is running and blocked by .result();
    # the work runs on the client's own loop thread, so nothing deadlocks.
    asyncio.get_running_loop()
    tc = local_service.create_lora_training_client(MODEL, rank=4, seed=23)
    data = _data(tc.get_tokenizer())
    out = tc.forward_backward(data, "cross_entropy").result(60)
    tc.optim_step(AdamParams(learning_rate=1e-2)).result(60)
    sampler = tc.save_weights_and_get_sampling_client()
    response = sampler.sample(ModelInput.from_ints([1, 2]), 1, SamplingParams(max_tokens=2)).result(
        60
    )
    assert out.metrics["loss:sum"] > 0
    assert len(response.sequences) == 1
    # and awaiting the same kind of future from this loop works too
    again = await tc.forward(data, "cross_entropy")
    assert again.metrics["loss:sum"] < out.metrics["loss:sum"]


def _mark_corrupted(service: ServiceClient, run_id: str) -> None:
    session = service._session
    session.call(
        session.post(
            f"/api/v1/_test/training_runs/{run_id}/corrupted", {"corrupted": True}, retries=False
        )
    )


def test_recovery_of_a_corrupted_run(local_service: ServiceClient) -> None:
    recovered: list[tuple[Any, Any, str]] = []
    fired = threading.Event()

    def on_recovery(old: Any, new: Any, checkpoint: str) -> None:
        recovered.append((old, new, checkpoint))
        fired.set()

    policy = RecoveryPolicy(enabled=True, poll_interval=0.05, backoff=0.01, on_recovery=on_recovery)
    executor = RecoveryExecutor(local_service, policy)
    monitor = RecoveryMonitor(local_service, executor)
    tc = local_service.create_lora_training_client(MODEL, rank=4, seed=24)
    data = _data(tc.get_tokenizer())
    tc.forward_backward(data, "cross_entropy").result(60)
    tc.optim_step(AdamParams(learning_rate=1e-2)).result(60)
    path = tc.save_state("before-corruption").result(60).path
    expected = tc.forward(data, "cross_entropy").result(60).metrics["loss:sum"]
    monitor.monitor_run(tc.model_id, tc)
    _mark_corrupted(local_service, tc.model_id)
    assert fired.wait(30), "on_recovery did not fire"
    monitor.stop()
    old, new, checkpoint = recovered[0]
    assert old is tc
    assert checkpoint == path
    assert new.model_id != tc.model_id
    result = monitor.recoveries[tc.model_id].result(30)
    assert result.training_client is new
    assert result.attempts == 1
    # the new client continues from the checkpoint
    assert new.forward(data, "cross_entropy").result(60).metrics["loss:sum"] == pytest.approx(
        expected, rel=1e-5
    )


def test_failing_recovery_stops_after_max_attempts(local_service: ServiceClient) -> None:
    failures: list[tuple[str, BaseException]] = []
    tc = local_service.create_lora_training_client(MODEL, rank=4)
    policy = RecoveryPolicy(
        enabled=True,
        max_attempts=2,
        backoff=0.01,
        max_backoff=0.01,
        checkpoint_strategy=f"tinker://{tc.model_id}/weights/never-saved",
        on_failure=lambda run_id, exc: failures.append((run_id, exc)),
    )
    monitor = RecoveryMonitor(local_service, RecoveryExecutor(local_service, policy))
    monitor.monitor_run(tc.model_id, tc)
    _mark_corrupted(local_service, tc.model_id)
    assert monitor.poll_once() == [tc.model_id]
    with pytest.raises(RecoveryError) as info:
        monitor.recoveries[tc.model_id].result(60)
    assert info.value.attempts == 2
    assert failures
    assert failures[0][0] == tc.model_id
    assert failures[0][1] is info.value
