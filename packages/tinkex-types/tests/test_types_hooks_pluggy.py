"""The facade calls through pluggy: each implementation receives only the arguments it
declares, ``wrapper=True`` implementations wrap calls, tracing sees them, and a raising
observer is logged and skipped. One ``test_hook_<name>`` per hook (the meta-test in
test_types_hookspecs_meta.py requires it), each with an implementation that declares fewer
arguments than its spec."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
import structlog

from tinkex_types import (
    CircuitBreakerEvent,
    FutureEvent,
    Hooks,
    QueueStateEvent,
    RecoveryEvent,
    RegularizerEvent,
    RequestEvent,
    SessionEvent,
    hookimpl,
    hookspecs,
    make_plugin_manager,
)

REQUEST = RequestEvent(method="POST", path="/api/v1/x", attempt=0, duration_s=0.1)
QUEUE = QueueStateEvent(
    request_id="r", queue_state="paused_capacity", previous_state=None, reason=""
)
FUTURE = FutureEvent(request_id="r", outcome="resolved", duration_s=1.0, polls=2)
REGULARIZER = RegularizerEvent(name="l2", phase="start")
SESSION = SessionEvent(session_id="sess-1", phase="start", base_url="local://")
BREAKER = CircuitBreakerEvent(
    family="sampling",
    base_url="http://127.0.0.1:8000",
    state="open",
    previous_state="closed",
    failures=5,
    reason="5 consecutive failures (last: HTTP 503)",
    retry_after_s=30.0,
)
RECOVERY = RecoveryEvent(run_id="run-1", phase="started", attempt=1, checkpoint="tinker://c")


class Config:
    base_url = "local://"


class FakeGroup:
    def __init__(self) -> None:
        self.added: list[Any] = []

    def add_command(self, cmd: Any, name: str | None = None) -> None:
        self.added.append(name or cmd)


def _hooks(*plugins: object) -> Hooks:
    return Hooks(make_plugin_manager(load_entrypoints=False, defaults=False, plugins=list(plugins)))


#: One facade call per hook: how tinkex packages reach it.
CALLS: dict[str, Callable[[Hooks], Any]] = {
    "tinkex_register_transports": lambda h: h.transports(),
    "tinkex_wrap_transport": lambda h: h.wrap_transport("base", Config()),  # type: ignore[arg-type]
    "tinkex_on_queue_state_change": lambda h: h.on_queue_state_change(QUEUE),
    "tinkex_on_request": lambda h: h.on_request(REQUEST),
    "tinkex_on_future": lambda h: h.on_future(FUTURE),
    "tinkex_on_session": lambda h: h.on_session(SESSION),
    "tinkex_on_regularizer": lambda h: h.on_regularizer(REGULARIZER),
    "tinkex_on_circuit_breaker": lambda h: h.on_circuit_breaker(BREAKER),
    "tinkex_on_recovery": lambda h: h.on_recovery(RECOVERY),
    "tinkex_setup_telemetry": lambda h: h.setup_telemetry("svc", required=False),
    "tinkex_operation_span": lambda h: h.operation_span("op").__enter__(),
    "tinkex_inject_headers": lambda h: h.inject_headers({}),
    "tinkex_register_regularizers": lambda h: h.regularizers(),
    "tinkex_register_telemetry_sinks": lambda h: h.telemetry_sinks(),
    "tinkex_resolve_tokenizer": lambda h: h.resolve_tokenizer("m"),
    "tinkex_register_commands": lambda h: h.register_commands(FakeGroup()),
}


def test_every_hook_has_a_facade_call() -> None:
    specs = {n for n in dir(hookspecs) if n.startswith("tinkex_")}
    assert set(CALLS) == specs


# -- fewer arguments than the spec, one test per hook -------------------------------------


class Bare:
    """Implements every hook with no argument at all: pluggy passes none."""

    def __init__(self) -> None:
        self.called: list[str] = []

    @hookimpl
    def tinkex_register_transports(self) -> None:
        self.called.append("tinkex_register_transports")

    @hookimpl
    def tinkex_on_queue_state_change(self) -> None:
        self.called.append("tinkex_on_queue_state_change")

    @hookimpl
    def tinkex_on_request(self) -> None:
        self.called.append("tinkex_on_request")

    @hookimpl
    def tinkex_on_future(self) -> None:
        self.called.append("tinkex_on_future")

    @hookimpl
    def tinkex_on_session(self) -> str:
        self.called.append("tinkex_on_session")
        return "handle"

    @hookimpl
    def tinkex_on_regularizer(self) -> None:
        self.called.append("tinkex_on_regularizer")

    @hookimpl
    def tinkex_on_circuit_breaker(self) -> None:
        self.called.append("tinkex_on_circuit_breaker")

    @hookimpl
    def tinkex_on_recovery(self) -> None:
        self.called.append("tinkex_on_recovery")

    @hookimpl
    def tinkex_setup_telemetry(self) -> bool:
        self.called.append("tinkex_setup_telemetry")
        return True

    @hookimpl
    def tinkex_inject_headers(self) -> None:
        self.called.append("tinkex_inject_headers")

    @hookimpl
    def tinkex_operation_span(self) -> None:
        self.called.append("tinkex_operation_span")

    @hookimpl
    def tinkex_register_regularizers(self) -> None:
        self.called.append("tinkex_register_regularizers")

    @hookimpl
    def tinkex_register_telemetry_sinks(self) -> None:
        self.called.append("tinkex_register_telemetry_sinks")

    @hookimpl
    def tinkex_resolve_tokenizer(self) -> str:
        self.called.append("tinkex_resolve_tokenizer")
        return "tokenizer"

    @hookimpl
    def tinkex_register_commands(self) -> None:
        self.called.append("tinkex_register_commands")


class Registers:
    """Full-signature implementations of the registration hooks."""

    @hookimpl
    def tinkex_register_transports(self, register: Any) -> None:
        register("memory", "memory-factory")

    @hookimpl
    def tinkex_register_regularizers(self, register: Any) -> None:
        register("mine", "regularizer-class")

    @hookimpl
    def tinkex_register_telemetry_sinks(self, register: Any) -> None:
        register("stdout", "sink-factory")

    @hookimpl
    def tinkex_register_commands(self, cli: Any) -> None:
        cli.add_command("hello")


def test_hook_tinkex_register_transports() -> None:
    bare = Bare()
    assert _hooks(bare, Registers()).transports().names() == ["memory"]
    assert bare.called == ["tinkex_register_transports"]


def test_hook_tinkex_wrap_transport() -> None:
    class TransportOnly:
        @hookimpl
        def tinkex_wrap_transport(self, transport: Any) -> Any:
            return ("transport-only", transport)

    class ConfigOnly:
        @hookimpl
        def tinkex_wrap_transport(self, config: Any) -> Any:
            return None if config is None else ("config-only", config.base_url)

    class Nothing:
        def __init__(self) -> None:
            self.calls = 0

        @hookimpl
        def tinkex_wrap_transport(self) -> None:
            self.calls += 1

    nothing = Nothing()
    hooks = _hooks(TransportOnly(), nothing)
    assert hooks.has_transport_wrappers()
    assert hooks.wrap_transport("base", Config()) == ("transport-only", "base")  # type: ignore[arg-type]
    assert nothing.calls == 1
    # chained in hook-call order (the last registered is called first, so wraps innermost)
    chained = _hooks(TransportOnly(), ConfigOnly())
    assert chained.wrap_transport("base", Config()) == (
        "transport-only",
        ("config-only", "local://"),
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("hook", "call"),
    [
        ("tinkex_on_queue_state_change", lambda h: h.on_queue_state_change(QUEUE)),
        ("tinkex_on_request", lambda h: h.on_request(REQUEST)),
        ("tinkex_on_future", lambda h: h.on_future(FUTURE)),
        ("tinkex_on_regularizer", lambda h: h.on_regularizer(REGULARIZER)),
        ("tinkex_on_circuit_breaker", lambda h: h.on_circuit_breaker(BREAKER)),
        ("tinkex_on_recovery", lambda h: h.on_recovery(RECOVERY)),
        ("tinkex_inject_headers", lambda h: h.inject_headers({})),
    ],
)
def test_observers_without_arguments_are_called(hook: str, call: Callable[[Hooks], Any]) -> None:
    bare = Bare()
    assert call(_hooks(bare)) is None
    assert bare.called == [hook]


def test_hook_tinkex_on_queue_state_change() -> None:
    bare = Bare()
    _hooks(bare).on_queue_state_change(QUEUE)
    assert bare.called == ["tinkex_on_queue_state_change"]


def test_hook_tinkex_on_request() -> None:
    bare = Bare()
    _hooks(bare).on_request(REQUEST)
    assert bare.called == ["tinkex_on_request"]


def test_hook_tinkex_on_future() -> None:
    bare = Bare()
    _hooks(bare).on_future(FUTURE)
    assert bare.called == ["tinkex_on_future"]


def test_hook_tinkex_on_regularizer() -> None:
    bare = Bare()
    _hooks(bare).on_regularizer(REGULARIZER)
    assert bare.called == ["tinkex_on_regularizer"]


def test_hook_tinkex_on_circuit_breaker() -> None:
    class StateOnly:
        def __init__(self) -> None:
            self.seen: list[tuple[str, str, str]] = []

        @hookimpl
        def tinkex_on_circuit_breaker(self, event: CircuitBreakerEvent) -> None:
            self.seen.append((event.family, event.previous_state, event.state))

    bare, full = Bare(), StateOnly()
    _hooks(bare, full).on_circuit_breaker(BREAKER)
    assert bare.called == ["tinkex_on_circuit_breaker"]
    assert full.seen == [("sampling", "closed", "open")]


def test_hook_tinkex_on_recovery() -> None:
    class PhaseOnly:
        def __init__(self) -> None:
            self.seen: list[tuple[str, str, int]] = []

        @hookimpl
        def tinkex_on_recovery(self, event: RecoveryEvent) -> None:
            self.seen.append((event.run_id, event.phase, event.attempt))

    bare, full = Bare(), PhaseOnly()
    _hooks(bare, full).on_recovery(RECOVERY)
    assert bare.called == ["tinkex_on_recovery"]
    assert full.seen == [("run-1", "started", 1)]


def test_hook_tinkex_setup_telemetry() -> None:
    class ServiceOnly:
        def __init__(self) -> None:
            self.names: list[str] = []

        @hookimpl
        def tinkex_setup_telemetry(self, service_name: str) -> None:
            self.names.append(service_name)  # passes: None

    class RequiredOnly:
        @hookimpl
        def tinkex_setup_telemetry(self, required: bool) -> bool:
            return required

    service_only = ServiceOnly()
    # no implementation: nothing is set up
    assert _hooks().setup_telemetry("tinkex-server", required=True) is False
    # None passes on to the next implementation; the first non-None result wins
    hooks = _hooks(RequiredOnly(), service_only)
    assert hooks.setup_telemetry("tinkex-server", required=True) is True
    assert hooks.setup_telemetry("tinkex-server", False) is False
    assert service_only.names == ["tinkex-server", "tinkex-server"]
    bare = Bare()
    assert _hooks(bare).setup_telemetry("svc") is True
    assert bare.called == ["tinkex_setup_telemetry"]


def test_the_new_hooks_are_observers_except_setup() -> None:
    assert {"tinkex_on_circuit_breaker", "tinkex_on_recovery"} <= hookspecs.OBSERVER_HOOKS
    assert "tinkex_setup_telemetry" not in hookspecs.OBSERVER_HOOKS


def test_hook_tinkex_on_session() -> None:
    bare = Bare()
    assert _hooks(bare).on_session(SESSION) == "handle"
    assert bare.called == ["tinkex_on_session"]


def test_hook_tinkex_inject_headers() -> None:
    class HeadersOnly:
        @hookimpl
        def tinkex_inject_headers(self, headers: dict[str, str]) -> None:
            headers["x-team"] = "research"

    bare = Bare()
    headers: dict[str, str] = {}
    _hooks(bare, HeadersOnly()).inject_headers(headers)
    assert headers == {"x-team": "research"}
    assert bare.called == ["tinkex_inject_headers"]


def test_hook_tinkex_operation_span() -> None:
    log: list[str] = []

    class OperationOnly:
        @hookimpl
        def tinkex_operation_span(self, operation: str) -> Any:
            @contextlib.contextmanager
            def span() -> Iterator[None]:
                log.append(f"enter {operation}")
                yield
                log.append(f"exit {operation}")

            return span()

    class CarrierOnly:
        @hookimpl
        def tinkex_operation_span(self, carrier: Any) -> None:
            log.append(f"carrier {carrier}")

    with _hooks(OperationOnly(), CarrierOnly()).operation_span("sample", carrier={"a": "b"}):
        log.append("body")
    assert log == ["carrier {'a': 'b'}", "enter sample", "body", "exit sample"]


def test_hook_tinkex_register_regularizers() -> None:
    bare = Bare()
    assert _hooks(bare, Registers()).regularizers().items() == [("mine", "regularizer-class")]
    assert bare.called == ["tinkex_register_regularizers"]


def test_hook_tinkex_register_telemetry_sinks() -> None:
    bare = Bare()
    assert _hooks(bare, Registers()).telemetry_sinks().names() == ["stdout"]
    assert bare.called == ["tinkex_register_telemetry_sinks"]


def test_hook_tinkex_resolve_tokenizer() -> None:
    bare = Bare()
    assert _hooks(bare).resolve_tokenizer("any-model") == "tokenizer"
    assert bare.called == ["tinkex_resolve_tokenizer"]


def test_hook_tinkex_register_commands() -> None:
    bare, cli = Bare(), FakeGroup()
    _hooks(bare, Registers()).register_commands(cli)
    assert cli.added == ["hello"]
    assert bare.called == ["tinkex_register_commands"]


# -- wrappers --------------------------------------------------------------------------


class Wrappers:
    def __init__(self) -> None:
        self.log: list[Any] = []

    @hookimpl(wrapper=True)
    def tinkex_resolve_tokenizer(self, name: str) -> Generator[None, Any, Any]:
        result = yield
        return result if result is not None else f"fallback-for-{name}"

    @hookimpl(wrapper=True)
    def tinkex_on_request(self) -> Generator[None, Any, Any]:
        self.log.append("before")
        results = yield
        self.log.append(("after", results))
        return results

    @hookimpl(wrapper=True)
    def tinkex_wrap_transport(self, transport: Any) -> Generator[None, Any, Any]:
        self.log.append(("wrap step", transport))
        return (yield)

    @hookimpl(wrapper=True)
    def tinkex_register_transports(self, register: Any) -> Generator[None, Any, Any]:
        result = yield
        register("added-by-wrapper", "factory")
        return result


class Exploding:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def tinkex_on_request(self, event: RequestEvent) -> None:
        self.calls += 1
        raise RuntimeError("observer bug")


class Counting:
    def __init__(self) -> None:
        self.events: list[Any] = []

    @hookimpl
    def tinkex_on_request(self, event: RequestEvent) -> str:
        self.events.append(event)
        return "seen"


def test_a_wrapper_wraps_facade_calls() -> None:
    wrappers = Wrappers()
    hooks = _hooks(wrappers, Registers())
    assert hooks.resolve_tokenizer("m") == "fallback-for-m"
    assert hooks.transports().names() == ["added-by-wrapper", "memory"]
    counting, exploding = Counting(), Exploding()
    hooks = _hooks(wrappers, counting, exploding)
    with structlog.testing.capture_logs() as logs:
        hooks.on_request(REQUEST)
    # the raising observer is isolated inside the one pluggy call the wrapper wraps
    assert wrappers.log == ["before", ("after", ["seen"])]
    assert counting.events == [REQUEST]
    assert exploding.calls == 1
    assert [e["event"] for e in logs] == ["observer_failed"]


def test_a_wrapper_of_wrap_transport_sees_every_step() -> None:
    class Outer:
        @hookimpl
        def tinkex_wrap_transport(self, transport: Any) -> Any:
            return ("outer", transport)

    class Inner:
        @hookimpl
        def tinkex_wrap_transport(self, transport: Any) -> Any:
            return ("inner", transport)

    wrappers = Wrappers()
    hooks = _hooks(wrappers, Outer(), Inner())
    assert hooks.has_transport_wrappers()
    assert hooks.wrap_transport("base", Config()) == ("outer", ("inner", "base"))  # type: ignore[arg-type]
    assert wrappers.log == [("wrap step", "base"), ("wrap step", ("inner", "base"))]
    assert not _hooks(wrappers).has_transport_wrappers()


# -- tracing ---------------------------------------------------------------------------


def test_hook_call_monitoring_sees_every_facade_call() -> None:
    pm = make_plugin_manager(load_entrypoints=False, defaults=False, plugins=[Bare(), Registers()])
    seen: list[tuple[str, dict[str, Any]]] = []
    undo = pm.add_hookcall_monitoring(
        lambda name, impls, kwargs: seen.append((name, dict(kwargs))),
        lambda outcome, name, impls, kwargs: None,
    )
    hooks = Hooks(pm)
    for call in CALLS.values():
        call(hooks)
    undo()
    hooks.on_request(REQUEST)
    names = [name for name, _ in seen]
    # wrap_transport is one pluggy call per wrapping plugin; Bare has none
    assert sorted(set(names)) == sorted(set(CALLS) - {"tinkex_wrap_transport"})
    assert ("tinkex_on_request", {"event": REQUEST}) in seen
    assert names.count("tinkex_on_request") == 1  # nothing after undo()


def test_pm_trace_writes_facade_calls() -> None:
    pm = make_plugin_manager(load_entrypoints=False, defaults=False, plugins=[Counting()])
    lines: list[str] = []
    pm.trace.root.setwriter(lines.append)
    undo = pm.enable_tracing()
    try:
        Hooks(pm).on_request(REQUEST)
    finally:
        undo()
    text = "".join(lines)
    assert "tinkex_on_request" in text
    assert "finish tinkex_on_request" in text


# -- isolation of every observer hook ------------------------------------------------------


def _raising_plugin(hook: str) -> object:
    def boom(self: object) -> None:
        raise RuntimeError(f"{hook} bug")

    return type(f"Raising_{hook}", (), {hook: hookimpl(boom)})()


@pytest.mark.parametrize("hook", sorted(hookspecs.OBSERVER_HOOKS))
@pytest.mark.parametrize("raising_first", [True, False])
def test_a_raising_observer_is_logged_and_skipped(hook: str, raising_first: bool) -> None:
    bare, bad = Bare(), _raising_plugin(hook)
    hooks = _hooks(*([bare, bad] if raising_first else [bad, bare]))
    with structlog.testing.capture_logs() as logs:
        CALLS[hook](hooks)
    assert bare.called == [hook]
    failures = [e for e in logs if e["event"] == "observer_failed"]
    assert len(failures) == 1
    assert failures[0]["hook"] == hook
    assert f"{hook} bug" in failures[0]["error"]


def test_a_raising_non_observer_propagates() -> None:
    class Broken:
        @hookimpl
        def tinkex_resolve_tokenizer(self) -> None:
            raise RuntimeError("resolver bug")

    with pytest.raises(RuntimeError, match="resolver bug"):
        _hooks(Broken()).resolve_tokenizer("m")


def test_observers_registered_later_are_isolated_too() -> None:
    pm = make_plugin_manager(load_entrypoints=False, defaults=False)
    bad, counting = Exploding(), Counting()
    pm.register(counting)
    pm.register(bad)
    with structlog.testing.capture_logs():
        Hooks(pm).on_request(REQUEST)
    pm.unregister(bad)
    pm.register(bad)  # a new HookImpl: isolated again
    with structlog.testing.capture_logs() as logs:
        Hooks(pm).on_request(REQUEST)
    assert counting.events == [REQUEST, REQUEST]
    assert bad.calls == 2
    assert len(logs) == 1


def test_a_hand_built_manager_gets_its_observers_isolated_by_the_facade() -> None:
    import pluggy

    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    bad, counting = Exploding(), Counting()
    pm.register(counting)
    pm.register(bad)
    hooks = Hooks(pm)
    with structlog.testing.capture_logs() as logs:
        hooks.on_request(REQUEST)
    assert counting.events == [REQUEST]
    assert bad.calls == 1
    assert [e["event"] for e in logs] == ["observer_failed"]
