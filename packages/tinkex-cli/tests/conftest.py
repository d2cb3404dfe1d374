"""Fixtures of the tinkex-cli tests (local to this directory)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result

import tinkex_types


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test: no inherited Tinker settings, and the structlog configuration and the
    process-wide hooks restored afterwards (the CLI configures structlog on every run)."""
    for var in (
        "TINKER_API_KEY",
        "TINKER_BASE_URL",
        "TINKER_LOG",
        "TINKEX_DISABLE_PLUGINS",
        "TINKEX_LOAD_PLUGINS",
        "TINKEX_TIMEOUT",
        "_TINKEX_COMPLETE",
    ):
        monkeypatch.delenv(var, raising=False)
    saved = structlog.get_config()
    old_hooks = tinkex_types.set_hooks(None)
    tinkex_types.set_hooks(old_hooks)
    try:
        yield
    finally:
        structlog.configure(**saved)
        tinkex_types.set_hooks(old_hooks)


# -- a real local server with training runs and checkpoints ----------------------------------

BASE_MODEL = "tinkex/tiny-llama-100k"
#: An API key for the tests that check it never shows up in any output.
SECRET_KEY = "tml-cli-test-SECRET-9f8e7d6c5b4a"


@dataclass(frozen=True)
class World:
    """What the ``world`` fixture created on the local server."""

    data_dir: Path
    base_model: str
    secret_key: str
    runs: list[str]
    #: The checkpoints of ``runs[0]``: training ``step-1``/``step-2``, sampler ``final``.
    step1: str
    step2: str
    final: str

    @property
    def all_checkpoints(self) -> int:
        return 3 + (len(self.runs) - 1)


def train_a_little(service: Any, steps: int = 2) -> Any:
    """A LoRA training client on the tiny model, trained ``steps`` optimizer steps."""
    from tinkex_types import AdamParams, Datum, ModelInput

    training = service.create_lora_training_client(BASE_MODEL, rank=4, seed=0)
    tokens = [1, 40, 41, 42, 43, 44, 45, 2]
    datum = Datum(
        model_input=ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
    )
    for _ in range(steps):
        training.forward_backward([datum], "cross_entropy").result()
        training.optim_step(AdamParams(learning_rate=1e-2)).result()
    return training


def close_local_server(data_dir: Path) -> None:
    """Stop the in-process server of ``data_dir`` (it releases its lock file and threads).

    Test-only use of tinkex-server: the CLI itself never imports it."""
    from tinkex_server._local import get_local_server

    get_local_server(data_dir).close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A data directory served by the in-process local server (``--base-url local://`` with
    ``TINKEX_DATA_DIR``), holding 3 training runs; the first has 3 checkpoints, the others
    one sampler checkpoint each."""
    from tinkex_clients import ServiceClient

    data_dir = tmp_path_factory.mktemp("tinkex-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINKEX_DATA_DIR", str(data_dir))
        mp.delenv("TINKER_BASE_URL", raising=False)
        mp.delenv("TINKER_API_KEY", raising=False)
        with ServiceClient(base_url="local://") as service:
            first = train_a_little(service)
            step1 = first.save_state("step-1").result().path
            step2 = first.save_state("step-2").result().path
            final = first.save_weights_for_sampler("final").result().path
            runs = [first.model_id]
            for i in range(2):
                other = service.create_lora_training_client(BASE_MODEL, rank=2, seed=i)
                other.save_weights_for_sampler(f"other-{i}").result()
                runs.append(other.model_id)
        yield World(
            data_dir=data_dir,
            base_model=BASE_MODEL,
            secret_key=SECRET_KEY,
            runs=runs,
            step1=step1,
            step2=step2,
            final=final,
        )
        close_local_server(data_dir)


@pytest.fixture
def scratch(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh data directory (for tests that delete things), used by ``local://`` for the
    rest of the test: ``scratch(*names)`` saves sampler checkpoints there, returns paths."""
    from tinkex_clients import ServiceClient

    data_dir = tmp_path / "scratch-data"
    monkeypatch.setenv("TINKEX_DATA_DIR", str(data_dir))

    def save(*names: str) -> list[str]:
        with ServiceClient(base_url="local://") as service:
            training = service.create_lora_training_client(BASE_MODEL, rank=2, seed=0)
            return [training.save_weights_for_sampler(n).result().path for n in names]

    yield save
    close_local_server(data_dir)


@dataclass
class Tinkex:
    """Runs the CLI with CliRunner against the local server, always passing the API key
    ``SECRET_KEY``, and checks that the key appears in no output (stdout or stderr)."""

    base_url: str = "local://"
    api_key: str | None = SECRET_KEY
    hooks: Any = None

    def __call__(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        from tinkex_cli import build_cli

        argv = ["--base-url", self.base_url]
        if self.api_key is not None:
            argv += ["--api-key", self.api_key]
        result = CliRunner().invoke(
            build_cli(self.hooks), [*argv, *args], input=input, env=env, prog_name="tinkex"
        )
        for stream in (result.stdout, result.stderr):
            assert SECRET_KEY not in stream
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"unexpected exception: {result.exception!r}\n{result.output}")
        return result

    def json(self, *args: str, **kwargs: Any) -> Any:
        """Run with ``-f json``; exit code 0 and exactly one JSON document on stdout."""
        result = self("-f", "json", *args, **kwargs)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture
def tinkex(world: World) -> Tinkex:
    """The CLI against the local server of ``world``."""
    return Tinkex()


@pytest.fixture
def make_tinkex(world: World) -> type[Tinkex]:
    """``make_tinkex(base_url=..., api_key=..., hooks=...)`` for other settings."""
    return Tinkex
