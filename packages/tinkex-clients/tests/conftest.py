"""Fixtures of the tinkex-clients tests.

* ``fake``: :class:`FakeTinker`, an in-memory stand-in for the service behind an
  ``httpx.MockTransport`` -- for client mechanics only (ordering, chunking, futures,
  validation, retries). Its "model" is a toy: logprob(token) = -(1 + token % 5 / 10) - theta.
* ``service``: a ServiceClient talking to ``fake`` with a private plugin manager.
* ``local_service``: a ServiceClient on the real in-process local server (``local://``)
  with a temporary data directory.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tinkex_clients import ServiceClient
from tinkex_http import PollPolicy
from tinkex_types import Hooks, make_plugin_manager, set_hooks

TINY = "tinkex/tiny-llama-100k"


def _lp(token: int, theta: float) -> float:
    return -(1.0 + (token % 5) / 10.0) - theta


@dataclass
class FakeModel:
    model_id: str
    base_model: str
    rank: int
    theta: float = 0.0
    grad: float = 0.0
    seq_ids: list[int] = field(default_factory=list)
    saved: dict[str, float] = field(default_factory=dict)


class FakeTinker:
    """A tiny fake of the Tinker JSON protocol (see module docstring)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        #: (path, x-tinker-request-type header or None) of every request.
        self.request_types: list[tuple[str, str | None]] = []
        self.sessions: list[str] = []
        self.models: dict[str, FakeModel] = {}
        self.futures: dict[str, Any] = {}
        self.samplers: dict[str, dict[str, Any]] = {}
        self.checkpoints: list[dict[str, Any]] = []
        self._rid = itertools.count()
        self.try_again_polls = 0  # answer this many polls of every future with try_again
        self._polled: dict[str, int] = {}
        self.asample_429 = 0  # answer the next N asample calls with 429
        self.fail_forward_backward = False
        self.heartbeats = 0
        self.corrupted: set[str] = set()
        self.poll_delay = 0.0
        self.submit_delay = 0.0  # seconds the forward/forward_backward POSTs take

    # -- helpers ------------------------------------------------------------------------------
    def paths(self) -> list[str]:
        return [p for _, p, _ in self.requests]

    def bodies(self, path: str) -> list[Any]:
        return [b for _, p, b in self.requests if p == path]

    def _future(self, result: Any) -> dict[str, Any]:
        rid = f"req-{next(self._rid)}"
        self.futures[rid] = result
        return {"request_id": rid}

    @staticmethod
    def _json(data: Any, status: int = 200) -> httpx.Response:
        return httpx.Response(status, json=data)

    def _model(self, body: dict[str, Any]) -> FakeModel:
        model = self.models[body["model_id"]]
        if body.get("seq_id") is not None:
            model.seq_ids.append(body["seq_id"])
        return model

    def _forward(self, model: FakeModel, fb_input: dict[str, Any], backward: bool) -> Any:
        outputs = []
        loss = 0.0
        grad = 0.0
        for datum in fb_input["data"]:
            targets = datum["loss_fn_inputs"]["target_tokens"]["data"]
            inputs = datum["loss_fn_inputs"]
            weights = inputs.get("weights", {"data": [1.0] * len(targets)})["data"]
            lps = [_lp(t, model.theta) for t in targets]
            if fb_input["loss_fn"] == "cross_entropy":
                loss += sum(-w * lp for w, lp in zip(weights, lps, strict=True))
                grad += sum(w for w in weights)  # d(-w*lp)/dtheta = w
            else:
                adv = inputs["advantages"]["data"]
                old = inputs["logprobs"]["data"]
                ratio = [math.exp(lp - q) for lp, q in zip(lps, old, strict=True)]
                loss += sum(-r * a for r, a in zip(ratio, adv, strict=True))
                grad += sum(r * a for r, a in zip(ratio, adv, strict=True))
            shape = datum["loss_fn_inputs"]["target_tokens"].get("shape") or [len(targets)]
            outputs.append({"logprobs": {"data": lps, "dtype": "float32", "shape": shape}})
        if backward:
            model.grad += grad
        n = len(fb_input["data"])
        return {
            "loss_fn_output_type": "ArrayRecord",
            "loss_fn_outputs": outputs,
            "metrics": {"loss:sum": loss, "datums:sum": float(n), "chunk:unique": float(n)},
        }

    def _ckpt(self, model: FakeModel, kind: str, name: str) -> dict[str, Any]:
        path = f"tinker://{model.model_id}/{kind}/{name}"
        entry = {
            "checkpoint_id": f"{kind}/{name}",
            "checkpoint_type": "training" if kind == "weights" else "sampler",
            "time": datetime.now(UTC).isoformat(),
            "tinker_path": path,
        }
        self.checkpoints.append(entry)
        return entry

    def _run(self, model: FakeModel) -> dict[str, Any]:
        mine = [
            c
            for c in self.checkpoints
            if c["tinker_path"].startswith(f"tinker://{model.model_id}/")
        ]
        training = [c for c in mine if c["checkpoint_type"] == "training"]
        return {
            "training_run_id": model.model_id,
            "base_model": model.base_model,
            "model_owner": "tester",
            "is_lora": True,
            "lora_rank": model.rank,
            "corrupted": model.model_id in self.corrupted,
            "last_request_time": datetime.now(UTC).isoformat(),
            "last_checkpoint": training[-1] if training else None,
        }

    # -- the handler ---------------------------------------------------------------------------
    async def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body: Any = json.loads(request.content) if request.content else None
        self.requests.append((request.method, path, body))
        self.request_types.append((path, request.headers.get("x-tinker-request-type")))
        if path == "/api/v1/create_session":
            sid = f"sess-{len(self.sessions)}"
            self.sessions.append(sid)
            return self._json({"session_id": sid})
        if path == "/api/v1/session_heartbeat":
            self.heartbeats += 1
            return self._json({})
        if path == "/api/v1/get_server_capabilities":
            return self._json({"supported_models": [{"model_name": TINY}, "plain-name"]})
        if path == "/api/v1/create_model":
            model_id = f"{body['session_id']}:train:{body['model_seq_id']}"
            self.models[model_id] = FakeModel(
                model_id, body["base_model"], body["lora_config"]["rank"]
            )
            return self._json({**self._future({"model_id": model_id}), "model_id": model_id})
        if path == "/api/v1/retrieve_future":
            rid = body["request_id"]
            if rid not in self.futures:
                return self._json({"detail": "unknown future"}, 404)
            count = self._polled.get(rid, 0)
            self._polled[rid] = count + 1
            if self.poll_delay:
                await asyncio.sleep(self.poll_delay)
            if count < self.try_again_polls:
                return self._json(
                    {"type": "try_again", "request_id": rid, "queue_state": "paused_capacity"}, 408
                )
            return self._json(self.futures[rid])
        if path == "/api/v1/get_info":
            model = self.models[body["model_id"]]
            return self._json(
                {
                    "model_id": model.model_id,
                    "model_data": {
                        "arch": "llama",
                        "model_name": model.base_model,
                        "tokenizer_id": model.base_model,
                    },
                    "is_lora": True,
                    "lora_rank": model.rank,
                }
            )
        if path in ("/api/v1/forward", "/api/v1/forward_backward"):
            if self.submit_delay:
                await asyncio.sleep(self.submit_delay)
            model = self._model(body)
            backward = path.endswith("forward_backward")
            if backward and self.fail_forward_backward:
                return self._json(self._future({"error": "bad targets", "category": "user"}))
            fb_input = body["forward_backward_input"] if backward else body["forward_input"]
            return self._json(self._future(self._forward(model, fb_input, backward)))
        if path == "/api/v1/unload_model":
            model = self.models.pop(body["model_id"])
            return self._json(self._future({"model_id": model.model_id}))
        if path == "/api/v1/optim_step":
            model = self._model(body)
            lr = body["adam_params"]["learning_rate"]
            model.theta -= lr * (1.0 if model.grad > 0 else -1.0 if model.grad < 0 else 0.0)
            model.grad = 0.0
            return self._json(self._future({"metrics": {"theta:mean": model.theta}}))
        if path == "/api/v1/save_weights":
            model = self._model(body)
            model.saved[body["path"]] = model.theta
            entry = self._ckpt(model, "weights", body["path"])
            return self._json(self._future({"path": entry["tinker_path"]}))
        if path == "/api/v1/save_weights_for_sampler":
            model = self._model(body)
            if body.get("path"):
                entry = self._ckpt(model, "sampler_weights", body["path"])
                return self._json(self._future({"path": entry["tinker_path"]}))
            sid = f"{model.model_id}:sample:{body['sampling_session_seq_id']}"
            self.samplers[sid] = {"base_model": model.base_model, "theta": model.theta}
            return self._json(self._future({"sampling_session_id": sid}))
        if path == "/api/v1/load_weights":
            model = self._model(body)
            run, _kind, name = body["path"][len("tinker://") :].split("/")
            model.theta = self.models[run].saved[name]
            return self._json(self._future({"path": body["path"]}))
        if path == "/api/v1/weights_info":
            run = body["tinker_path"][len("tinker://") :].split("/")[0]
            if run not in self.models:
                return self._json({"detail": "no such checkpoint"}, 404)
            model = self.models[run]
            return self._json(
                {"base_model": model.base_model, "is_lora": True, "lora_rank": model.rank}
            )
        if path == "/api/v1/create_sampling_session":
            sid = f"{body['session_id']}:sample:{body['sampling_session_seq_id']}"
            self.samplers[sid] = {"base_model": body.get("base_model") or "from-path", "theta": 0.0}
            return self._json({"sampling_session_id": sid})
        if path == "/api/v1/asample":
            if self.asample_429 > 0:
                self.asample_429 -= 1
                return self._json({"detail": "slow down", "queue_state": "paused_rate_limit"}, 429)
            prompt = [t for c in body["prompt"]["chunks"] for t in c["tokens"]]
            n = body["num_samples"]
            seed = body["sampling_params"].get("seed") or 0
            max_tokens = body["sampling_params"].get("max_tokens") or 4
            seqs = []
            for i in range(n):
                toks = [(seed + i + j + len(prompt)) % 50 for j in range(max_tokens)]
                seqs.append(
                    {
                        "stop_reason": "length",
                        "tokens": toks,
                        "logprobs": [_lp(t, 0.0) for t in toks],
                    }
                )
            result: dict[str, Any] = {"sequences": seqs}
            if body.get("prompt_logprobs"):
                result["prompt_logprobs"] = [None] + [_lp(t, 0.0) for t in prompt[1:]]
            return self._json(self._future(result))
        if path.startswith("/api/v1/samplers/"):
            sid = path.rsplit("/", 1)[1]
            info = self.samplers.get(sid)
            if info is None:
                return self._json({"detail": "no sampler"}, 404)
            return self._json({"sampler_id": sid, "base_model": info["base_model"]})
        if path == "/api/v1/training_runs":
            runs = [self._run(m) for m in self.models.values()]
            limit = int(request.url.params.get("limit", 20))
            offset = int(request.url.params.get("offset", 0))
            return self._json(
                {
                    "training_runs": runs[offset : offset + limit],
                    "cursor": {"offset": offset, "limit": limit, "total_count": len(runs)},
                }
            )
        if path.startswith("/api/v1/training_runs/"):
            rest = path[len("/api/v1/training_runs/") :]
            run_id, _, tail = rest.partition("/")
            if run_id not in self.models:
                return self._json({"detail": "no such run"}, 404)
            if not tail:
                return self._json(self._run(self.models[run_id]))
            if tail == "checkpoints":
                mine = [
                    c
                    for c in self.checkpoints
                    if c["tinker_path"].startswith(f"tinker://{run_id}/")
                ]
                return self._json({"checkpoints": mine})
            return self._json({})
        if path == "/api/v1/checkpoints":
            return self._json({"checkpoints": list(reversed(self.checkpoints))})
        if path == "/api/v1/sessions":
            return self._json({"sessions": list(self.sessions)})
        if path.startswith("/api/v1/sessions/"):
            sid = path.rsplit("/", 1)[1]
            runs = [m for m in self.models if m.startswith(sid)]
            return self._json({"training_run_ids": runs, "sampler_ids": []})
        return self._json({"detail": f"no route {path}"}, 404)


@pytest.fixture
def fake() -> FakeTinker:
    return FakeTinker()


@pytest.fixture
def private_hooks() -> Iterator[Hooks]:
    """A plugin manager with only tinkex_http's and tinkex_clients' plugins."""
    import tinkex_clients._plugin as clients_plugin
    import tinkex_http._plugin as http_plugin

    hooks = Hooks(
        make_plugin_manager(load_entrypoints=False, plugins=[http_plugin, clients_plugin])
    )
    old = set_hooks(hooks)
    try:
        yield hooks
    finally:
        set_hooks(old)


FAST_POLLS = PollPolicy(backoff_initial=0.01, backoff_max=0.05, paused_delay=0.0)


@pytest.fixture
def service(fake: FakeTinker, private_hooks: Hooks) -> Iterator[ServiceClient]:
    client = ServiceClient(
        api_key="tml-test-key",
        base_url="http://fake.test",
        transport=httpx.MockTransport(fake.handler),
        hooks=private_hooks,
        poll_policy=FAST_POLLS,
        heartbeat_interval=0.05,
    )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def local_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One in-process local server per test module (engine start-up is the slow part), with
    the opt-in test routes enabled."""
    from tinkex_server._config import ServerConfig
    from tinkex_server._local import get_local_server

    directory = tmp_path_factory.mktemp("tinkex-data")
    server = get_local_server(config=ServerConfig(data_dir=directory, enable_test_routes=True))
    try:
        yield directory
    finally:
        server.close()


@pytest.fixture
def local_env(local_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``TINKEX_DATA_DIR`` points at the module's local server for this test."""
    monkeypatch.setenv("TINKEX_DATA_DIR", str(local_data_dir))
    return local_data_dir


@pytest.fixture(scope="session")
def local_hooks() -> Hooks:
    """http + clients + server plugins only (no other installed plugin interferes)."""
    import tinkex_clients._plugin as clients_plugin
    import tinkex_http._plugin as http_plugin
    import tinkex_server._plugin as server_plugin

    return Hooks(
        make_plugin_manager(
            load_entrypoints=False, plugins=[http_plugin, clients_plugin, server_plugin]
        )
    )


@pytest.fixture
def local_service(local_env: Path, local_hooks: Hooks) -> Iterator[ServiceClient]:
    client = ServiceClient(base_url="local://", hooks=local_hooks, poll_policy=FAST_POLLS)
    try:
        yield client
    finally:
        client.close()
