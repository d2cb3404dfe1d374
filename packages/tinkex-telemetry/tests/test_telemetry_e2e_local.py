"""End to end: one training step through ``ServiceClient(base_url="local://")`` with the
telemetry plugin on in-memory OpenTelemetry providers.

Checks the span tree (client operation → HTTP attempt → server span ``POST /api/v1/<endpoint>``
(operation ``server.<endpoint>``) →
``server.queue_wait`` / ``server.engine_step``, one trace), the metric points, and that no
span holds the API key. The real in-process local server of tinkex-server answers; a fresh
one per test, in a temporary data directory, closed afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import tinkex_clients._plugin as clients_plugin
import tinkex_http._plugin as http_plugin
import tinkex_server._plugin as server_plugin
import tinkex_types
from tinkex_clients import ServiceClient
from tinkex_server import LocalServer, ServerConfig, get_local_server
from tinkex_telemetry import TelemetryPlugin
from tinkex_types import AdamParams, Datum, ModelInput

MODEL = "tinkex/tiny-llama-100k"
API_KEY = "tml-SECRET-abc123"


class Stack:
    """Telemetry plugin on private providers, installed as the process-wide hooks."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)
        self.plugin = TelemetryPlugin(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )
        pm = tinkex_types.make_plugin_manager(
            load_entrypoints=False,
            plugins=[http_plugin, server_plugin, clients_plugin, self.plugin],
        )
        self.hooks = tinkex_types.Hooks(pm)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        out: list[Any] = []
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        out.extend(metric.data.data_points)
        return out


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = Stack()
    old = tinkex_types.set_hooks(s.hooks)
    try:
        yield s
    finally:
        tinkex_types.set_hooks(old)
        s.tracer_provider.shutdown()
        s.meter_provider.shutdown()


@pytest.fixture
def local_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    """A fresh process-wide local server for ``local://`` (``$TINKEX_DATA_DIR`` = tmp)."""
    data = tmp_path / "data"
    monkeypatch.setenv("TINKEX_DATA_DIR", str(data))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    server = get_local_server(config=ServerConfig(data_dir=data, poll_hold_s=5.0))
    try:
        yield server
    finally:
        server.close()
        torch.set_num_threads(before)


def _datum() -> Datum:
    tokens = [10 + (j * 3) % 11 for j in range(12)]
    inputs: dict[str, Any] = {"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)}
    return Datum(model_input=ModelInput.from_ints(tokens[:-1]), loss_fn_inputs=inputs)


def _all_text(span: ReadableSpan) -> str:
    parts: list[str] = [span.name, repr(dict(span.attributes or {}))]
    if span.status.description:
        parts.append(span.status.description)
    for event in span.events:
        parts.append(event.name)
        parts.append(repr(dict(event.attributes or {})))
    for link in span.links:
        parts.append(repr(dict(link.attributes or {})))
    parts.append(repr(dict(span.resource.attributes)))
    return "\n".join(parts)


class Tree:
    def __init__(self, spans: list[ReadableSpan]) -> None:
        self.spans = spans
        self.by_id = {s.context.span_id: s for s in spans}

    def parent(self, span: ReadableSpan) -> ReadableSpan | None:
        if span.parent is None:
            return None
        return self.by_id.get(span.parent.span_id)

    def children(self, span: ReadableSpan, name: str | None = None) -> list[ReadableSpan]:
        return [
            s
            for s in self.spans
            if s.parent is not None
            and s.parent.span_id == span.context.span_id
            and (name is None or s.name == name)
        ]

    def render(self) -> str:
        """The tree as indented ``name [KIND]`` lines (for failure messages)."""
        lines: list[str] = []

        def walk(span: ReadableSpan, depth: int) -> None:
            lines.append(f"{'  ' * depth}{span.name} [{span.kind.name}]")
            for child in sorted(self.children(span), key=lambda s: s.start_time or 0):
                walk(child, depth + 1)

        for span in self.spans:
            if self.parent(span) is None:
                walk(span, 0)
        return "\n".join(lines)

    def one(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans if s.name == name]
        assert len(found) == 1, (name, sorted(s.name for s in self.spans))
        return found[0]


def _check_operation(tree: Tree, root: ReadableSpan, op: str, endpoint: str, rtype: str) -> None:
    """``op`` → ``POST /api/v1/<endpoint>`` → its server span → queue wait + engine
    step, and the polls of its future under the same operation span."""
    op_span = tree.one(op)
    assert op_span.kind is SpanKind.INTERNAL
    assert tree.parent(op_span) is root
    assert op_span.attributes is not None
    assert op_span.attributes["tinkex.operation"] == op
    assert op_span.status.status_code is not StatusCode.ERROR

    (attempt,) = tree.children(op_span, f"POST /api/v1/{endpoint}")
    assert attempt.kind is SpanKind.CLIENT
    assert attempt.attributes is not None
    assert attempt.attributes["http.response.status_code"] == 200
    assert attempt.attributes["url.template"] == f"/api/v1/{endpoint}"
    assert int(attempt.attributes["http.request.body.size"]) > 0  # type: ignore[arg-type]

    (server,) = tree.children(attempt, f"POST /api/v1/{endpoint}")
    assert server.kind is SpanKind.SERVER
    assert server.attributes is not None
    assert server.attributes["tinkex.operation"] == f"server.{endpoint}"
    assert server.attributes["http.route"] == f"/api/v1/{endpoint}"
    assert server.attributes["http.response.status_code"] == 200

    waits = [
        s
        for s in tree.children(server, "server.queue_wait")
        if s.attributes is not None and s.attributes.get("tinkex.request_type") == rtype
    ]
    steps = [
        s
        for s in tree.children(server, "server.engine_step")
        if s.attributes is not None and s.attributes.get("tinkex.request_type") == rtype
    ]
    assert len(waits) == 1, tree.render()
    assert len(steps) == 1, tree.render()
    for span in (*waits, *steps):
        assert span.kind is SpanKind.INTERNAL
        assert span.start_time is not None
        assert server.start_time is not None
        assert span.start_time >= server.start_time
    # The job's spans carry the model id (the attempt's too, when its body is JSON: the ids
    # of a protobuf body are not read).
    assert steps[0].attributes is not None
    assert steps[0].attributes["tinkex.model_id"]
    if "tinkex.model_id" in attempt.attributes:
        assert attempt.attributes["tinkex.model_id"] == steps[0].attributes["tinkex.model_id"]

    polls = tree.children(op_span, "POST /api/v1/retrieve_future")
    assert polls, "the future was polled under the operation span"
    for poll in polls:
        assert poll.kind is SpanKind.CLIENT
        (served,) = tree.children(poll, "POST /api/v1/retrieve_future")
        assert served.kind is SpanKind.SERVER


def test_one_training_step_makes_one_trace(stack: Stack, local_server: LocalServer) -> None:
    tracer = stack.tracer_provider.get_tracer("test")
    with ServiceClient(base_url="local://", api_key=API_KEY) as service:
        tc = service.create_lora_training_client(MODEL, rank=4, seed=3)
        with tracer.start_as_current_span("training_step") as root_span:
            fb = tc.forward_backward([_datum()], "cross_entropy").result(60)
            step = tc.optim_step(AdamParams(learning_rate=1e-3)).result(60)
        assert fb.metrics["loss:sum"] > 0
        assert step.metrics is not None
    # Every ended span is exported by now (the server finished each request before its
    # response, the client closed its connections).
    spans = stack.spans()
    trace_id = root_span.get_span_context().trace_id
    in_trace = [s for s in spans if s.context.trace_id == trace_id]
    tree = Tree(in_trace)
    root = tree.one("training_step")

    _check_operation(tree, root, "forward_backward", "forward_backward", "ForwardBackward")
    _check_operation(tree, root, "optim_step", "optim_step", "OptimStep")
    # Nothing of the step is outside its trace: every job span of the model is in it.
    model_id = tc.model_id
    job_spans = [
        s
        for s in spans
        if s.name in ("server.queue_wait", "server.engine_step")
        and s.attributes is not None
        and s.attributes.get("tinkex.model_id") == model_id
        and s.attributes.get("tinkex.request_type") in ("ForwardBackward", "OptimStep")
    ]
    assert len(job_spans) == 4
    assert all(s.context.trace_id == trace_id for s in job_spans)
    # Every span of the trace hangs off the root: no orphan, no second root.
    for span in in_trace:
        if span is not root:
            assert tree.parent(span) is not None, span.name

    # create_lora_training_client is its own trace with the same shape.
    create = [s for s in spans if s.name == "create_lora_training_client"]
    assert len(create) == 1
    create_tree = Tree([s for s in spans if s.context.trace_id == create[0].context.trace_id])
    (attempt,) = create_tree.children(create[0], "POST /api/v1/create_model")
    (server,) = create_tree.children(attempt, "POST /api/v1/create_model")
    assert create_tree.children(server, "server.engine_step")

    # No span, attribute, event or status anywhere holds the API key.
    assert spans
    for span in spans:
        text = _all_text(span)
        assert API_KEY not in text, span.name
        assert "SECRET-abc123" not in text, span.name


def test_one_training_step_records_metrics(stack: Stack, local_server: LocalServer) -> None:
    with ServiceClient(base_url="local://", api_key=API_KEY) as service:
        tc = service.create_lora_training_client(MODEL, rank=4, seed=4)
        tc.forward_backward([_datum()], "cross_entropy").result(60)
        tc.optim_step(AdamParams(learning_rate=1e-3)).result(60)

    durations = stack.points("http.client.request.duration")
    by_route: dict[str, int] = {}
    for point in durations:
        route = str(point.attributes.get("url.template"))
        by_route[route] = by_route.get(route, 0) + point.count
        assert point.attributes.get("http.request.method") in ("GET", "POST")
        assert point.sum >= 0
        assert point.attributes.get("server.address") == "local"
    for route in (
        "/api/v1/create_session",
        "/api/v1/create_model",
        "/api/v1/forward_backward",
        "/api/v1/optim_step",
        "/api/v1/retrieve_future",
    ):
        assert by_route.get(route, 0) > 0, (route, by_route)
    fb_points = [
        p for p in durations if p.attributes.get("url.template") == "/api/v1/forward_backward"
    ]
    assert all(p.attributes.get("http.response.status_code") == 200 for p in fb_points)

    futures = {
        (
            p.attributes.get("tinkex.future.outcome"),
            p.attributes.get("tinkex.request_type"),
        ): p.value
        for p in stack.points("tinkex.futures")
    }
    assert futures.get(("resolved", "ForwardBackward")) == 1, futures
    assert futures.get(("resolved", "OptimStep")) == 1, futures
    assert futures.get(("resolved", "CreateModel")) == 1, futures
    assert not any(outcome != "resolved" for outcome, _ in futures), futures
    future_durations = stack.points("tinkex.future.duration")
    assert sum(p.count for p in future_durations) == sum(futures.values())

    def total(name: str, route: str) -> int:
        return sum(p.sum for p in stack.points(name) if p.attributes.get("url.template") == route)

    assert total("http.client.request.body.size", "/api/v1/forward_backward") > 0
    assert total("http.client.response.body.size", "/api/v1/forward_backward") > 0
    assert total("http.client.response.body.size", "/api/v1/retrieve_future") > 0

    operations = {
        p.attributes.get("tinkex.operation"): p.count
        for p in stack.points("tinkex.operation.duration")
    }
    assert operations.get("forward_backward") == 1, operations
    assert operations.get("optim_step") == 1, operations
    assert operations.get("server.forward_backward", 0) >= 1, operations
    assert operations.get("server.engine_step", 0) >= 3, operations  # create, fb, optim
    # Nothing is left open.
    active = {
        p.attributes.get("tinkex.operation"): p.value
        for p in stack.points("tinkex.operation.active")
    }
    assert active.get("forward_backward") == 0
    assert active.get("optim_step") == 0


def test_local_spans_hold_no_data_directory(
    stack: Stack, local_server: LocalServer, tmp_path: Path
) -> None:
    """``local:///<data dir>`` attempts: paths from ``/api/`` on, ``server.address=local``;
    heart-beats and telemetry posts start no trace of their own."""
    data_dir = str(tmp_path / "data")
    with ServiceClient(base_url=f"local://{data_dir}", api_key=API_KEY) as service:
        service.create_lora_training_client(MODEL, rank=4, seed=5)
        service.get_telemetry()
    spans = stack.spans()
    attempts = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert attempts
    for span in attempts:
        attrs = dict(span.attributes or {})
        assert attrs["server.address"] == "local"
        assert str(attrs["url.full"]).startswith("local:///api/v1/"), attrs["url.full"]
        assert str(attrs["url.template"]).startswith("/api/v1/")
        assert span.name.startswith("POST /api/v1/") or span.name.startswith("GET /api/v1/")
    for span in spans:
        assert data_dir not in _all_text(span), span.name
    roots = [s.name for s in spans if s.parent is None]
    assert not [n for n in roots if "telemetry" in n or "heartbeat" in n or "healthz" in n], roots
