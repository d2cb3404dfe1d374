"""Fixtures of the tinkex-chaos end-to-end tests.

* :class:`Loop`: the supervised run every e2e test drives -- 30 steps of
  ``forward_backward`` + ``optim_step`` (a training checkpoint ``step-N`` every 10 steps),
  then ``save_weights_for_sampler("final")`` and one seeded sample. It records every request
  whose result arrived (seq_id, kind, step) and every loss.
* :class:`Outcome`: what a finished run produced, compared bit for bit between runs.
* ``clean_reference``: the run once without chaos on the in-process server (session-wide).
* ``hooks``: a private plugin manager with the http, clients, server and chaos plugins.
* :class:`Served`: ``python -m tinkex_server serve`` as a subprocess on 127.0.0.1 (test
  routes on, one torch thread), which tests SIGKILL and restart on the same port.
* ``kit``: this module, for the helpers and constants (test modules cannot import a
  conftest under ``--import-mode=importlib``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

import tinkex_chaos
from tinkex_clients import ServiceClient, TrainingClient
from tinkex_http import PollPolicy
from tinkex_server.testing import ServeProcess
from tinkex_types import (
    AdamParams,
    Datum,
    Hooks,
    ModelInput,
    SamplingParams,
    TensorData,
    make_plugin_manager,
)

MODEL = "tinkex/tiny-llama-100k"
STEPS = 30
CHECKPOINT_EVERY = 10
ADAM = AdamParams(learning_rate=0.01)
SAMPLE_PROMPT = [1, 20, 30, 40]
SAMPLE_PARAMS = SamplingParams(max_tokens=16, seed=5, temperature=1.0)

#: 22 % of all attempts fail, of every kind, on every endpoint (plus 0-3 ms of latency).
#: Each endpoint draws from its own stream, so with this seed the training submits
#: (forward_backward, optim_step) see every fault kind, whatever the polling did.
CHAOS = (
    "seed=6,error_rate=0.05,reset_after_send_rate=0.06,rate_limit_rate=0.04,"
    "timeout_rate=0.03,truncate_rate=0.04,latency_ms=0..3,retry_after_s=0.02"
)

#: Client-side polling that retries fast (the server long-polls anyway).
FAST_POLLS = PollPolicy(backoff_initial=0.01, backoff_max=0.2, paused_delay=0.01)
#: Config fields: small backoff on re-polled 5xx answers, and transport retries of 20 ms
#: doubling to 1 s (the default is 0.5 s doubling to 10 s); ten of them (the default
#: ``max_retries``) outlast a server restart.
CLIENT_CONFIG: dict[str, Any] = {
    "poll_backoff": (0.01, 0.2),
    "retry_backoff": (0.02, 1.0),
    "max_retries": 10,
    "heartbeat_interval": 60.0,
}


#: The client's wire generations (``Config.protocol``) every exactly-once test runs in:
#: protobuf bodies and results (what ``auto`` picks against tinkex) and the JSON generation.
PROTOCOLS = ("protobuf", "json")


def client(url: str, hooks: Hooks, protocol: str = "auto") -> ServiceClient:
    """A ServiceClient with fast polling and fast transport retries (public options only)."""
    service = ServiceClient(
        base_url=url, hooks=hooks, poll_policy=FAST_POLLS, protocol=protocol, **CLIENT_CONFIG
    )
    spoken = service._session.protocol.generation
    assert protocol in ("auto", spoken), (protocol, spoken)
    return service


def batch(step: int) -> list[Datum]:
    """Two 12-token examples, different at every step."""
    out = []
    for row in range(2):
        tokens = [1] + [(step * 7 + row * 3 + k * 5) % 300 + 10 for k in range(12)]
        n = len(tokens) - 1
        out.append(
            Datum(
                model_input=ModelInput.from_ints(tokens[:-1]),
                loss_fn_inputs={
                    "target_tokens": TensorData(data=tokens[1:], dtype="int64", shape=[n]),
                    "weights": TensorData(data=[1.0] * n, dtype="float32", shape=[n]),
                },
            )
        )
    return out


@dataclass(frozen=True)
class Op:
    """A request whose result arrived."""

    seq_id: int
    kind: str
    step: int


@dataclass
class Loop:
    """The supervised run (see the module docstring), resumable from a checkpoint."""

    training: TrainingClient
    losses: list[tuple[int, float]] = field(default_factory=list)
    done: list[Op] = field(default_factory=list)
    saves: list[tuple[int, str, int]] = field(default_factory=list)  # (step, path, seq_id)
    #: When forward_backward failed: how the optimizer step issued with it ended.
    sibling_error: BaseException | None = None

    def step(self, step: int) -> None:
        tc = self.training
        seq = tc.next_seq_id
        fb = tc.forward_backward(batch(step), "cross_entropy")
        opt = tc.optim_step(ADAM)
        try:
            out = fb.result()
        except BaseException:
            self.sibling_error = opt.exception()  # let it settle before reporting
            raise
        self.done.append(Op(seq, "forward_backward", step))
        self.losses.append((step, out.metrics["loss:sum"]))
        opt.result()
        self.done.append(Op(seq + 1, "optim_step", step))
        if step % CHECKPOINT_EVERY == 0:
            seq = tc.next_seq_id
            path = tc.save_state(f"step-{step}").result().path
            self.done.append(Op(seq, "save_state", step))
            self.saves.append((step, path, seq))

    def run(self, start: int = 1, after: Callable[[int], None] | None = None) -> None:
        for step in range(start, STEPS + 1):
            self.step(step)
            if after is not None:
                after(step)

    def resume_from(self, step: int, path: str) -> None:
        """Load the checkpoint ``path`` (taken after ``step``) and run the rest."""
        seq = self.training.next_seq_id
        self.training.load_state_with_optimizer(path).result()
        self.done.append(Op(seq, "load_state", step))
        self.run(start=step + 1)

    def finish(self, service: ServiceClient) -> list[int]:
        seq = self.training.next_seq_id
        saved = self.training.save_weights_for_sampler("final").result()
        assert saved.path is not None
        self.done.append(Op(seq, "save_weights_for_sampler", STEPS))
        sampler = service.create_sampling_client(model_path=saved.path)
        response = sampler.sample(ModelInput.from_ints(SAMPLE_PROMPT), 1, SAMPLE_PARAMS).result()
        return list(response.sequences[0].tokens)


@dataclass(frozen=True)
class Outcome:
    """What a run left behind: losses by step, sampled tokens and the weight files."""

    losses: dict[int, float]
    tokens: list[int]
    files: dict[str, bytes]

    @classmethod
    def collect(cls, loop: Loop, tokens: list[int], data_dir: Path) -> Outcome:
        losses: dict[int, float] = {}
        for step, loss in loop.losses:
            # A step run twice (before a lost state and after the resume) must agree.
            assert losses.setdefault(step, loss) == loss, (step, losses[step], loss)
        return cls(losses=losses, tokens=tokens, files=weight_files(data_dir))


def weight_files(data_dir: Path) -> dict[str, bytes]:
    """The sampler adapter and the last training state, read from the server's data dir
    (one training run per data dir)."""
    wanted = {
        "sampler_weights/final/adapter_model.safetensors",
        f"weights/step-{STEPS}/adapter_model.safetensors",
        f"weights/step-{STEPS}/optimizer.safetensors",
    }
    out: dict[str, bytes] = {}
    for rel in sorted(wanted):
        found = list((data_dir / "checkpoints").glob(f"*/{rel}"))
        assert len(found) == 1, (rel, found)
        out[rel] = found[0].read_bytes()
    return out


def seq_ids_once(steps: list[tuple[int | None, str, str]]) -> None:
    """The applied log (seq_id, request_type, outcome) names every seq_id at most once."""
    seqs = [seq for seq, _, _ in steps if seq is not None]
    assert len(seqs) == len(set(seqs)), sorted(s for s in seqs if seqs.count(s) > 1)
    assert seqs == sorted(seqs), seqs


@pytest.fixture(scope="session")
def kit() -> Any:
    """This module: ``kit.Loop``, ``kit.CHAOS``, ``kit.run_in_process`` ..."""
    return sys.modules[__name__]


@pytest.fixture(scope="session")
def hooks() -> Hooks:
    """The built-in plugins (http, clients, server...) plus tinkex-chaos, nothing else."""
    import tinkex_chaos._plugin as chaos_plugin

    return Hooks(make_plugin_manager(load_entrypoints=False, plugins=[chaos_plugin]))


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """The engine is bit-for-bit deterministic at a fixed thread count; `serve` uses 1."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _chaos_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(tinkex_chaos.ENV_VAR, raising=False)
    tinkex_chaos.reset_stats()
    yield
    tinkex_chaos.reset_stats()


@dataclass(frozen=True)
class LocalRun:
    outcome: Outcome
    loop: Loop
    applied: list[tuple[int | None, str, str]]
    model_id: str


def run_in_process(data_dir: Path, hooks: Hooks, protocol: str = "auto") -> LocalRun:
    """The whole run on a fresh in-process server (``local:///<data_dir>``), the client
    speaking ``protocol``."""
    from tinkex_server import ServerConfig, get_local_server

    server = get_local_server(config=ServerConfig(data_dir=data_dir, poll_hold_s=5.0))
    try:
        with one_torch_thread(), client(f"local://{data_dir}", hooks, protocol) as service:
            training = service.create_lora_training_client(MODEL, rank=4, seed=0)
            loop = Loop(training)
            loop.run()
            tokens = loop.finish(service)
            steps = server.runtime.store.applied_steps(training.model_id)
            applied = [(s.seq_id, s.request_type, s.outcome) for s in steps]
            return LocalRun(
                Outcome.collect(loop, tokens, data_dir), loop, applied, training.model_id
            )
    finally:
        server.close()


@pytest.fixture(scope="session")
def clean_reference(tmp_path_factory: pytest.TempPathFactory, hooks: Hooks) -> LocalRun:
    """The run without chaos, on the in-process server."""
    tinkex_chaos.disable()
    try:
        return run_in_process(tmp_path_factory.mktemp("clean"), hooks)
    finally:
        tinkex_chaos.reset_stats()


class Served(ServeProcess):
    """One ``serve`` subprocess on ``data_dir`` (``port=0``: a free port, kept on restart)."""

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop(tinkex_chaos.ENV_VAR, None)
        super().__init__(
            data_dir,
            *("--enable-test-routes", "--torch-threads", "1"),
            *("--seq-gap-grace", "5", "--poll-hold", "2"),
            port=port,
            env=env,
            wait_healthy=False,
        )

    def applied(self, model_id: str) -> list[tuple[int | None, str, str]]:
        """The server's applied-steps log of ``model_id`` (GET /api/v1/_test/applied)."""
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(
                    f"{self.url}/api/v1/_test/applied", params={"target": model_id}, timeout=30
                )
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert r.status_code == 200, r.text
        return [(s["seq_id"], s["request_type"], s["outcome"]) for s in r.json()["steps"]]


@pytest.fixture
def served() -> Iterator[list[Served]]:
    """Servers a test started (killed at teardown)."""
    procs: list[Served] = []
    yield procs
    for proc in procs:
        proc.kill()
