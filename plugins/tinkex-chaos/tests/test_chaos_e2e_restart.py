"""Kill and restart: the supervised run under chaos against ``tinkex serve`` on 127.0.0.1,
with the server SIGKILLed and restarted on the same data dir and port mid-run.

A restart keeps a model's state only up to its newest training checkpoint. So either
nothing was lost (the kill came right after a checkpoint) and the run completes bit for bit
like the clean run, or the run fails with an error naming the last completed step -- the
client's 410 error (a request lost in flight) or the server's refusal (steps lost after the
checkpoint) -- and resuming from the checkpoint it names completes bit for bit. The server's
applied log never shows a seq_id twice.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import tinkex_chaos
from tinkex_types import (
    APIStatusError,
    Hooks,
    ModelInput,
    RequestErrorCategory,
    RequestEvent,
    RequestFailedError,
    SamplingParams,
    hookimpl,
    make_plugin_manager,
)

STATEFUL = ("forward_backward", "optim_step", "load_state")
#: About a second of engine time on the tiny model (32 rows x 200 tokens, no stop).
LONG_SAMPLE = SamplingParams(max_tokens=200, seed=1, temperature=1.0, stop=[])


def _same_as_clean(kit: Any, clean: Any, loop: Any, tokens: list[int], data: Path) -> None:
    outcome = kit.Outcome.collect(loop, tokens, data)  # also: replayed steps agree
    assert sorted(outcome.losses) == list(range(1, kit.STEPS + 1))
    assert outcome.losses == clean.outcome.losses
    assert outcome.tokens == clean.outcome.tokens
    for name, data_bytes in clean.outcome.files.items():
        assert outcome.files[name] == data_bytes, name


@pytest.mark.parametrize("protocol", ["protobuf", "json"])
def test_kill_right_after_a_checkpoint_completes_identically(
    kit: Any,
    clean_reference: Any,
    hooks: Hooks,
    tmp_path: Path,
    served: list[Any],
    protocol: str,
) -> None:
    data = tmp_path / "data"
    served.append(kit.Served(data))
    tinkex_chaos.enable(kit.CHAOS)
    with kit.client(served[0].url, hooks, protocol) as service:
        training = service.create_lora_training_client(kit.MODEL, rank=4, seed=0)
        loop = kit.Loop(training)

        def after(step: int) -> None:
            if step == kit.CHECKPOINT_EVERY:  # step-10 was just saved; nothing in flight
                served[0].kill()
                served.append(kit.Served(data, port=served[0].port))

        loop.run(after=after)
        tokens = loop.finish(service)
        applied = served[-1].applied(training.model_id)

    assert len(served) == 2
    _same_as_clean(kit, clean_reference, loop, tokens, data)
    kit.seq_ids_once(applied)
    assert {outcome for _, _, outcome in applied} == {"ok"}
    assert [seq for seq, _, _ in applied if seq is not None] == [op.seq_id for op in loop.done]
    assert tinkex_chaos.shared_stats().total_faults > 0


class Watch:
    """Observer plugin: ``accepted(path)`` is set once the server answered 200 to a POST of
    ``path`` after :meth:`arm`."""

    def __init__(self) -> None:
        self.events: dict[str, threading.Event] = {}

    def arm(self, path: str) -> threading.Event:
        self.events[path] = threading.Event()
        return self.events[path]

    @hookimpl
    def tinkex_on_request(self, event: RequestEvent) -> None:
        armed = self.events.get(event.path)
        if armed is not None and event.method == "POST" and event.status_code == 200:
            armed.set()


def _lost_in_flight(error: BaseException, seq_id: int, kind: str, last: Any) -> None:
    """The client's error for a request the server lost at the kill (it never ran)."""
    assert isinstance(error, APIStatusError), error
    assert error.status_code == 410
    text = str(error)
    assert f"{kind} (seq_id {seq_id}) of model" in text
    assert "was lost: the server restarted before finishing it" in text
    assert (
        f"the last completed request of this client is seq_id {last.seq_id} ({last.kind})" in text
    )


def _refused(error: BaseException, lost: list[Any], save_path: str, save_seq: int) -> None:
    """The server's refusal of a model whose steps after its checkpoint were lost."""
    assert isinstance(error, RequestFailedError), error
    assert error.category is RequestErrorCategory.USER
    text = str(error)
    assert f"lost {len(lost)} step(s) when the server restarted" in text
    assert f"seq_id {lost[0].seq_id}..{lost[-1].seq_id}" in text
    assert f"{save_path} (saved by seq_id {save_seq})" in text
    assert f"its state is back to what it was after seq_id {save_seq}" in text


@pytest.mark.parametrize("protocol", ["protobuf", "json"])
@pytest.mark.parametrize("when", ["between_requests", "in_flight"])
def test_kill_mid_interval_fails_naming_the_last_step_then_resumes_identically(
    kit: Any,
    clean_reference: Any,
    hooks: Hooks,
    tmp_path: Path,
    served: list[Any],
    when: str,
    protocol: str,
) -> None:
    """``between_requests``: killed right after step 13, while the loop goes on.
    ``in_flight``: killed once the server accepted step 14's forward_backward, which waits
    behind a long sampling batch (so the kill finds it pending)."""
    data = tmp_path / "data"
    served.append(kit.Served(data))
    tinkex_chaos.enable(kit.CHAOS)
    kill_after = kit.CHECKPOINT_EVERY + 3
    watch = Watch()
    hooks = Hooks(
        make_plugin_manager(load_entrypoints=False, plugins=[*hooks.pm.get_plugins(), watch])
    )
    reached = threading.Event()
    fb_accepted = watch.arm("/api/v1/forward_backward") if when == "in_flight" else reached
    busy: list[Any] = []

    def killer() -> None:
        reached.wait(120)
        fb_accepted.wait(120)
        served[0].kill()
        served.append(kit.Served(data, port=served[0].port))

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    with kit.client(served[0].url, hooks, protocol) as service:
        sampler = service.create_sampling_client(base_model=kit.MODEL)
        training = service.create_lora_training_client(kit.MODEL, rank=4, seed=0)
        loop = kit.Loop(training)

        def after(step: int) -> None:
            if step != kill_after:
                return
            if when == "in_flight":
                started = watch.arm("/api/v1/asample")
                fb_accepted.clear()
                busy.append(sampler.sample(ModelInput.from_ints([1, 2, 3]), 32, LONG_SAMPLE))
                assert started.wait(60)
            reached.set()

        try:
            with pytest.raises((APIStatusError, RequestFailedError)) as info:
                loop.run(after=after)
        finally:
            reached.set()
            fb_accepted.set()
            thread.join(120)
            for fut in busy:
                fut.cancel()
        assert len(served) == 2
        last_done = max(loop.done, key=lambda op: op.seq_id)
        save_step, save_path, save_seq = loop.saves[-1]
        assert save_step == kit.CHECKPOINT_EVERY
        lost = [op for op in loop.done if op.kind in STATEFUL and op.seq_id > save_seq]
        assert lost  # steps 11.. were applied after the checkpoint, then lost
        assert training.last_completed_seq_id == last_done.seq_id
        error = info.value
        if when == "in_flight":
            # forward_backward of step 14 was pending: lost, named, and it never ran; its
            # optimizer step was lost too or reached the restarted server and was refused.
            assert last_done == kit.Op(last_done.seq_id, "optim_step", kill_after)
            fb_seq = last_done.seq_id + 1
            _lost_in_flight(error, fb_seq, "forward_backward", last_done)
            sibling = loop.sibling_error
            assert sibling is not None
            if isinstance(sibling, APIStatusError):
                _lost_in_flight(sibling, fb_seq + 1, "optim_step", last_done)
            else:
                _refused(sibling, lost, save_path, save_seq)
        elif isinstance(error, APIStatusError):
            _lost_in_flight(error, last_done.seq_id + 1, "forward_backward", last_done)
        else:
            _refused(error, lost, save_path, save_seq)

        # Nothing ran twice, and nothing the client saw complete is missing from the log.
        applied = served[-1].applied(training.model_id)
        kit.seq_ids_once(applied)
        ok = {seq for seq, _, outcome in applied if outcome == "ok"}
        assert {op.seq_id for op in loop.done} <= ok
        if when == "in_flight":
            assert last_done.seq_id + 1 not in {seq for seq, _, _ in applied}

        # Resume from the checkpoint the failure points at, on the same model.
        loop.resume_from(save_step, save_path)
        tokens = loop.finish(service)
        applied = served[-1].applied(training.model_id)

    _same_as_clean(kit, clean_reference, loop, tokens, data)
    kit.seq_ids_once(applied)
    resumed = [op.seq_id for op in loop.done if op.kind == "load_state"]
    assert len(resumed) == 1
    after_resume = [(seq, outcome) for seq, _, outcome in applied if seq and seq >= resumed[0]]
    assert {outcome for _, outcome in after_resume} == {"ok"}
    assert [seq for seq, _ in after_resume] == [
        op.seq_id for op in loop.done if op.seq_id >= resumed[0]
    ]
    assert tinkex_chaos.shared_stats().total_faults > 0
