"""Regressions found by driving the official tinker 0.16.1 client against ``tinkex serve``
(tests/test_conformance_tinker.py at the repository root).

1. A training request refused at submission (a 4xx) left its ``seq_id`` open: 0.16.1 had
   already moved its counter on and never re-sends a 400, so the model's next request sat
   in the queue for the whole gap grace (30 s by default) before running.
2. Checkpoint names that 0.16.1 cannot put into a REST URL (``.``, ``..``, ``?``, ``#``,
   ``%``, control characters) were saved, but then the archive, TTL, publish and delete
   calls of the official client could never reach them (404/405).
3. A checkpoint name too long for the file system was accepted and then failed inside the
   engine as a ``server`` error that showed the data directory's path.

The servers here use a gap grace of an hour, so a request that waits for a refused
``seq_id`` never completes within the polls of these tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest

from tinkex_server._checkpoints import MAX_NAME_SEGMENT, checkpoint_name_problem

HOUR = 3600.0
IMAGE = {"chunks": [{"data": "iVBORw0KGgo=", "format": "png"}]}


def image_datum() -> dict[str, Any]:
    return {"model_input": IMAGE, "loss_fn_inputs": {}}


def ordered_steps(api: Any, mid: str) -> list[tuple[int | None, str]]:
    """The model's applied steps after its creation (which has no seq_id)."""
    return [step for step in api.applied(mid) if step[0] is not None]


@pytest.fixture
async def model_api(make_server: Any, api_for: Any) -> AsyncIterator[tuple[Any, str]]:
    """An API on a server with an hour of gap grace, and a fresh model on it."""
    server = make_server(seq_gap_grace_s=HOUR, poll_hold_s=0.5)
    async with api_for(server) as api:
        sid = await api.session()
        yield api, await api.model(sid)


async def test_refused_submit_frees_its_seq_id(model_api: tuple[Any, str]) -> None:
    api, mid = model_api
    refused = await api.post("forward", api.fwd_body(mid, 1, [image_datum()]))
    assert refused.status_code == 400
    assert "image chunks" in refused.json()["detail"]
    assert api.server.runtime.scheduler.next_expected(mid) == 2

    out = await api.result(await api.ok("forward_backward", api.fb_body(mid, 2)))
    assert out["metrics"]["loss:sum"] > 0
    bad_name = await api.post(
        "save_weights", {"model_id": mid, "path": "a?b", "seq_id": 3, "ttl_seconds": None}
    )
    assert bad_name.status_code == 400
    out = await api.result(
        await api.ok("optim_step", {"adam_params": {}, "model_id": mid, "seq_id": 4})
    )
    assert out["metrics"]["step:max"] == 1.0
    assert ordered_steps(api, mid) == [(2, "ForwardBackward"), (4, "OptimStep")]


async def test_refusal_ahead_of_the_queue_is_skipped_when_reached(
    model_api: tuple[Any, str],
) -> None:
    """Newer clients send a call's chunks concurrently: a refused number may arrive before
    the numbers below it."""
    api, mid = model_api
    third = await api.ok("forward", api.fwd_body(mid, 3))
    refused = await api.post("forward", api.fwd_body(mid, 2, [image_datum()]))
    assert refused.status_code == 400
    assert api.server.runtime.scheduler.next_expected(mid) == 1
    first = await api.ok("forward", api.fwd_body(mid, 1))
    assert api.server.runtime.scheduler.next_expected(mid) == 4  # 1 and 3 ready, 2 skipped
    await api.result(first)
    await api.result(third)
    assert ordered_steps(api, mid) == [(1, "Forward"), (3, "Forward")]
    assert api.server.runtime.scheduler.next_expected(mid) == 4


async def test_refused_duplicate_keeps_the_accepted_request(model_api: tuple[Any, str]) -> None:
    api, mid = model_api
    # seq 2 is accepted and waits for seq 1; a refused copy of seq 2 must not void it.
    second = await api.ok("forward_backward", api.fb_body(mid, 2))
    copy = await api.post("forward_backward", api.fb_body(mid, 2, [image_datum()]))
    assert copy.status_code == 400
    # A refused copy of a number already passed changes nothing either.
    first = await api.ok("forward", api.fwd_body(mid, 1))
    await api.result(first)
    late_copy = await api.post("forward", api.fwd_body(mid, 1, [image_datum()]))
    assert late_copy.status_code == 400
    await api.result(second)
    assert ordered_steps(api, mid) == [(1, "Forward"), (2, "ForwardBackward")]
    assert api.server.runtime.scheduler.next_expected(mid) == 3


@pytest.mark.parametrize(
    "name",
    [".", "..", "a?b", "a#b", "a%20b", "50%", "a\nb", "tab\tname", "del\x7f", "x" * 201],
)
async def test_unreachable_checkpoint_names_are_refused(
    model_api: tuple[Any, str], name: str
) -> None:
    api, mid = model_api
    for endpoint, seq in (("save_weights", 1), ("save_weights_for_sampler", 2)):
        r = await api.post(
            endpoint, {"model_id": mid, "path": name, "seq_id": seq, "ttl_seconds": None}
        )
        assert r.status_code == 400, (endpoint, r.text)
        detail = r.json()["detail"]
        assert detail.startswith("path: ")
        assert "step-0010" in detail
        assert str(api.server.runtime.config.data_dir) not in detail
    # The model carries on at once and no checkpoint was recorded.
    saved = await api.result(
        await api.ok(
            "save_weights", {"model_id": mid, "path": "fine", "seq_id": 3, "ttl_seconds": None}
        )
    )
    assert saved["path"] == f"tinker://{mid}/weights/fine"
    listed = (await api.c.get(f"/api/v1/training_runs/{mid}/checkpoints")).json()
    assert [c["checkpoint_id"] for c in listed["checkpoints"]] == ["weights/fine"]


async def test_names_that_survive_urls_and_the_file_system_still_work(
    model_api: tuple[Any, str],
) -> None:
    names = ["step 1", "ünï", "a+b", "x:y", "a;b", "back\\slash", "v1.2", "x" * 200, "ü" * 33]
    api, mid = model_api
    for seq, name in enumerate(names, start=1):
        assert checkpoint_name_problem(name) is None
        saved = await api.result(
            await api.ok(
                "save_weights_for_sampler",
                {"model_id": mid, "path": name, "seq_id": seq, "ttl_seconds": None},
            )
        )
        assert saved["path"] == f"tinker://{mid}/sampler_weights/{name}"
        # The URLs the official client builds (the name inserted raw; httpx escapes
        # what must be escaped).
        base = f"/api/v1/training_runs/{mid}/checkpoints/sampler_weights/{name}"
        archive = await api.c.get(f"{base}/archive")
        assert archive.status_code == 302, (name, archive.text)
        assert (await api.c.get(archive.headers["location"])).status_code == 200
        ttl = await api.c.put(f"{base}/ttl", json={"ttl_seconds": 60})
        assert ttl.status_code == 200, (name, ttl.text)
        assert (await api.c.post(f"{base}/publish")).status_code == 200
        assert (await api.c.delete(base)).status_code == 200
    listed = (await api.c.get(f"/api/v1/training_runs/{mid}/checkpoints")).json()
    assert listed["checkpoints"] == []


def test_name_limit_counts_the_encoded_form() -> None:
    assert checkpoint_name_problem("x" * MAX_NAME_SEGMENT) is None
    too_long = checkpoint_name_problem("x" * (MAX_NAME_SEGMENT + 1))
    assert too_long is not None
    assert "too long" in too_long
    # "ü" is two UTF-8 bytes, each encoded as %XX: 6 characters.
    assert len(quote("ü" * 33, safe="-_")) == 198
    assert checkpoint_name_problem("ü" * 33) is None
    assert checkpoint_name_problem("ü" * 34) is not None
    dots = checkpoint_name_problem("..")
    assert dots is not None
    assert "relative path segment" in dots
