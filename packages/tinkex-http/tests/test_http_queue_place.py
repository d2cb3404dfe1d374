"""Queue position and wait estimate of ``try_again`` answers (docs/queue.md) on the client:
the observer events carry them (a new event whenever state, reason, position or estimate
changes), malformed values are ignored, and the default logger writes "3rd in queue, ~12 s"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
import structlog

from tinkex_http import APIFutureResolver, HTTPClient, QueueStateLogger
from tinkex_types import QueueStateEvent

MakeClient = Callable[..., HTTPClient]


def polls(answers: list[tuple[int, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    it = iter(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        assert orjson.loads(request.content)["request_id"] == "r"
        status, body = next(it)
        return httpx.Response(status, json=body)

    return handler


def again(**place: Any) -> tuple[int, dict[str, Any]]:
    return 408, {"type": "try_again", "request_id": "r", "queue_state": "active", **place}


async def test_events_carry_position_and_estimate(
    make_client: MakeClient, recorder: Any, clock: Any
) -> None:
    answers = [
        again(queue_position=3),
        again(queue_position=3),  # unchanged: no event
        again(queue_position=2, estimated_wait_s=24.5),
        (
            200,
            {
                "type": "try_again",
                "request_id": "r",
                "queue_state": "active",
                "queue_position": 1,
                "estimated_wait_s": 11.6,
            },
        ),  # a 200 try_again (the generation-1 form) counts the same
        again(),  # running: no place any more
        (200, {"loss_fn_outputs": []}),
    ]
    async with make_client(polls(answers)) as http:
        resolver = APIFutureResolver(http, "r", request_type="ForwardBackward", model_id="m")
        assert await resolver == {"loss_fn_outputs": []}
    events: list[QueueStateEvent] = recorder.queue
    assert [(e.queue_position, e.estimated_wait_s) for e in events] == [
        (3, None),
        (2, 24.5),
        (1, 11.6),
        (None, None),
    ]
    assert [e.queue_place for e in events] == [
        "4th in queue",
        "3rd in queue, ~24 s",
        "2nd in queue, ~12 s",
        None,
    ]
    assert all(e.request_type == "ForwardBackward" and e.model_id == "m" for e in events)
    assert (resolver.queue_position, resolver.estimated_wait_s) == (None, None)
    assert clock.sleeps == []  # active try_again: re-polled at once


@pytest.mark.parametrize(
    ("place", "expected"),
    [
        ({"queue_position": -1, "estimated_wait_s": 3.0}, (None, None)),
        ({"queue_position": True}, (None, None)),
        ({"queue_position": "2"}, (None, None)),
        ({"queue_position": 2, "estimated_wait_s": -1}, (2, None)),
        ({"queue_position": 2, "estimated_wait_s": "soon"}, (2, None)),
        ({"queue_position": 2, "estimated_wait_s": 7}, (2, 7.0)),
        ({"estimated_wait_s": 7.0}, (None, None)),  # an estimate without a place is ignored
    ],
)
async def test_malformed_places_are_ignored(
    make_client: MakeClient, recorder: Any, place: dict[str, Any], expected: Any
) -> None:
    async with make_client(polls([again(**place), (200, {"ok": 1})])) as http:
        assert await APIFutureResolver(http, "r") == {"ok": 1}
    assert [(e.queue_position, e.estimated_wait_s) for e in recorder.queue] == [expected]


def test_ordinals_and_rounding() -> None:
    def place(position: int | None, wait: float | None = None) -> str | None:
        return QueueStateEvent("r", "active", None, "", queue_position=position,
                               estimated_wait_s=wait).queue_place  # fmt: skip

    assert place(None, 5.0) is None
    assert [place(n) for n in (0, 1, 2, 3, 10, 11, 12, 20, 21, 101, 110, 111)] == [
        "1st in queue",
        "2nd in queue",
        "3rd in queue",
        "4th in queue",
        "11th in queue",
        "12th in queue",
        "13th in queue",
        "21st in queue",
        "22nd in queue",
        "102nd in queue",
        "111th in queue",
        "112th in queue",
    ]
    assert place(2, 12.4) == "3rd in queue, ~12 s"
    assert place(0, 0.0) == "1st in queue, ~0 s"


def test_logger_says_the_place() -> None:
    clock = [0.0]
    log = QueueStateLogger(debounce_s=60.0, clock=lambda: clock[0])

    def ev(state: str, position: int | None, wait: float | None = None) -> QueueStateEvent:
        return QueueStateEvent(
            request_id="r1",
            queue_state=state,
            previous_state=None,
            reason="GPUs busy",
            model_id="m1",
            request_type="OptimStep",
            queue_position=position,
            estimated_wait_s=wait,
        )

    with structlog.testing.capture_logs() as logs:
        assert not log(ev("active", None))  # active without a place: never logged
        assert log(ev("active", 2, 12.4))
        assert not log(ev("active", 1, 6.0))  # debounced (same subject and state)
        assert log(ev("paused_capacity", 4))
        clock[0] = 61.0
        assert log(ev("active", 0, 0.2))
    assert [(e["log_level"], e["event"]) for e in logs] == [
        ("info", "Request r1 (OptimStep) for m1 is 3rd in queue, ~12 s"),
        (
            "warning",
            "Requests for m1 are paused (paused_capacity): 5th in queue. Reason: GPUs busy",
        ),
        ("info", "Request r1 (OptimStep) for m1 is 1st in queue, ~0 s"),
    ]
    assert logs[0]["queue_position"] == 2
    assert logs[0]["estimated_wait_s"] == 12.4
