"""Zero-code OpenTelemetry across processes: ``tinkex serve`` as a subprocess and a client
process, both configured by the standard ``OTEL_*`` variables only (no telemetry code,
no ``--otel``), export to one in-process OTLP/HTTP receiver.

Checked: one trace per client operation holding the client's spans, exactly one server
span per HTTP request (FastAPI's own telemetry does not add a second), named
``{method} {route}`` with the stable HTTP server attributes, the engine/queue spans as its
children; no data-directory path anywhere; health checks start no trace; ``--otel`` with
the telemetry plugin blocked is a clear error naming the package.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tinkex_server.testing import ServeProcess

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
    with tinkex_clients.ServiceClient(base_url=sys.argv[1], api_key="tml-zero-code") as sc:
        tc = sc.create_lora_training_client("tinkex/tiny-llama-100k", rank=4, seed=1)
        tc.forward_backward([datum], "cross_entropy").result(120)
        tc.optim_step(AdamParams(learning_rate=1e-3)).result(120)
    print("done")
    """
)

SERVER_KIND = 2  # opentelemetry.proto Span.SpanKind.SPAN_KIND_SERVER
CLIENT_KIND = 3
STATUS_ERROR = 2
#: The stable HTTP server attributes every server span carries.
REQUIRED = (
    "http.request.method",
    "http.route",
    "http.response.status_code",
    "url.path",
    "url.scheme",
    "server.address",
    "server.port",
    "network.protocol.version",
)
DEPRECATED = ("http.method", "http.path", "http.url", "http.target", "http.status_code")


def _env(receiver: Any, service: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TINKEX_", "TINKER_"))}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_SERVICE_NAME=service,
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_METRIC_EXPORT_INTERVAL="60000",
        TINKER_TELEMETRY="0",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def _start_server(env: dict[str, str], data_dir: Path, *extra: str) -> tuple[ServeProcess, str]:
    flags = ("--torch-threads", "1", "--log-level", "warning", *extra)
    server = ServeProcess(data_dir, *flags, env=env, wait_healthy=False)
    return server, server.url


def _stop(server: ServeProcess) -> None:
    """Ctrl-C: uvicorn shuts down gracefully and re-raises the signal, the interpreter
    exits through its atexit hooks (where the telemetry providers flush)."""
    code = server.stop(timeout=60, sig=signal.SIGINT)
    assert code in (0, 1, -signal.SIGINT, 130), server.output()
    assert "Traceback" not in server.output(), server.output()


def _spans(receiver: Any) -> list[tuple[str, Any]]:
    out = []
    for req in receiver.requests:
        if req.path == "/v1/traces":
            msg = ExportTraceServiceRequest.FromString(req.body)
            for rs in msg.resource_spans:
                service = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    out.extend((service["service.name"], span) for span in ss.spans)
    return out


def _attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


def test_serve_and_client_export_one_tree_with_environment_variables_only(
    receiver: Any, tmp_path: Path
) -> None:
    data_dir = tmp_path / "server-data"
    server, url = _start_server(_env(receiver, "e2e-server"), data_dir)
    try:
        assert httpx.get(f"{url}/api/v1/healthz", timeout=30).status_code == 200
        client = subprocess.run(
            [sys.executable, "-c", CLIENT, url],
            env=_env(receiver, "e2e-client"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert client.returncode == 0, client.stderr
        assert client.stdout.strip() == "done"
    finally:
        _stop(server)

    spans = _spans(receiver)
    by_id = {bytes(s.span_id): (svc, s) for svc, s in spans}
    server_spans = [s for svc, s in spans if svc == "e2e-server" and s.kind == SERVER_KIND]
    client_http = [s for svc, s in spans if svc == "e2e-client" and s.kind == CLIENT_KIND]
    assert server_spans, "the server exported no server span"
    assert client_http, "the client exported no client span"

    # No data-directory path anywhere, in any process's spans.
    for _, span in spans:
        assert str(data_dir) not in repr(span), span.name

    # Health checks (no incoming trace) start no trace.
    assert not [s for s in server_spans if "healthz" in s.name]

    # Exactly one server span per client request: each client HTTP span has one server
    # child, and no server span has a server-span parent (no doubling).
    children: dict[bytes, list[Any]] = defaultdict(list)
    for span in server_spans:
        children[bytes(span.parent_span_id)].append(span)
        parent = by_id.get(bytes(span.parent_span_id))
        assert parent is not None, f"{span.name} has no parent in the export"
        assert parent[0] == "e2e-client", span.name
        assert parent[1].kind == CLIENT_KIND, span.name
    for http_span in client_http:
        got = children.get(bytes(http_span.span_id), [])
        assert len(got) == 1, (http_span.name, [s.name for s in got])
        if "{" not in http_span.name:  # the client templates ids its own way
            assert got[0].name == http_span.name  # POST /api/v1/... on both sides
        assert got[0].name.split()[0] == http_span.name.split()[0]
        assert got[0].trace_id == http_span.trace_id

    # Names and attributes by the HTTP semantic conventions.
    for span in server_spans:
        attrs = _attrs(span)
        for key in REQUIRED:
            assert key in attrs, (span.name, key, attrs)
        for key in DEPRECATED:
            assert key not in attrs, (span.name, key)
        assert span.name == f"{attrs['http.request.method']} {attrs['http.route']}"
        assert attrs["url.scheme"] == "http"
        assert attrs["server.address"] == "127.0.0.1"
        assert attrs["server.port"] == int(url.rsplit(":", 1)[1])
        assert attrs["network.protocol.version"] == "1.1"
        assert attrs["http.route"].startswith("/api/v1/")
        assert attrs["tinkex.operation"].startswith("server.")
        if attrs["http.response.status_code"] < 500:
            assert "error.type" not in attrs
            assert span.status.code != STATUS_ERROR
    names = {s.name for s in server_spans}
    assert {"POST /api/v1/create_model", "POST /api/v1/forward_backward"} <= names
    assert "POST /api/v1/retrieve_future" in names

    # One trace per client operation: the forward_backward operation's trace holds its
    # client spans, the server span of its request and the engine spans under that.
    op = next(s for svc, s in spans if svc == "e2e-client" and s.name == "forward_backward")
    trace = [(svc, s) for svc, s in spans if s.trace_id == op.trace_id]
    fb_server = [s for svc, s in trace if s.name == "POST /api/v1/forward_backward"]
    assert len([s for s in fb_server if s.kind == SERVER_KIND]) == 1
    server_fb = next(s for s in fb_server if s.kind == SERVER_KIND)
    engine = [s for svc, s in trace if svc == "e2e-server" and s.name == "server.engine_step"]
    queue = [s for svc, s in trace if svc == "e2e-server" and s.name == "server.queue_wait"]
    assert engine, [s.name for _, s in trace]
    assert queue, [s.name for _, s in trace]
    for span in engine + queue:
        assert bytes(span.parent_span_id) == bytes(server_fb.span_id), span.name
    # The server's request metric, by route template.
    routes = set()
    for req in receiver.requests:
        if req.path == "/v1/metrics":
            msg = ExportMetricsServiceRequest.FromString(req.body)
            for rm in msg.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        if metric.name == "http.server.request.duration":
                            assert metric.unit == "s"
                            for point in metric.histogram.data_points:
                                routes |= {
                                    kv.value.string_value
                                    for kv in point.attributes
                                    if kv.key == "http.route"
                                }
    assert "/api/v1/forward_backward" in routes
    other_ops = {"create_lora_training_client", "optim_step"}
    assert not [s for _, s in trace if s.name in other_ops]  # each operation its own trace


def test_otel_flag_without_the_plugin_names_the_package(receiver: Any, tmp_path: Path) -> None:
    env = _env(receiver, "e2e-server")
    env["TINKEX_DISABLE_PLUGINS"] = "telemetry"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "tinkex_server", "serve", "--port", "0", "--otel"),
            *("--data-dir", str(tmp_path / "d")),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "install tinkex-telemetry" in proc.stderr
    assert "listening on" not in proc.stdout


def test_otel_flag_exports_without_otel_variables_asking(receiver: Any, tmp_path: Path) -> None:
    """``--otel`` switches export on even when the environment alone would not
    (``TINKEX_OTEL_SETUP=0``); the service is ``tinkex-server`` when unnamed."""
    env = _env(receiver, "unused")
    del env["OTEL_SERVICE_NAME"]
    env["TINKEX_OTEL_SETUP"] = "0"
    env["OTEL_METRICS_EXPORTER"] = "none"
    server, url = _start_server(env, tmp_path / "d", "--otel")
    try:
        r = httpx.get(f"{url}/api/v1/get_server_capabilities", timeout=30)
        assert r.status_code == 200
    finally:
        _stop(server)
    spans = _spans(receiver)
    assert [(svc, s.name) for svc, s in spans] == [
        ("tinkex-server", "GET /api/v1/get_server_capabilities")
    ]
    attrs = _attrs(spans[0][1])
    assert attrs["http.response.status_code"] == 200
    assert attrs["client.address"] == "127.0.0.1"
