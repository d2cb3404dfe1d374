"""How ordered jobs reach the engine thread: a job ready while the engine is idle starts from
its submission, and training steps queued behind a running one follow it on the engine
thread without a hand-off through the event loop (while the loop stores each result), except
when sampling requests wait (they go first) or the finished job does not chain (a save)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from tinkex_server._engine import Engine
from tinkex_server._worker import EngineWorker
from tinkex_types import ForwardBackwardRequest

MODEL = "tinkex/tiny-llama-100k"


class RecordingEngine(Engine):
    """Records every training/sampling call with its thread; ``forward_backward`` can be
    held at a gate so that work queues behind it."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.calls: list[tuple[str, int]] = []
        #: ``(store, request_id)``: optim_step records that future's status when it runs.
        self.watch: tuple[Any, str] | None = None
        self.seen_status: list[str] = []

    def forward_backward(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("forward_backward", threading.get_ident()))
        self.entered.set()
        self.gate.wait(30)
        return super().forward_backward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("forward", threading.get_ident()))
        return super().forward(*args, **kwargs)

    def optim_step(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("optim_step", threading.get_ident()))
        if self.watch is not None:
            store, request_id = self.watch
            self.seen_status.append(store.get_future(request_id).status)
        return super().optim_step(*args, **kwargs)

    def save_state(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("save_state", threading.get_ident()))
        return super().save_state(*args, **kwargs)

    def sample_batch(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("sample_batch", threading.get_ident()))
        return super().sample_batch(*args, **kwargs)


@pytest.fixture
def submissions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per function the scheduler starts on the engine thread."""
    calls: list[int] = []
    original = EngineWorker.submit

    def counted(self: EngineWorker, fn: Any) -> Any:
        calls.append(1)
        return original(self, fn)

    monkeypatch.setattr(EngineWorker, "submit", counted)
    return calls


def _optim_body(model_id: str, seq: int) -> dict[str, Any]:
    params = {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-12}
    return {"adam_params": params, "model_id": model_id, "seq_id": seq}


async def _hold_fb(api: Any, engine: RecordingEngine, mid: str, seq: int) -> dict[str, Any]:
    engine.entered.clear()
    engine.gate.clear()
    fut = await api.ok("forward_backward", api.fb_body(mid, seq))
    assert await asyncio.to_thread(engine.entered.wait, 30)
    return fut


async def test_training_steps_queued_behind_one_follow_it_on_the_engine_thread(
    make_server: Any, api_for: Any, submissions: list[int]
) -> None:
    engine = RecordingEngine()
    server = make_server(engine=engine)
    async with api_for(server) as api:
        mid = await api.model(await api.session())
        held = await _hold_fb(api, engine, mid, 1)
        queued = [
            await api.ok("optim_step", _optim_body(mid, 2)),
            await api.ok("forward", api.fwd_body(mid, 3)),
            await api.ok("forward_backward", api.fb_body(mid, 4)),
        ]
        started = len(submissions)
        engine.watch = (api.store, held["request_id"])
        engine.gate.set()
        bodies = [await api.result(f) for f in (held, *queued)]
        # The optimizer step is brief: the step before it is stored with it, after it ran.
        assert engine.seen_status == ["pending"]
        # The three queued steps ran in the same engine-thread call as the held one.
        assert len(submissions) == started
        assert [name for name, _ in engine.calls[-4:]] == [
            "forward_backward",
            "optim_step",
            "forward",
            "forward_backward",
        ]
        assert len({thread for _, thread in engine.calls}) == 1
        assert bodies[1]["metrics"]["step:max"] == 1.0
        assert "loss_fn_outputs" in bodies[2]
        # Every result was stored, in order, with its engine time.
        assert api.applied(mid)[-4:] == [
            (1, "ForwardBackward"),
            (2, "OptimStep"),
            (3, "Forward"),
            (4, "ForwardBackward"),
        ]
        assert len(server.runtime.scheduler.step_times(mid)) == 4


async def test_chained_results_equal_one_at_a_time(
    make_server: Any, api_for: Any, tmp_path: Path
) -> None:
    async def run(engine: RecordingEngine, hold: bool) -> list[dict[str, Any]]:
        server = make_server(engine=engine, data_dir=tmp_path / f"hold-{hold}")
        async with api_for(server) as api:
            mid = await api.model(await api.session())
            out = []
            if hold:
                futures = [await _hold_fb(api, engine, mid, 1)]
                futures.append(await api.ok("optim_step", _optim_body(mid, 2)))
                futures.append(await api.ok("forward", api.fwd_body(mid, 3)))
                engine.gate.set()
                out = [await api.result(f) for f in futures]
            else:
                out.append(await api.result(await api.ok("forward_backward", api.fb_body(mid, 1))))
                out.append(await api.result(await api.ok("optim_step", _optim_body(mid, 2))))
                out.append(await api.result(await api.ok("forward", api.fwd_body(mid, 3))))
            return out

    chained = await run(RecordingEngine(), hold=True)
    alone = await run(RecordingEngine(), hold=False)
    assert chained == alone


async def test_waiting_samples_go_before_the_next_training_step(
    make_server: Any, api_for: Any
) -> None:
    engine = RecordingEngine()
    async with api_for(make_server(engine=engine)) as api:
        sid = await api.session()
        mid = await api.model(sid)
        create = {
            "session_id": sid,
            "sampling_session_seq_id": 0,
            "base_model": MODEL,
            "model_path": None,
        }
        sampler = (await api.ok("create_sampling_session", create))["sampling_session_id"]
        held = await _hold_fb(api, engine, mid, 1)
        optim = await api.ok("optim_step", _optim_body(mid, 2))
        sample = await api.ok(
            "asample",
            {
                "num_samples": 1,
                "prompt": {"chunks": [{"tokens": [1, 5, 6]}]},
                "sampling_params": {"max_tokens": 2, "temperature": 0.0},
                "sampling_session_id": sampler,
                "seq_id": 1,
                "prompt_logprobs": False,
                "topk_prompt_logprobs": 0,
            },
        )
        engine.gate.set()
        for fut in (held, optim, sample):
            await api.result(fut)
        assert [name for name, _ in engine.calls[-3:]] == [
            "forward_backward",
            "sample_batch",
            "optim_step",
        ]


async def test_a_save_ends_the_chain(
    make_server: Any, api_for: Any, submissions: list[int]
) -> None:
    engine = RecordingEngine()
    server = make_server(engine=engine)
    async with api_for(server) as api:
        mid = await api.model(await api.session())
        held = await _hold_fb(api, engine, mid, 1)
        save = await api.ok("save_weights", {"model_id": mid, "path": "ckpt", "seq_id": 2})
        after = await api.ok("optim_step", _optim_body(mid, 3))
        started = len(submissions)
        engine.gate.set()
        for fut in (held, save, after):
            await api.result(fut)
        # forward_backward chains into the save; the save's result is stored before the
        # optimizer step starts (one more engine-thread call).
        assert len(submissions) == started + 1
        assert [name for name, _ in engine.calls[-3:]] == [
            "forward_backward",
            "save_state",
            "optim_step",
        ]


async def test_a_job_ready_on_an_idle_engine_starts_within_its_submission(
    make_server: Any, api_for: Any
) -> None:
    server = make_server()
    async with api_for(server) as api:
        mid = await api.model(await api.session())

        def submit_and_look(runtime: Any) -> tuple[str, Any]:
            request = ForwardBackwardRequest.model_validate(api.fb_body(mid, 1))
            future = runtime.training.forward(request, None, None)
            # Still inside the submission's loop callback: the job has left the queue.
            return future.request_id, runtime.scheduler.queue_place(future.request_id)

        request_id, place = await asyncio.to_thread(server.call, submit_and_look)
        assert place is None
        body = await api.result({"request_id": request_id})
        assert "loss_fn_outputs" in body
