"""Fixtures of the tinkex-telemetry tests: in-memory OpenTelemetry, hooks, a loopback receiver."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tinkex_types
from tinkex_telemetry import TelemetryPlugin

API_KEY = "tml-TESTSECRETkey0123456789abcdef"
CF_SECRET = "cf-secret-value-0123456789"


@dataclass
class Otel:
    plugin: TelemetryPlugin
    hooks: tinkex_types.Hooks
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, f"{name}: {[s.name for s in self.spans()]}"
        return found[0]

    def metric_points(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out.setdefault(metric.name, []).extend(metric.data.data_points)
        return out

    def metrics(self) -> dict[str, Any]:
        data = self.reader.get_metrics_data()
        out: dict[str, Any] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out[metric.name] = metric
        return out


@dataclass
class FakeConfig:
    """Stands in for ``tinkex_http.Config`` (only the fields the plugin reads)."""

    api_key: str = API_KEY
    cf_access_client_id: str | None = "cf-id"
    cf_access_client_secret: str | None = CF_SECRET
    base_url: str = "http://tinker.test"
    sdk_version: str = "0.16.1"
    telemetry_enabled: bool = True
    proxy: str | None = None


@pytest.fixture
def fake_config() -> FakeConfig:
    return FakeConfig()


@pytest.fixture
def secrets() -> tuple[str, str]:
    """(API key, Cloudflare secret) used by the fake configuration."""
    return API_KEY, CF_SECRET


@pytest.fixture
def otel() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    plugin = TelemetryPlugin(tracer_provider=tracer_provider, meter_provider=meter_provider)
    pm = tinkex_types.make_plugin_manager(load_entrypoints=False, plugins=[plugin])
    hooks = tinkex_types.Hooks(pm)
    old = tinkex_types.set_hooks(hooks)
    try:
        yield Otel(plugin, hooks, exporter, reader, tracer_provider, meter_provider)
    finally:
        tinkex_types.set_hooks(old)
        plugin.close(timeout=2)
        tracer_provider.shutdown()
        meter_provider.shutdown()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A loopback HTTP server that records requests and answers from a script."""

    server: http.server.ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    default_status: int = 200
    hold: threading.Event | None = None
    entered: threading.Event = field(default_factory=threading.Event)
    got_request: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        with self.got_request:
            return self.got_request.wait_for(lambda: len(self.requests) >= count, timeout)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box: dict[str, Receiver] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            rec = box["r"]
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            rec.entered.set()
            if rec.hold is not None:
                rec.hold.wait(30)
            with rec.got_request:
                status = rec.statuses.pop(0) if rec.statuses else rec.default_status
                rec.requests.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                rec.got_request.notify_all()
            payload = b'{"status": "accepted"}' if status < 300 else b'{"error": "nope"}'
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec = Receiver(server)
    box["r"] = rec
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        if rec.hold is not None:
            rec.hold.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
