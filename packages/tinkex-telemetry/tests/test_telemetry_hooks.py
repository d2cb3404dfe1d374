"""The hooks tinkex-telemetry implements for other packages: circuit-breaker transitions and
recovery steps reach its metrics exactly once through ``tinkex_on_circuit_breaker`` /
``tinkex_on_recovery``, and ``tinkex_setup_telemetry`` sets up OTel export for a process
that does not import tinkex-telemetry (``tinkex serve``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import tinkex_types
from tinkex_http import CircuitBreakerSettings, breakers
from tinkex_telemetry import TelemetryPlugin
from tinkex_telemetry import _plugin as plugin_module
from tinkex_types import CircuitBreakerEvent, RecoveryEvent

BASE = "http://127.0.0.1:9"
SETTINGS = CircuitBreakerSettings(enabled=True, failure_threshold=2, recovery_timeout=60.0)


def _sum(otel: Any, name: str, **attrs: Any) -> float:
    return float(
        sum(
            p.value
            for p in otel.metric_points().get(name, [])
            if all(p.attributes.get(k) == v for k, v in attrs.items())
        )
    )


@pytest.fixture
def module_hooks(otel: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tinkex_types.Hooks]:
    """The process-wide hooks with only the entry-point module of tinkex-telemetry, whose
    default plugin is the fixture's (in-memory providers): the set-up a client process has."""
    monkeypatch.setattr(plugin_module, "_default", otel.plugin)
    pm = tinkex_types.make_plugin_manager(
        load_entrypoints=False, defaults=False, plugins=[plugin_module]
    )
    hooks = tinkex_types.Hooks(pm)
    old = tinkex_types.set_hooks(hooks)
    breakers().reset()
    try:
        yield hooks
    finally:
        breakers().reset()
        tinkex_types.set_hooks(old)


def _open_a_breaker(family: str = "sampling") -> None:
    """Two failed attempts on a real breaker of the process-wide registry: closed -> open."""
    breaker = breakers().get(BASE, family, SETTINGS)
    for _ in range(2):
        breaker.before()
        breaker.failure("ConnectError: refused")
    assert breaker.state == "open"


def test_a_breaker_transition_reaches_the_metrics_once(module_hooks: Any, otel: Any) -> None:
    default = plugin_module.default_plugin()
    assert default is otel.plugin
    # the temporary registry subscription is gone: the hook is the only path
    assert default.on_circuit_breaker not in breakers()._listeners
    _open_a_breaker()
    transitions = "tinkex.circuit_breaker.transitions"
    assert _sum(otel, transitions) == 1
    assert _sum(otel, transitions, **{"tinkex.circuit_breaker.state": "open"}) == 1
    assert _sum(otel, transitions, **{"tinkex.circuit_breaker.family": "sampling"}) == 1


def test_a_recovery_event_reaches_the_metrics_once(module_hooks: Any, otel: Any) -> None:
    module_hooks.on_recovery(RecoveryEvent("run-1", "started", attempt=1, checkpoint="tinker://c"))
    module_hooks.on_recovery(RecoveryEvent("run-1", "completed", attempt=1, new_model_id="m-2"))
    assert _sum(otel, "tinkex.recovery.events") == 2
    assert _sum(otel, "tinkex.recovery.events", **{"tinkex.recovery.phase": "started"}) == 1
    assert _sum(otel, "tinkex.recovery.events", **{"tinkex.recovery.phase": "completed"}) == 1


def test_the_plugin_object_implements_the_hooks_too(otel: Any) -> None:
    """A TelemetryPlugin registered by hand (the ``otel`` fixture) gets the events once."""
    seen: list[str] = []
    unsubscribe = breakers().subscribe(lambda event: seen.append(event.state))
    breakers().reset()
    try:
        _open_a_breaker("rest")
    finally:
        unsubscribe()
        breakers().reset()
    otel.hooks.on_recovery(RecoveryEvent("run-2", "failed", attempt=3, error="boom"))
    assert seen == ["open"]  # the registry's own listeners still work
    assert _sum(otel, "tinkex.circuit_breaker.transitions") == 1
    assert _sum(otel, "tinkex.recovery.events", **{"tinkex.recovery.phase": "failed"}) == 1


def test_a_failing_telemetry_observer_never_reaches_the_breaker(
    module_hooks: Any, otel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(event: CircuitBreakerEvent) -> None:
        raise RuntimeError("metrics backend down")

    monkeypatch.setattr(otel.plugin, "on_circuit_breaker", broken)
    _open_a_breaker()  # the observer's error is logged and skipped
    assert breakers().states()[(BASE, "sampling")] == "open"


def test_setup_telemetry_hook_answers_false_when_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    pm = tinkex_types.make_plugin_manager(
        load_entrypoints=False, defaults=False, plugins=[plugin_module]
    )
    hooks = tinkex_types.Hooks(pm)
    assert hooks.setup_telemetry("tinkex-server", required=True) is False
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    for name in list(os.environ):
        if name.startswith(("OTEL_", "TINKEX_OTEL")):
            monkeypatch.delenv(name)
    assert hooks.setup_telemetry("tinkex-server", required=False) is False  # nothing asks


def test_setup_telemetry_hook_in_a_process_without_the_import(receiver: Any) -> None:
    """What ``tinkex serve --otel`` does: the hooks (entry points) set up export, the
    process never imports tinkex_telemetry itself."""
    script = textwrap.dedent(
        """
        import sys
        from opentelemetry import trace
        import tinkex_types

        assert "tinkex_telemetry" not in sys.modules
        hooks = tinkex_types.get_hooks()
        assert hooks.setup_telemetry("tinkex-server", required=True) is True
        assert hooks.setup_telemetry("tinkex-server", required=True) is True  # once
        provider = trace.get_tracer_provider()
        with trace.get_tracer("t").start_as_current_span("serve.boot"):
            pass
        assert provider.force_flush(10000)
        print(provider.resource.attributes["service.name"])
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TINKEX_"))}
    env.update(
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{receiver.url}/v1/traces",
        TINKEX_OTEL_SETUP="0",  # only required=True switches it on
        OTEL_METRICS_EXPORTER="none",
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "tinkex-server"
    names: list[str] = []
    for request in receiver.requests:
        if request.path == "/v1/traces":
            message = ExportTraceServiceRequest()
            message.ParseFromString(request.body)
            for resource_spans in message.resource_spans:
                for scope in resource_spans.scope_spans:
                    names.extend(span.name for span in scope.spans)
    assert names == ["serve.boot"]


def test_the_default_plugin_does_not_subscribe_to_the_breaker_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Built fresh, the entry point's default plugin leaves the registry alone: breaker
    changes reach it through ``tinkex_on_circuit_breaker`` only (else they would count twice)."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "TINKEX_OTEL")):
            monkeypatch.delenv(name)
    monkeypatch.setattr(plugin_module, "_default", None)
    listeners = list(breakers()._listeners)
    plugin = plugin_module.default_plugin()
    try:
        assert isinstance(plugin, TelemetryPlugin)
        assert breakers()._listeners == listeners
    finally:
        plugin.close(timeout=1)
