"""The ``tinkex_on_session`` hook, its ``SessionEvent`` and the ``Hooks.on_session`` facade."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
import structlog

import tinkex_types
from tinkex_types import Hooks, SessionEvent, hookimpl, hookspecs, make_plugin_manager


class Recorder:
    def __init__(self, handle: Any = None) -> None:
        self.handle = handle
        self.seen: list[SessionEvent] = []

    @hookimpl
    def tinkex_on_session(self, event: SessionEvent) -> Any:
        self.seen.append(event)
        return self.handle if event.phase == "start" else "ignored-on-end"


class Exploding:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def tinkex_on_session(self, event: SessionEvent) -> Any:
        self.calls += 1
        raise RuntimeError(f"observer bug on {event.phase}")


def _hooks(*plugins: object) -> Hooks:
    return Hooks(make_plugin_manager(load_entrypoints=False, plugins=list(plugins)))


def _event(phase: Any = "start", **kw: Any) -> SessionEvent:
    return SessionEvent(session_id="sess-1", phase=phase, base_url="local://", **kw)


def test_session_event_is_exported_frozen_and_keeps_config_out_of_repr() -> None:
    assert "SessionEvent" in tinkex_types.__all__
    before = time.time()
    config = type("Cfg", (), {"api_key": "tml-SECRET-key", "__repr__": lambda s: "tml-SECRET"})()
    event = _event(config=config, sdk_version="0.16.1")
    assert before <= event.timestamp <= time.time()
    assert event.config is config
    assert (event.session_id, event.phase, event.base_url) == ("sess-1", "start", "local://")
    assert "SECRET" not in repr(event)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.phase = "end"  # type: ignore[misc]
    bare = _event("end")
    assert bare.config is None
    assert bare.sdk_version is None


def test_hookspec_is_declared_with_a_docstring() -> None:
    spec = hookspecs.tinkex_on_session
    assert "get_telemetry" in (spec.__doc__ or "")
    pm = make_plugin_manager(load_entrypoints=False)
    assert hasattr(pm.hook, "tinkex_on_session")

    class Misspelt:
        @hookimpl
        def tinkex_on_sesion(self, event: Any) -> None: ...

    with pytest.raises(Exception, match="tinkex_on_sesion"):
        make_plugin_manager(load_entrypoints=False, plugins=[Misspelt()])


def test_on_session_returns_the_first_handle_in_hook_call_order() -> None:
    first, second = Recorder(handle="handle-1"), Recorder(handle="handle-2")
    # pluggy calls the last registered implementation first.
    hooks = _hooks(first, second)
    start = _event("start")
    assert hooks.on_session(start) == "handle-2"
    assert first.seen == [start]
    assert second.seen == [start]
    end = _event("end")
    assert hooks.on_session(end) == "ignored-on-end"
    assert first.seen == [start, end]


def test_on_session_without_plugins_or_handles_is_none() -> None:
    assert _hooks().on_session(_event()) is None
    silent = Recorder(handle=None)
    assert _hooks(silent).on_session(_event()) is None
    assert len(silent.seen) == 1


@pytest.mark.parametrize("exploding_first", [True, False])
def test_a_raising_observer_neither_breaks_the_caller_nor_hides_the_event(
    exploding_first: bool,
) -> None:
    bad, good = Exploding(), Recorder(handle="handle")
    plugins: list[object] = [good, bad] if exploding_first else [bad, good]
    hooks = _hooks(*plugins)
    with structlog.testing.capture_logs() as logs:
        assert hooks.on_session(_event("start")) == "handle"
        hooks.on_session(_event("end"))
    assert bad.calls == 2
    assert [e.phase for e in good.seen] == ["start", "end"]
    failures = [entry for entry in logs if entry["event"] == "observer_failed"]
    assert len(failures) == 2
    assert {f["hook"] for f in failures} == {"tinkex_on_session"}
    assert "observer bug on start" in failures[0]["error"]
