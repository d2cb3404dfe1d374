"""``python -m tinkex_server serve`` over real HTTP on 127.0.0.1: an API key, then SIGKILL and
a restart on the same data directory. Completed futures, checkpoints and archives survive;
pending futures answer 410; a model that lost steps is refused until its last training-state
checkpoint is loaded back."""

from __future__ import annotations

import io
import os
import signal
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from tinkex_server.testing import ServeProcess

MODEL = "tinkex/tiny-llama-100k"
KEY = "tml-restart-secret-0123"


class Served(ServeProcess):
    """One ``serve`` subprocess (test routes on, one torch thread, info logs)."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        super().__init__(
            data_dir,
            *("--enable-test-routes", "--torch-threads", "1", "--log-level", "info", *extra),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            wait_healthy=False,
        )

    def client(self, key: str | None = KEY) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        self.wait_healthy()
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[list[Served]]:
    procs: list[Served] = []
    yield procs
    for p in procs:
        p.kill()


def _poll(c: httpx.Client, request_id: str) -> tuple[int, Any]:
    for _ in range(100):
        r = c.post(
            "/api/v1/retrieve_future", json={"request_id": request_id, "allow_metadata_only": True}
        )
        if r.status_code != 408:
            return r.status_code, r.json()
    raise AssertionError("never completed")


def _run(c: httpx.Client, path: str, body: dict[str, Any]) -> tuple[str, Any]:
    r = c.post(f"/api/v1/{path}", json=body)
    assert r.status_code == 200, r.text
    rid = r.json()["request_id"]
    status, result = _poll(c, rid)
    assert status == 200, result
    assert "error" not in result, result
    return rid, result


def _datum() -> dict[str, Any]:
    return {
        "model_input": {"chunks": [{"tokens": [5, 6, 7, 8]}]},
        "loss_fn_inputs": {
            "target_tokens": {"data": [6, 7, 8, 9], "dtype": "int64", "shape": [4]},
            "weights": {"data": [1.0, 1.0, 1.0, 1.0], "dtype": "float32", "shape": [4]},
        },
    }


def _fwd(mid: str, seq: int) -> dict[str, Any]:
    return {
        "forward_input": {"data": [_datum()], "loss_fn": "cross_entropy", "loss_fn_config": None},
        "model_id": mid,
        "seq_id": seq,
    }


def test_sigkill_and_restart_keep_futures_and_checkpoints(
    tmp_path: Path, served: list[Served]
) -> None:
    data = tmp_path / "data"
    first = Served(data, "--api-key", KEY)
    served.append(first)
    with closing(first.client()) as c, closing(first.client(key=None)) as anon:
        assert (
            anon.post("/api/v1/create_session", json={"sdk_version": "0.16.1"}).status_code == 401
        )
        assert anon.get("/api/v1/healthz").status_code == 200
        sid = c.post(
            "/api/v1/create_session",
            json={"tags": [], "user_metadata": {}, "sdk_version": "0.16.1", "project_id": None},
        ).json()["session_id"]
        create_rid, created = _run(
            c,
            "create_model",
            {
                "session_id": sid,
                "model_seq_id": 0,
                "base_model": MODEL,
                "user_metadata": {"who": "test"},
                "lora_config": {
                    "rank": 4,
                    "seed": None,
                    "train_unembed": True,
                    "train_mlp": True,
                    "train_attn": True,
                },
            },
        )
        mid = created["model_id"]
        fb = {
            "forward_backward_input": {
                "data": [_datum()],
                "loss_fn": "cross_entropy",
                "loss_fn_config": None,
            },
            "model_id": mid,
            "seq_id": 1,
        }
        fb_rid, fb_result = _run(c, "forward_backward", fb)
        _run(
            c, "optim_step", {"adam_params": {"learning_rate": 0.01}, "model_id": mid, "seq_id": 2}
        )
        save_rid, saved = _run(
            c, "save_weights", {"model_id": mid, "path": "s1", "seq_id": 3, "ttl_seconds": None}
        )
        _run(
            c,
            "save_weights_for_sampler",
            {"model_id": mid, "path": "samp", "seq_id": 4, "ttl_seconds": None},
        )
        fwd_rid, fwd_after_save = _run(c, "forward", _fwd(mid, 5))
        # A step after the save: lost at the kill (weights come back from the checkpoint).
        _run(c, "forward_backward", {**fb, "seq_id": 6})
        _run(
            c, "optim_step", {"adam_params": {"learning_rate": 0.01}, "model_id": mid, "seq_id": 7}
        )
        # seq 8 never comes, so seq 9 stays pending until the kill.
        pending = c.post("/api/v1/forward", json=_fwd(mid, 9)).json()["request_id"]
    first.kill()
    assert first.proc.returncode == -signal.SIGKILL

    second = Served(data)  # no key now: any key is accepted
    served.append(second)
    with closing(second.client(key="tml-other")) as c:
        # Completed futures are still there, with their original bodies.
        assert _poll(c, create_rid) == (200, created)
        assert _poll(c, fb_rid) == (200, fb_result)
        assert _poll(c, save_rid) == (200, saved)
        assert _poll(c, fwd_rid) == (200, fwd_after_save)
        status, body = _poll(c, pending)
        assert status == 410
        assert "restart" in body["detail"]
        # Checkpoints, runs and sessions survive.
        ckpts = c.get(f"/api/v1/training_runs/{mid}/checkpoints").json()["checkpoints"]
        assert {x["checkpoint_id"] for x in ckpts} == {"weights/s1", "sampler_weights/samp"}
        run = c.get(f"/api/v1/training_runs/{mid}").json()
        assert run["last_checkpoint"]["tinker_path"] == saved["path"]
        assert run["user_metadata"] == {"who": "test"}
        assert c.get(f"/api/v1/sessions/{sid}").json()["training_run_ids"] == [mid]
        # The archive: a 302 to a self-authorising URL, fetched with no Tinker headers.
        r = c.get(f"/api/v1/training_runs/{mid}/checkpoints/sampler_weights/samp/archive")
        assert r.status_code == 302
        archive = httpx.get(r.headers["location"], timeout=60)
        assert archive.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
            assert set(tar.getnames()) == {
                "adapter_config.json",
                "adapter_model.safetensors",
                "checkpoint_complete",
                "tinkex_manifest.json",
            }
        # Steps 6 and 7 were lost with the process: the model is refused (never trained on
        # silently from weights/s1) until a checkpoint is loaded back.
        r = c.post("/api/v1/forward", json=_fwd(mid, 10))
        status, refused = _poll(c, r.json()["request_id"])
        assert status == 200
        assert refused["category"] == "user"
        assert "seq_id 6..7" in refused["error"]
        assert c.get(f"/api/v1/training_runs/{mid}").json()["corrupted"] is True
        _run(
            c,
            "load_weights",
            {"model_id": mid, "path": saved["path"], "optimizer": True, "seq_id": 11},
        )
        # Back to weights/s1 (optimizer included): same logprobs as right after the save,
        # and it keeps training.
        _, fwd_again = _run(c, "forward", _fwd(mid, 12))
        assert fwd_again["loss_fn_outputs"] == fwd_after_save["loss_fn_outputs"]
        _run(c, "forward_backward", {**fb, "seq_id": 13})
        _, opt = _run(
            c, "optim_step", {"adam_params": {"learning_rate": 0.01}, "model_id": mid, "seq_id": 14}
        )
        assert opt["metrics"]["step:max"] == 2.0  # step 1 restored + this one
        steps = c.get("/api/v1/_test/applied", params={"target": mid}).json()["steps"]
        seqs = [s["seq_id"] for s in steps]
        assert seqs == [None, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14]
    second.stop()
    output = "".join(first.lines + second.lines)
    assert KEY not in output


def test_shutdown_answers_held_polls_instead_of_cutting_them_off(
    tmp_path: Path, served: list[Served]
) -> None:
    """SIGTERM while a ``retrieve_future`` is held (``--poll-hold 60``, far beyond uvicorn's
    5 s grace): the poll is answered "try again" (408) and the server exits cleanly, with
    no task cancelled mid-hold."""
    server = Served(tmp_path / "data", "--poll-hold", "60", "--seq-gap-grace", "120")
    served.append(server)
    with closing(server.client()) as c:
        sid = c.post(
            "/api/v1/create_session",
            json={"tags": [], "user_metadata": {}, "sdk_version": "0.16.1", "project_id": None},
        ).json()["session_id"]
        body = {"session_id": sid, "model_seq_id": 0, "base_model": MODEL}
        _, created = _run(c, "create_model", {**body, "lora_config": {"rank": 4}})
        # seq 1 never comes, so seq 2 stays pending.
        pending = c.post("/api/v1/forward", json=_fwd(created["model_id"], 2)).json()
        answers: list[httpx.Response | BaseException] = []

        def hold() -> None:
            try:
                answers.append(
                    c.post(
                        "/api/v1/retrieve_future",
                        json={"request_id": pending["request_id"]},
                        timeout=120,
                    )
                )
            except httpx.HTTPError as exc:
                answers.append(exc)

        poller = threading.Thread(target=hold)
        poller.start()
        deadline = time.monotonic() + 60
        while c.get("/api/v1/_test/held_polls").json()["held"] == 0:
            assert time.monotonic() < deadline, answers
            assert poller.is_alive(), answers
            time.sleep(0.05)
        code = server.stop(timeout=60)
        poller.join(60)
    assert code in (0, -signal.SIGTERM), server.output()  # uvicorn re-raises the signal
    assert "Application shutdown complete" in server.output()
    (answer,) = answers
    assert isinstance(answer, httpx.Response), answer
    assert answer.status_code == 408, answer.text
    assert answer.json()["type"] == "try_again"
    assert "CancelledError" not in server.output()
    assert "graceful shutdown exceeded" not in server.output()
