"""OTLP/HTTP export to a real receiver on 127.0.0.1 (up, down, and hanging)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tinkex_telemetry import OtelSetup, TelemetryPlugin, setup_otel_from_env


def _spans(receiver: Any) -> list[Any]:
    out = []
    for req in receiver.requests:
        if req.path == "/v1/traces":
            msg = ExportTraceServiceRequest.FromString(req.body)
            for rs in msg.resource_spans:
                for ss in rs.scope_spans:
                    out.extend(ss.spans)
    return out


def _resource_attrs(receiver: Any, path: str) -> dict[str, str]:
    for req in receiver.requests:
        if req.path == path:
            cls = ExportTraceServiceRequest if path == "/v1/traces" else ExportMetricsServiceRequest
            msg = cls.FromString(req.body)
            res = (msg.resource_spans if path == "/v1/traces" else msg.resource_metrics)[0].resource
            return {a.key: a.value.string_value for a in res.attributes}
    return {}


def _metric_names(receiver: Any) -> set[str]:
    names: set[str] = set()
    for req in receiver.requests:
        if req.path == "/v1/metrics":
            msg = ExportMetricsServiceRequest.FromString(req.body)
            for rm in msg.resource_metrics:
                for sm in rm.scope_metrics:
                    names.update(m.name for m in sm.metrics)
    return names


def _work(plugin: TelemetryPlugin, n: int = 1) -> int:
    """Operations with one traced HTTP attempt each; returns how many completed."""
    transport = plugin.tinkex_wrap_transport(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"ok": True})), config=None
    )
    done = 0
    with httpx.Client(transport=transport) as client:
        for i in range(n):
            with plugin.operation_span("forward_backward", {"model_id": "m-1", "seq_id": i}):
                assert client.post(
                    "http://tinker.test/api/v1/forward_backward", json={}
                ).json() == {"ok": True}
            done += 1
    return done


@pytest.fixture
def otlp_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)

    def point_at(url: str) -> None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)

    return point_at


def test_export_spans_and_metrics_to_receiver(
    receiver: Any, otlp_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    otlp_env(receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "tinkex-test")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")
    setup = setup_otel_from_env(set_global=False, export_timeout=5, metric_export_interval=60)
    try:
        plugin = TelemetryPlugin(
            tracer_provider=setup.tracer_provider, meter_provider=setup.meter_provider
        )
        assert _work(plugin, 3) == 3
        from tinkex_types import RequestEvent

        plugin.tinkex_on_request(
            event=RequestEvent("POST", "/api/v1/forward_backward", 0, 0.1, status_code=200)
        )
        assert setup.force_flush(10)
    finally:
        setup.shutdown()

    spans = _spans(receiver)
    ops = [s for s in spans if s.name == "forward_backward"]
    attempts = [s for s in spans if s.name == "POST /api/v1/forward_backward"]
    assert len(ops) == 3
    assert len(attempts) == 3
    op_ids = {bytes(s.span_id) for s in ops}
    assert {bytes(s.parent_span_id) for s in attempts} == op_ids
    assert _resource_attrs(receiver, "/v1/traces")["service.name"] == "tinkex-test"
    trace_req = next(r for r in receiver.requests if r.path == "/v1/traces")
    assert trace_req.headers["content-type"] == "application/x-protobuf"
    assert trace_req.headers["x-tenant"] == "acme"
    assert {"http.client.request.duration", "tinkex.operation.duration"} <= _metric_names(receiver)


def test_receiver_down_does_not_break_or_block_the_application(otlp_env: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    otlp_env(f"http://127.0.0.1:{port}")  # nothing listens there any more
    setup = setup_otel_from_env(set_global=False, export_timeout=0.5, schedule_delay=0.01)
    try:
        plugin = TelemetryPlugin(
            tracer_provider=setup.tracer_provider, meter_provider=setup.meter_provider
        )
        assert _work(plugin, 30) == 30
        setup.force_flush(2)
    finally:
        setup.shutdown()
    # The providers are shut down and the application carried on; spans after shutdown
    # are simply not recorded.
    assert _work(plugin, 1) == 1


def test_hanging_receiver_never_blocks_the_caller(receiver: Any, otlp_env: Any) -> None:
    receiver.hold = threading.Event()
    otlp_env(receiver.url)
    setup = setup_otel_from_env(
        set_global=False, metrics_enabled=False, export_timeout=20, schedule_delay=0.01
    )
    try:
        plugin = TelemetryPlugin(tracer_provider=setup.tracer_provider)
        assert _work(plugin, 1) == 1
        assert receiver.entered.wait(10), "the exporter thread is now stuck in the receiver"
        # While the export hangs, the application keeps running operations.
        assert _work(plugin, 20) == 20
        assert not receiver.hold.is_set()
        assert receiver.requests == []
        receiver.hold.set()
        assert setup.force_flush(10)
    finally:
        receiver.hold.set()
        setup.shutdown()
    assert len(_spans(receiver)) == 2 * 21


def test_env_switches(otlp_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    otlp_env("http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert setup_otel_from_env(set_global=False) == OtelSetup(None, None)
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    setup = setup_otel_from_env(set_global=False)
    try:
        assert setup.tracer_provider is None
        assert setup.meter_provider is not None
    finally:
        setup.shutdown()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")
    from tinkex_types import TinkexValidationError

    with pytest.raises(TinkexValidationError, match="OTEL_EXPORTER_OTLP_TIMEOUT"):
        setup_otel_from_env(set_global=False)


def test_entry_point_plugin_with_global_setup_in_a_fresh_process(
    receiver: Any, tmp_path: Any
) -> None:
    """The installed entry point switches telemetry on: global OTLP setup, spans through the
    default plugin, and the backend reporter flushed at interpreter exit."""
    script = textwrap.dedent(
        """
        import httpx, tinkex_types
        from tinkex_telemetry import setup_otel_from_env

        setup_otel_from_env()
        hooks = tinkex_types.get_hooks()
        names = [hooks.pm.get_name(p) for p in hooks.pm.get_plugins()]
        assert "telemetry" in names, names
        reporter = hooks.telemetry_sinks().get("backend")(session_id="sess-exit", config=None)
        transport = hooks.wrap_transport(httpx.MockTransport(lambda r: httpx.Response(200)), None)
        with httpx.Client(transport=transport) as client:
            with hooks.operation_span("sample", {"model_id": "m"}):
                client.post("http://tinker.test/api/v1/asample", json={})
        reporter.log("script_done", {"ok": True})
        print("done")
        # no explicit shutdown/close: the SDK and the reporter flush at exit
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TINKEX_", "TINKER_"))}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_SERVICE_NAME="tinkex-subprocess",
        OTEL_METRICS_EXPORTER="none",
        TINKEX_LOAD_PLUGINS="telemetry",
        TINKER_BASE_URL=receiver.url,
        TINKER_API_KEY="tml-subprocessKEY000000000",
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    names = {s.name for s in _spans(receiver)}
    assert {"sample", "POST /api/v1/asample"} <= names
    telemetry = [r for r in receiver.requests if r.path == "/api/v1/telemetry"]
    events = [e for r in telemetry for e in r.json()["events"]]
    assert [e["event"] for e in events] == ["SESSION_START", "GENERIC_EVENT", "SESSION_END"]
    assert telemetry[0].headers["x-api-key"] == "tml-subprocessKEY000000000"
    assert json.dumps(events).count("tml-") == 0


def test_disabled_by_env_in_a_fresh_process() -> None:
    script = textwrap.dedent(
        """
        import tinkex_types
        hooks = tinkex_types.get_hooks()
        names = [hooks.pm.get_name(p) for p in hooks.pm.get_plugins()]
        print("telemetry" in names, "backend" in hooks.telemetry_sinks())
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TINKEX_",))}
    env.update(TINKEX_LOAD_PLUGINS="telemetry", TINKEX_DISABLE_PLUGINS="telemetry")
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]
