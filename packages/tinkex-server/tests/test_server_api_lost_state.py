"""A restart keeps only training checkpoints: steps applied after the newest one are gone.

Regression tests: the server used to rebuild such a model from the older checkpoint and
carry on silently, so a client whose steps had all succeeded trained on from a state that
no longer held them. Now every request on the model fails, naming the lost seq_ids and the
seq_id its state is back to, until a load_weights puts a checkpoint back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ADAM = {"learning_rate": 0.01}


async def _failure(api: Any, path: str, body: dict[str, Any]) -> str:
    status, result = await api.poll((await api.ok(path, body))["request_id"])
    assert status == 200, result
    assert result.get("category") == "user", result
    return str(result["error"])


async def _corrupted(api: Any, mid: str) -> bool:
    run = (await api.c.get(f"/api/v1/training_runs/{mid}")).json()
    return bool(run["corrupted"])


async def test_lost_steps_are_refused_until_a_checkpoint_is_loaded(
    make_server: Any, api_for: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = make_server(data_dir=data)
    async with api_for(first) as api:
        sid = await api.session()
        mid = await api.model(sid)
        await api.result(await api.ok("forward_backward", api.fb_body(mid, 1)))
        await api.result(
            await api.ok("optim_step", {"adam_params": ADAM, "model_id": mid, "seq_id": 2})
        )
        saved = await api.result(
            await api.ok(
                "save_weights", {"model_id": mid, "path": "s1", "seq_id": 3, "ttl_seconds": None}
            )
        )
        at_save = await api.result(await api.ok("forward", api.fwd_body(mid, 4)))
        # Both succeed, and both live only in memory.
        await api.result(await api.ok("forward_backward", api.fb_body(mid, 5)))
        await api.result(
            await api.ok("optim_step", {"adam_params": ADAM, "model_id": mid, "seq_id": 6})
        )
    first.close()

    second = make_server(data_dir=data)
    async with api_for(second) as api:
        error = await _failure(api, "forward", api.fwd_body(mid, 7))
        assert "lost 2 step(s) when the server restarted" in error
        assert "seq_id 5..6 (ForwardBackward, OptimStep)" in error
        assert f"{saved['path']} (saved by seq_id 3)" in error
        assert "its state is back to what it was after seq_id 3" in error
        assert "load_state" in error
        assert await _corrupted(api, mid)
        # Still refused: nothing trains on from the older state.
        assert "lost 2 step(s)" in await _failure(api, "forward_backward", api.fb_body(mid, 8))
        assert "lost 2 step(s)" in await _failure(
            api, "save_weights", {"model_id": mid, "path": "s2", "seq_id": 9, "ttl_seconds": None}
        )
        # A bad load keeps it refused; a good one brings the checkpoint back.
        bad = await _failure(
            api,
            "load_weights",
            {
                "model_id": mid,
                "path": f"tinker://{mid}/weights/nope",
                "optimizer": True,
                "seq_id": 10,
            },
        )
        assert "does not exist" in bad
        assert "lost 2 step(s)" in await _failure(api, "forward", api.fwd_body(mid, 11))
        await api.result(
            await api.ok(
                "load_weights",
                {"model_id": mid, "path": saved["path"], "optimizer": True, "seq_id": 12},
            )
        )
        assert not await _corrupted(api, mid)
        again = await api.result(await api.ok("forward", api.fwd_body(mid, 13)))
        assert again["loss_fn_outputs"] == at_save["loss_fn_outputs"]
        await api.result(await api.ok("forward_backward", api.fb_body(mid, 14)))
        opt = await api.result(
            await api.ok("optim_step", {"adam_params": ADAM, "model_id": mid, "seq_id": 15})
        )
        assert opt["metrics"]["step:max"] == 2.0
        seqs = [seq for seq, _ in api.applied(mid)]
        assert seqs == [None, *range(1, 16)]


async def test_without_a_checkpoint_every_step_is_lost(
    make_server: Any, api_for: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = make_server(data_dir=data)
    async with api_for(first) as api:
        mid = await api.model(await api.session())
        await api.result(await api.ok("forward", api.fwd_body(mid, 1)))
        await api.result(await api.ok("forward_backward", api.fb_body(mid, 2)))
    first.close()
    second = make_server(data_dir=data)
    async with api_for(second) as api:
        error = await _failure(api, "forward", api.fwd_body(mid, 3))
        assert "lost 1 step(s)" in error
        assert "seq_id 2..2 (ForwardBackward)" in error
        assert "its state is back to its seeded initialisation" in error


async def test_nothing_lost_means_training_goes_on(
    make_server: Any, api_for: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = make_server(data_dir=data)
    async with api_for(first) as api:
        mid = await api.model(await api.session())
        await api.result(await api.ok("forward_backward", api.fb_body(mid, 1)))
        await api.result(
            await api.ok("optim_step", {"adam_params": ADAM, "model_id": mid, "seq_id": 2})
        )
        await api.result(
            await api.ok(
                "save_weights", {"model_id": mid, "path": "s1", "seq_id": 3, "ttl_seconds": None}
            )
        )
        # Read-only work after the checkpoint loses nothing.
        before = await api.result(await api.ok("forward", api.fwd_body(mid, 4)))
    first.close()
    second = make_server(data_dir=data)
    async with api_for(second) as api:
        after = await api.result(await api.ok("forward", api.fwd_body(mid, 5)))
        assert after["loss_fn_outputs"] == before["loss_fn_outputs"]
        await api.result(await api.ok("forward_backward", api.fb_body(mid, 6)))
        assert not await _corrupted(api, mid)
