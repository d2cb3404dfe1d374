"""The lead's plugin system: manager factory, registries, the Hooks facade, NOT_GIVEN."""

from __future__ import annotations

import contextlib
import copy
import pickle
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

import pytest

from tinkex_types import (
    DEFAULT_PLUGINS,
    NOT_GIVEN,
    CommandGroup,
    FutureEvent,
    Hooks,
    NotGiven,
    PluginError,
    QueueStateEvent,
    Registry,
    RegularizerEvent,
    RequestEvent,
    get_hooks,
    hookimpl,
    make_plugin_manager,
    set_hooks,
)


class TransportsA:
    @hookimpl
    def tinkex_register_transports(self, register: Any) -> None:
        register("memory", lambda **kw: "memory-transport")


class TransportsDup:
    @hookimpl
    def tinkex_register_transports(self, register: Any) -> None:
        register("memory", lambda **kw: "other")


class Wrapper:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    @hookimpl
    def tinkex_wrap_transport(self, transport: Any, config: Any) -> Any:
        return (self.tag, transport, config)


class PassWrapper:
    @hookimpl
    def tinkex_wrap_transport(self, transport: Any, config: Any) -> Any:
        return None


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    @hookimpl
    def tinkex_on_request(self, event: RequestEvent) -> None:
        self.seen.append(event)

    @hookimpl
    def tinkex_on_future(self, event: FutureEvent) -> None:
        self.seen.append(event)

    @hookimpl
    def tinkex_on_queue_state_change(self, event: QueueStateEvent) -> None:
        self.seen.append(event)

    @hookimpl
    def tinkex_on_regularizer(self, event: RegularizerEvent) -> None:
        self.seen.append(event)

    @hookimpl
    def tinkex_inject_headers(self, headers: dict[str, str]) -> None:
        headers["traceparent"] = "00-abc"


class Exploding:
    @hookimpl
    def tinkex_on_request(self, event: RequestEvent) -> None:
        raise RuntimeError("observer bug")

    @hookimpl
    def tinkex_on_queue_state_change(self, event: QueueStateEvent) -> None:
        raise RuntimeError("observer bug")


class Tokenizers:
    def __init__(self, known: str, result: str) -> None:
        self.known, self.result = known, result

    @hookimpl
    def tinkex_resolve_tokenizer(self, name: str) -> Any:
        return self.result if name == self.known else None


class Spans:
    def __init__(self) -> None:
        self.log: list[str] = []

    @hookimpl
    def tinkex_operation_span(self, operation: str, attributes: Any, carrier: Any) -> Any:
        @contextlib.contextmanager
        def span() -> Iterator[None]:
            self.log.append(f"enter {operation} {dict(attributes)}")
            yield
            self.log.append(f"exit {operation}")

        return span()


def _hooks(*plugins: object) -> Hooks:
    """A facade over exactly ``plugins`` (no built-ins, no entry points)."""
    return Hooks(make_plugin_manager(load_entrypoints=False, defaults=False, plugins=list(plugins)))


@pytest.fixture
def restore_hooks() -> Iterator[None]:
    old = set_hooks(None)
    yield
    set_hooks(old)


def test_registry_rejects_duplicates_and_lists_names() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("b", 2)
    reg.register("a", 1)
    with pytest.raises(PluginError, match="registered twice"):
        reg.register("a", 3)
    with pytest.raises(PluginError, match="non-empty"):
        reg.register("", 3)
    assert reg.names() == ["a", "b"]
    assert len(reg) == 2
    assert "a" in reg
    assert reg.get("b") == 2
    with pytest.raises(PluginError, match="registered: a, b"):
        reg.get("zzz")
    assert reg.items() == [("a", 1), ("b", 2)]


def test_transports_from_hand_written_plugins() -> None:
    hooks = _hooks(TransportsA())
    assert hooks.transports().get("memory")() == "memory-transport"
    with pytest.raises(PluginError, match="memory"):
        _hooks(TransportsA(), TransportsDup()).transports()


def test_unknown_hook_fails_at_once() -> None:
    class Typo:
        @hookimpl
        def tinkex_on_requestt(self, event: Any) -> None: ...

    with pytest.raises(Exception, match="tinkex_on_requestt"):
        make_plugin_manager(load_entrypoints=False, defaults=False, plugins=[Typo()])


def test_wrap_transport_chains_in_hook_call_order() -> None:
    first, second = Wrapper("first"), Wrapper("second")
    hooks = _hooks(first, PassWrapper(), second)
    assert hooks.has_transport_wrappers()
    wrapped = hooks.wrap_transport("base", "cfg")
    # pluggy calls the last registered first; every wrapper sees the previous result
    assert wrapped == ("first", ("second", "base", "cfg"), "cfg")
    assert _hooks().wrap_transport("base", None) == "base"
    assert not _hooks().has_transport_wrappers()


def test_observers_receive_events_and_raising_observers_do_not_break_callers() -> None:
    rec = Recorder()
    hooks = _hooks(rec, Exploding())
    req = RequestEvent(method="POST", path="/api/v1/x", attempt=0, duration_s=0.1)
    hooks.on_request(req)  # Exploding runs first (registered last) and raises: swallowed
    assert req in rec.seen  # ... and the other observers still see the event
    hooks.on_queue_state_change(
        QueueStateEvent(
            request_id="r", queue_state="paused_capacity", previous_state=None, reason=""
        )
    )
    fut = FutureEvent(request_id="r", outcome="resolved", duration_s=1.0, polls=2)
    hooks.on_future(fut)
    reg = RegularizerEvent(name="l2", phase="start")
    hooks.on_regularizer(reg)
    assert fut in rec.seen
    assert reg in rec.seen
    headers: dict[str, str] = {}
    hooks.inject_headers(headers)
    assert headers == {"traceparent": "00-abc"}
    _hooks().on_request(req)  # no observers: nothing happens


def test_resolve_tokenizer_first_result_wins() -> None:
    hooks = _hooks(Tokenizers("a", "tok-a"), Tokenizers("b", "tok-b"))
    assert hooks.resolve_tokenizer("a") == "tok-a"
    assert hooks.resolve_tokenizer("b") == "tok-b"
    assert hooks.resolve_tokenizer("c") is None


def test_operation_span_enters_every_manager() -> None:
    spans = Spans()
    hooks = _hooks(spans)
    with hooks.operation_span("forward_backward", {"model_id": "m"}):
        spans.log.append("body")
    assert spans.log == [
        "enter forward_backward {'model_id': 'm'}",
        "body",
        "exit forward_backward",
    ]
    with _hooks().operation_span("x"):
        pass


class FakeGroup:
    """A :class:`tinkex_types.CommandGroup` that records what was added."""

    def __init__(self) -> None:
        self.added: list[Any] = []

    def add_command(self, cmd: Any, name: str | None = None) -> None:
        self.added.append(name or cmd)


def test_register_commands_passes_the_cli() -> None:
    class Commands:
        @hookimpl
        def tinkex_register_commands(self, cli: CommandGroup) -> None:
            cli.add_command("hello")

    cli = FakeGroup()
    _hooks(Commands()).register_commands(cli)
    assert cli.added == ["hello"]


def _tinkex_entry_point_names() -> set[str]:
    return {ep.name for ep in entry_points(group="tinkex")}


def test_disable_plugins_env_blocks_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    names = _tinkex_entry_point_names()
    monkeypatch.setenv("TINKEX_DISABLE_PLUGINS", ",".join([*names, "ghost"]) + ", ")
    monkeypatch.delenv("TINKEX_LOAD_PLUGINS", raising=False)
    pm = make_plugin_manager(plugins=[Recorder()])
    for name in [*names, "ghost"]:
        assert pm.is_blocked(name)
    assert [p for p in pm.get_plugins() if not isinstance(p, Recorder)] == []


def test_load_plugins_env_allows_only_listed_besides_the_builtins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TINKEX_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("TINKEX_LOAD_PLUGINS", "none-such")
    pm = make_plugin_manager()
    builtins = {d.name for d in DEFAULT_PLUGINS}
    for name in _tinkex_entry_point_names() - builtins:
        assert pm.is_blocked(name)
    assert {pm.get_name(p) for p in pm.get_plugins()} == builtins
    assert make_plugin_manager(defaults=False).get_plugins() == set()


def test_get_and_set_hooks(restore_hooks: None, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = _hooks(TransportsA())
    set_hooks(mine)
    assert get_hooks() is mine
    assert set_hooks(None) is mine
    monkeypatch.setenv("TINKEX_LOAD_PLUGINS", "none-such")
    rebuilt = get_hooks()
    assert rebuilt is not mine
    assert get_hooks() is rebuilt


def test_not_given_sentinel() -> None:
    assert not NOT_GIVEN
    assert bool(NOT_GIVEN) is False
    assert repr(NOT_GIVEN) == "NOT_GIVEN"
    assert NotGiven() is NOT_GIVEN
    assert NOT_GIVEN is not None
    assert pickle.loads(pickle.dumps(NOT_GIVEN)) is NOT_GIVEN
    assert copy.deepcopy(NOT_GIVEN) is NOT_GIVEN
