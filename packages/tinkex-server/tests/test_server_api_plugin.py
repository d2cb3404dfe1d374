"""The server's hooks: the ``local`` transport scheme, the ``serve`` command, span hooks,
``python -m tinkex_server`` and the one-server-per-data-directory rule."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner

import tinkex_server._plugin as server_plugin
from tinkex_server._local import LocalTransport, get_local_server
from tinkex_types import Hooks, get_hooks, hookimpl, make_plugin_manager, set_hooks

MODEL = "tinkex/tiny-llama-100k"


@pytest.fixture
def server_hooks() -> Iterator[Hooks]:
    hooks = Hooks(make_plugin_manager(load_entrypoints=False, plugins=[server_plugin]))
    old = set_hooks(hooks)
    yield hooks
    set_hooks(old)


async def test_local_scheme_with_a_data_dir_in_the_url(server_hooks: Hooks, tmp_path: Path) -> None:
    assert "local" in server_hooks.transports()
    factory = server_hooks.transports().get("local")
    data = tmp_path / "data dir"
    base_url = "local://" + str(data).replace(" ", "%20")
    config = SimpleNamespace(base_url=base_url)
    transport = factory(config=config, pool="training")
    assert isinstance(transport, LocalTransport)
    server = transport.server
    try:
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            r = await client.post("/api/v1/create_session", json={"sdk_version": "0.16.1"})
            assert r.status_code == 200
            assert r.json()["session_id"]
        assert (data / "tinkex.sqlite3").is_file()
        # Every pool shares one server per data directory.
        other = factory(config=config, pool="sampling")
        assert other.server is server
        assert get_local_server(data) is server
    finally:
        server.close()


async def test_local_scheme_uses_the_environment(
    server_hooks: Hooks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "from-env"
    monkeypatch.setenv("TINKEX_DATA_DIR", str(data))
    factory = server_hooks.transports().get("local")
    transport = factory(config=SimpleNamespace(base_url="local://"), pool="session")
    try:
        async with httpx.AsyncClient(transport=transport, base_url="local://") as client:
            assert (await client.get("/api/v1/healthz")).json() == {"status": "ok"}
        assert transport.server.config.data_dir == data
        assert (data / "tinkex.sqlite3").is_file()
    finally:
        transport.server.close()
    with pytest.raises(ValueError, match="host"):
        factory(config=SimpleNamespace(base_url="local://somehost/x"), pool="session")


def test_serve_command_is_contributed(server_hooks: Hooks) -> None:
    @click.group()
    def cli() -> None:
        """A stand-in for the tinkex CLI."""

    server_hooks.register_commands(cli)
    assert "serve" in cli.commands
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--data-dir", "--api-key"):
        assert option in result.output
    bad = CliRunner().invoke(cli, ["serve", "--port", "70000"])
    assert bad.exit_code == 2
    assert "--port" in bad.output


def test_python_dash_m_runs_serve() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tinkex_server", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "--data-dir" in out.stdout
    assert "127.0.0.1" in out.stdout


class _SpanRecorder:
    def __init__(self) -> None:
        self.spans: list[tuple[str, dict[str, Any], Mapping[str, str] | None, str]] = []
        self.lock = threading.Lock()

    @hookimpl
    def tinkex_operation_span(
        self, operation: str, attributes: Mapping[str, Any], carrier: Mapping[str, str] | None
    ) -> contextlib.AbstractContextManager[Any]:
        @contextlib.contextmanager
        def span() -> Iterator[None]:
            with self.lock:
                self.spans.append(
                    (operation, dict(attributes), carrier, threading.current_thread().name)
                )
            yield

        return span()


async def test_operations_are_wrapped_in_span_hooks(make_server: Any, api_for: Any) -> None:
    recorder = _SpanRecorder()
    old = set_hooks(Hooks(make_plugin_manager(load_entrypoints=False, plugins=[recorder])))
    try:
        async with api_for(make_server()) as api:
            tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            headers = {"traceparent": tp}
            sid = (await api.ok("create_session", {"sdk_version": "0.16.1"}, headers=headers))[
                "session_id"
            ]
            mid = await api.model(sid)
            fut = await api.ok("forward_backward", api.fb_body(mid, 1), headers=headers)
            await api.result(fut)
            assert get_hooks() is not old
    finally:
        set_hooks(old)
    ops = [s[0] for s in recorder.spans]
    assert "server.create_session" in ops
    assert "server.forward_backward" in ops
    assert "server.retrieve_future" in ops
    assert "server.engine_step" in ops
    assert "server.queue_wait" in ops
    fb_request = next(s for s in recorder.spans if s[0] == "server.forward_backward")
    assert fb_request[2] == {"traceparent": tp}
    steps = [s for s in recorder.spans if s[0] == "server.engine_step"]
    fb_step = next(s for s in steps if s[1].get("request_type") == "ForwardBackward")
    assert fb_step[2] == {"traceparent": tp}
    assert fb_step[1]["model_id"] == mid
    assert fb_step[3].startswith("tinkex-engine")  # the engine runs on its own thread
    for _, attrs, _, _ in recorder.spans:
        assert not any("api" in str(k).lower() and "key" in str(k).lower() for k in attrs)


async def test_one_server_per_data_directory(
    make_server: Any, api_for: Any, tmp_path: Path
) -> None:
    data = tmp_path / "shared"
    async with (
        api_for(make_server(data_dir=data)) as first,
        api_for(make_server(data_dir=data)) as second,
    ):
        assert (await first.c.get("/api/v1/healthz")).status_code == 200
        r = await second.c.get("/api/v1/get_server_capabilities")
        assert r.status_code == 503
        assert "in use" in r.json()["detail"]
        assert r.headers["x-should-retry"] == "false"
        first.server.close()
        # Once the first one is gone, the directory is free.
        assert (await second.c.get("/api/v1/get_server_capabilities")).status_code == 200


def test_public_names_and_light_imports() -> None:
    import tinkex_server

    for name in tinkex_server.__all__:
        assert getattr(tinkex_server, name) is not None
    assert tinkex_server.ServerConfig(data_dir="x").data_dir == Path("x")
    code = (
        "import sys, tinkex_server, tinkex_server._plugin as p\n"
        "p.tinkex_register_transports(register=lambda n, f: None)\n"
        "heavy = [m for m in ('torch', 'fastapi', 'uvicorn') if m in sys.modules]\n"
        "print(','.join(heavy) or 'none')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "none"
