"""Zero-code OpenTelemetry: a client process configured by ``OTEL_*`` variables only.

The client script has no telemetry code at all: it trains one step on ``local://`` (the
real in-process server, a data directory of its own) and exits. The in-process OTLP/HTTP
receiver (``receiver`` fixture) must get its spans and metrics.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tinkex_telemetry import export_requested

CLIENT = textwrap.dedent(
    """
    import sys
    import tinkex_clients
    from tinkex_types import AdamParams, Datum, ModelInput

    tokens = [10 + (j * 3) % 11 for j in range(12)]
    datum = Datum(
        model_input=ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * 11},
    )
    with tinkex_clients.ServiceClient(base_url="local://" + sys.argv[1]) as service:
        tc = service.create_lora_training_client("tinkex/tiny-llama-100k", rank=4, seed=1)
        tc.forward_backward([datum], "cross_entropy").result(120)
        tc.optim_step(AdamParams(learning_rate=1e-3)).result(120)
    print("done")
    """
)


CLIENT_KIND = 3  # opentelemetry.proto Span.SpanKind.SPAN_KIND_CLIENT


def _run_client(env_extra: dict[str, str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TINKEX_", "TINKER_"))}
    env.update(
        TINKEX_LOAD_PLUGINS="telemetry",
        TINKER_TELEMETRY="0",
        OMP_NUM_THREADS="1",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_METRIC_EXPORT_INTERVAL="60000",
    )
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-c", CLIENT, str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _spans(receiver: Any) -> list[Any]:
    out = []
    for req in receiver.requests:
        if req.path == "/v1/traces":
            msg = ExportTraceServiceRequest.FromString(req.body)
            for rs in msg.resource_spans:
                service = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    out.extend((service, span) for span in ss.spans)
    return out


def _metrics(receiver: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for req in receiver.requests:
        if req.path == "/v1/metrics":
            msg = ExportMetricsServiceRequest.FromString(req.body)
            for rm in msg.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        out[metric.name] = metric
    return out


def _attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = (
            value.string_value
            if value.HasField("string_value")
            else value.int_value
            if value.HasField("int_value")
            else value.bool_value
        )
    return out


def test_client_exports_with_environment_variables_only(receiver: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc = _run_client(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "zero-code-client",
        },
        data_dir,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"  # nothing else on stdout

    spans = _spans(receiver)
    assert spans, "no span exported"
    assert {service["service.name"] for service, _ in spans} == {"zero-code-client"}
    names = {span.name for _, span in spans}
    assert {"create_lora_training_client", "forward_backward", "optim_step"} <= names
    assert "POST /api/v1/forward_backward" in names
    by_id = {bytes(span.span_id): span for _, span in spans}
    checked = 0
    for _, span in spans:
        attrs = _attrs(span)
        assert str(data_dir) not in repr(attrs), span.name
        if span.name == "POST /api/v1/forward_backward" and span.kind == CLIENT_KIND:
            assert attrs["server.address"] == "local", attrs
            assert attrs["url.template"] == "/api/v1/forward_backward"
            assert attrs["http.request.method"] == "POST"
            assert attrs["http.response.status_code"] == 200
            parent = by_id[bytes(span.parent_span_id)]
            assert parent.name == "forward_backward"
        if span.kind == CLIENT_KIND:
            assert "telemetry" not in span.name
            assert "heartbeat" not in span.name
            checked += 1
    assert checked >= 5

    metrics = _metrics(receiver)
    duration = metrics["http.client.request.duration"]
    assert duration.unit == "s"
    templates = {
        kv.value.string_value
        for point in duration.histogram.data_points
        for kv in point.attributes
        if kv.key == "url.template"
    }
    assert "/api/v1/forward_backward" in templates


def test_sdk_disabled_exports_nothing(receiver: Any, tmp_path: Path) -> None:
    proc = _run_client(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SDK_DISABLED": "true"},
        tmp_path / "data",
    )
    assert proc.returncode == 0, proc.stderr
    assert receiver.requests == []


def test_export_requested_reads_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("OTEL_", "TINKEX_OTEL")):
            monkeypatch.delenv(name)
    assert not export_requested()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not export_requested()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert export_requested()
    monkeypatch.delenv("OTEL_TRACES_EXPORTER")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:1/v1/traces")
    assert export_requested()
    monkeypatch.setenv("TINKEX_OTEL_SETUP", "0")
    assert not export_requested()
    monkeypatch.setenv("TINKEX_OTEL_SETUP", "1")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not export_requested()


def test_an_application_provider_wins(receiver: Any, tmp_path: Path) -> None:
    """A provider the application set first is used; nothing is installed over it."""
    script = textwrap.dedent(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

        import tinkex_types
        from tinkex_telemetry import setup_from_env
        hooks = tinkex_types.get_hooks()
        with hooks.operation_span("sample", {}):
            pass
        assert trace.get_tracer_provider() is provider
        assert setup_from_env().tracer_provider is None
        print(sorted(s.name for s in exporter.get_finished_spans()))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TINKEX_"))}
    env.update(
        TINKEX_LOAD_PLUGINS="telemetry",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_METRICS_EXPORTER="none",
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['sample']"
    assert [r for r in receiver.requests if r.path == "/v1/traces"] == []


def test_bad_protocol_is_a_warning_not_a_crash(receiver: Any, tmp_path: Path) -> None:
    proc = _run_client(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
        tmp_path / "data",
    )
    assert proc.returncode == 0, proc.stderr
    assert "OTEL_EXPORTER_OTLP_PROTOCOL" in proc.stderr
    assert receiver.requests == []


def test_auto_setup_for_a_server_process(receiver: Any) -> None:
    """What the server's start-up hook will call: required=True (``--otel``) installs even
    without OTEL_* variables asking; the service name is the caller's unless the
    environment names one."""
    script = textwrap.dedent(
        """
        from opentelemetry import trace
        from tinkex_telemetry._autosetup import auto_setup

        assert auto_setup("tinkex-server") is None  # nothing asks for export
        setup = auto_setup("tinkex-server", required=True)
        assert setup is not None and setup.tracer_provider is not None
        with trace.get_tracer("t").start_as_current_span("boot"):
            pass
        assert setup.force_flush(10)
        print(setup.tracer_provider.resource.attributes["service.name"])
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TINKEX_"))}
    env.update(
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{receiver.url}/v1/traces",
        TINKEX_OTEL_SETUP="0",  # the environment alone does not switch it on here
        OTEL_METRICS_EXPORTER="none",
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "tinkex-server"
    names = [span.name for _, span in _spans(receiver)]
    assert names == ["boot"]
