"""Built-in plugins are registered by module (``DEFAULT_PLUGINS``), so ``http``, ``https`` and
``local`` survive ``TINKEX_LOAD_PLUGINS`` and ``load_entrypoints=False``; these tests use
the installed tinkex packages for real (an HTTP server on 127.0.0.1, the ``local://``
server in-process)."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import httpx
import pytest

from tinkex_types import (
    DEFAULT_PLUGINS,
    ENTRY_POINT_GROUP,
    Hooks,
    hookimpl,
    make_plugin_manager,
    set_hooks,
)

BUILTIN_NAMES = {d.name for d in DEFAULT_PLUGINS}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No plugin selection from the environment, and the process-wide facade (which the
    ``local://`` server builds on first use, under this test's environment) put back."""
    monkeypatch.delenv("TINKEX_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("TINKEX_LOAD_PLUGINS", raising=False)
    old = set_hooks(None)
    yield
    set_hooks(old)


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def local_servers(tmp_path: Path) -> Iterator[None]:
    """Close the in-process ``local://`` server the test started on ``tmp_path``."""
    yield
    from tinkex_server import get_local_server

    get_local_server(tmp_path).close()


@pytest.fixture
def http_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def _get(hooks: Hooks, base_url: str, path: str) -> httpx.Response:
    from tinkex_http import Config, make_transport

    config = Config(base_url=base_url)
    transport = make_transport(config, "session", hooks=hooks)
    async with httpx.AsyncClient(base_url=config.base_url, transport=transport) as client:
        return await client.get(path)


def test_the_builtins_match_their_entry_points() -> None:
    eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for default in DEFAULT_PLUGINS:
        ep = eps[default.name]
        assert ep.value == default.module
        assert ep.dist is not None
        assert ep.dist.name == default.distribution
        assert importlib.import_module(default.module) is not None


def test_without_entry_points_the_builtins_are_there() -> None:
    pm = make_plugin_manager(load_entrypoints=False)
    assert {pm.get_name(p) for p in pm.get_plugins()} == BUILTIN_NAMES
    hooks = Hooks(pm)
    assert {"http", "https", "local"} <= set(hooks.transports().names())
    assert not hooks.has_transport_wrappers()  # no telemetry, no chaos: nothing wraps
    assert pm.list_plugin_distinfo() == []  # registered by module


def test_with_entry_points_the_builtins_keep_their_package() -> None:
    pm = make_plugin_manager()
    packages = {pm.get_name(p): d.project_name for p, d in pm.list_plugin_distinfo()}
    for default in DEFAULT_PLUGINS:
        assert packages[default.name] == default.distribution
    assert "telemetry" in packages  # an ordinary entry point, loaded too
    assert "chaos" in packages


def test_a_builtin_passed_again_is_registered_once() -> None:
    import tinkex_http._plugin as http_plugin

    for load in (False, True):
        pm = make_plugin_manager(load_entrypoints=load, plugins=[http_plugin])
        assert pm.get_name(http_plugin) == "http"
        owners = [i.plugin for i in pm.hook.tinkex_register_transports.get_hookimpls()]
        assert owners.count(http_plugin) == 1
        assert Hooks(pm).transports().get("https") is not None


def test_defaults_false_gives_exactly_the_plugins_passed() -> None:
    class Mine:
        @hookimpl
        def tinkex_register_transports(self, register: Any) -> None:
            register("memory", "factory")

    hooks = Hooks(make_plugin_manager(load_entrypoints=False, defaults=False, plugins=[Mine()]))
    assert hooks.transports().names() == ["memory"]


@pytest.mark.parametrize("name", ["server", "tinkex-server", "tinkex_server"])
def test_disable_plugins_blocks_a_builtin_by_plugin_or_package_name(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("TINKEX_DISABLE_PLUGINS", name)
    for load in (False, True):
        pm = make_plugin_manager(load_entrypoints=load)
        assert pm.is_blocked("server")
        names = Hooks(pm).transports().names()
        assert "local" not in names
        assert "http" in names


async def test_load_plugins_chaos_only_keeps_http_https_and_local(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, http_url: str, local_servers: None
) -> None:
    monkeypatch.setenv("TINKEX_LOAD_PLUGINS", "tinkex-chaos")
    pm = make_plugin_manager()
    assert pm.has_plugin("chaos")
    assert pm.is_blocked("telemetry")
    assert {pm.get_name(p) for p in pm.get_plugins()} == BUILTIN_NAMES | {"chaos"}
    hooks = Hooks(pm)
    assert {"http", "https", "local"} <= set(hooks.transports().names())

    local = await _get(hooks, f"local://{tmp_path}", "/api/v1/healthz")
    assert local.status_code == 200
    remote = await _get(hooks, http_url, "/api/v1/healthz")
    assert remote.status_code == 200
    assert remote.json() == {"status": "ok"}

    from tinkex_http import Config, make_transport

    config = Config(base_url="https://tinker.invalid", api_key="tml-test-key")
    secure = make_transport(config, "session", hooks=hooks)
    assert isinstance(secure, httpx.AsyncBaseTransport)
    await secure.aclose()


async def test_load_entrypoints_false_still_reaches_local(
    tmp_path: Path, local_servers: None
) -> None:
    hooks = Hooks(make_plugin_manager(load_entrypoints=False))
    response = await _get(hooks, f"local://{tmp_path}", "/api/v1/healthz")
    assert response.status_code == 200
