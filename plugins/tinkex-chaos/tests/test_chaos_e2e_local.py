"""Exactly once, bit for bit: the supervised run against the in-process server, clean and
under 22 % injected faults (resets after the server processed the request included), ends
with byte-identical weights, identical losses and sampled tokens, and a server log that
applied every step once. Plus: with chaos off no wrapper is installed at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tinkex_chaos
from tinkex_chaos import FAULT_KINDS, ChaosConfig, ChaosTransport
from tinkex_http import Config, H1Transport, make_transport
from tinkex_server import LocalTransport
from tinkex_types import Hooks, make_plugin_manager

TRAINING_SUBMITS = ("/api/v1/forward_backward", "/api/v1/optim_step")


@pytest.mark.parametrize("protocol", ["protobuf", "json"])
def test_chaos_run_is_bit_identical_to_the_clean_run(
    kit: Any, clean_reference: Any, hooks: Hooks, tmp_path: Path, protocol: str
) -> None:
    """In both wire generations of the client; the clean reference ran with ``auto``
    (protobuf against this server), so the JSON run also checks that the encodings give
    the same numbers."""
    assert protocol in kit.PROTOCOLS
    config = tinkex_chaos.enable(kit.CHAOS)
    assert config.total_fault_rate >= 0.2
    chaos = kit.run_in_process(tmp_path / "chaos", hooks, protocol)
    clean = clean_reference

    # Same losses at every step, same sampled tokens, byte-identical weight files.
    assert sorted(chaos.outcome.losses) == list(range(1, 31))
    assert chaos.outcome.losses == clean.outcome.losses
    assert chaos.outcome.tokens == clean.outcome.tokens
    assert set(chaos.outcome.files) == set(clean.outcome.files)
    for name, data in clean.outcome.files.items():
        assert chaos.outcome.files[name] == data, name

    # The server applied each (model_id, seq_id) once, all of them successfully, in the
    # same order as the clean run: no retry ran a step twice, none was skipped.
    kit.seq_ids_once(chaos.applied)
    assert chaos.applied == clean.applied
    assert {outcome for _, _, outcome in chaos.applied} == {"ok"}
    expected = [op.seq_id for op in chaos.loop.done]
    assert [seq for seq, _, _ in chaos.applied if seq is not None] == expected

    # Every fault kind happened, on each state-changing submit too: resets after send and
    # truncations mean the server ran the step and the client never saw the answer.
    stats = tinkex_chaos.stats()
    for kind in FAULT_KINDS:
        assert stats[kind] > 0, (kind, stats)
    assert stats["latency"] > 0
    by_path = tinkex_chaos.shared_stats().by_path()
    for path in TRAINING_SUBMITS:
        for kind in FAULT_KINDS:
            assert by_path.get((kind, path), 0) > 0, (kind, path, by_path)
    attempts = sum(stats[kind] for kind in (*FAULT_KINDS, "passed"))
    assert tinkex_chaos.shared_stats().total_faults / attempts > 0.12, stats
    # Counted paths are endpoint paths, without the data directory of local:///<dir>.
    assert all(path.startswith("/api/v1/") for _, path in by_path)


@pytest.fixture
def local_config(tmp_path: Path) -> Iterator[Config]:
    from tinkex_server import shutdown_local_servers

    yield Config(base_url=f"local://{tmp_path / 'data'}")
    shutdown_local_servers()


def _chain(transport: Any) -> list[Any]:
    """The transport and every transport it wraps (through the usual attribute names)."""
    out = [transport]
    while True:
        inner = next(
            (
                getattr(out[-1], name)
                for name in ("inner", "_inner", "transport", "_transport", "wrapped")
                if isinstance(getattr(out[-1], name, None), httpx.AsyncBaseTransport)
            ),
            None,
        )
        if inner is None:
            return out
        out.append(inner)


@pytest.mark.parametrize("env", [None, "", "off", "0"])
def test_chaos_off_installs_no_wrapper(
    hooks: Hooks, local_config: Config, monkeypatch: pytest.MonkeyPatch, env: str | None
) -> None:
    if env is not None:
        monkeypatch.setenv("TINKEX_CHAOS", env)
    assert hooks.has_transport_wrappers()  # the chaos plugin is registered...
    for pool in ("session", "training", "futures", "sampling"):
        transport = make_transport(local_config, pool, hooks=hooks)
        assert type(transport) is LocalTransport  # ...and stays out of the way
    http = make_transport(Config(base_url="http://127.0.0.1:9"), "training", hooks=hooks)
    assert type(http) is H1Transport  # tinkex-http's own transport for cleartext http://
    https = make_transport(Config(base_url="https://127.0.0.1:9"), "training", hooks=hooks)
    assert type(https) is httpx.AsyncHTTPTransport
    assert tinkex_chaos.stats()["passed"] == 0


def test_chaos_off_with_every_installed_plugin(local_config: Config) -> None:
    import tinkex_chaos._plugin as chaos_plugin

    everything = Hooks(make_plugin_manager(load_entrypoints=True))
    assert everything.pm.is_registered(chaos_plugin)
    tinkex_chaos.disable()
    chain = _chain(make_transport(local_config, "training", hooks=everything))
    assert not any(isinstance(t, ChaosTransport) for t in chain), chain
    assert isinstance(chain[-1], LocalTransport)


def test_chaos_sits_between_the_client_and_the_local_server(
    hooks: Hooks, local_config: Config
) -> None:
    tinkex_chaos.enable(ChaosConfig(seed=1, reset_after_send_rate=0.5))
    transport = make_transport(local_config, "training", hooks=hooks)
    assert isinstance(transport, ChaosTransport)
    assert type(transport.inner) is LocalTransport
    assert transport.base_path == local_config.base_url.removeprefix("local://")
