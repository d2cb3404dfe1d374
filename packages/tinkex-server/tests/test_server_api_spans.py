"""Parent links of the server's spans: a job's ``server.queue_wait`` and ``server.engine_step``
spans are children of the ``server.<endpoint>`` span that queued it.

The tracer here is a minimal stand-in for a span plugin (W3C-style ``traceparent`` headers,
a context variable for the current span), so these tests need no OpenTelemetry; the full
client → server tree with the real telemetry plugin is checked in tinkex-telemetry's
``test_telemetry_e2e_local.py``.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tinkex_types import Hooks, hookimpl, make_plugin_manager, set_hooks

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
CLIENT_TP = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"

_current: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "mini_tracer_current", default=None
)


@dataclass
class MiniSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    attributes: dict[str, Any]
    carrier: dict[str, str] | None


class MiniTracer:
    """Parent = the carrier's ``traceparent`` when there is one, else the current span."""

    def __init__(self) -> None:
        self.spans: list[MiniSpan] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def named(self, name: str) -> list[MiniSpan]:
        return [s for s in self.spans if s.name == name]

    @hookimpl
    def tinkex_operation_span(
        self, operation: str, attributes: Mapping[str, Any], carrier: Mapping[str, str] | None
    ) -> contextlib.AbstractContextManager[Any]:
        @contextlib.contextmanager
        def span() -> Iterator[None]:
            parent: tuple[str, str] | None = _current.get()
            traceparent = (carrier or {}).get("traceparent")
            if traceparent:
                _, trace_id, span_id, _ = traceparent.split("-")
                parent = (trace_id, span_id)
            with self._lock:
                own = f"{next(self._ids):016x}"
            trace_id = parent[0] if parent else f"{next(self._ids):032x}"
            record = MiniSpan(
                operation,
                trace_id,
                own,
                parent[1] if parent else None,
                dict(attributes),
                dict(carrier) if carrier is not None else None,
            )
            with self._lock:
                self.spans.append(record)
            token = _current.set((trace_id, own))
            try:
                yield
            finally:
                _current.reset(token)

        return span()


class InjectingTracer(MiniTracer):
    @hookimpl
    def tinkex_inject_headers(self, headers: dict[str, str]) -> None:
        current = _current.get()
        if current is not None and "traceparent" not in headers:
            headers["traceparent"] = f"00-{current[0]}-{current[1]}-01"


@contextlib.contextmanager
def installed(plugin: object) -> Iterator[None]:
    old = set_hooks(Hooks(make_plugin_manager(load_entrypoints=False, plugins=[plugin])))
    try:
        yield
    finally:
        set_hooks(old)


async def _train_one_step(api: Any, headers: dict[str, str]) -> str:
    sid = (await api.ok("create_session", {"sdk_version": "0.16.1"}, headers=headers))["session_id"]
    mid = str(await api.model(sid))
    fut = await api.ok("forward_backward", api.fb_body(mid, 1), headers=headers)
    await api.result(fut)
    fut = await api.ok(
        "optim_step",
        {"adam_params": {"learning_rate": 1e-3}, "model_id": mid, "seq_id": 2},
        headers=headers,
    )
    await api.result(fut)
    return mid


def _job_spans(tracer: MiniTracer, request_type: str) -> tuple[MiniSpan, MiniSpan]:
    wait = [
        s for s in tracer.named("server.queue_wait") if s.attributes["request_type"] == request_type
    ]
    step = [
        s
        for s in tracer.named("server.engine_step")
        if s.attributes["request_type"] == request_type
    ]
    assert len(wait) == 1, wait
    assert len(step) == 1, step
    return wait[0], step[0]


async def test_job_spans_are_children_of_the_endpoint_span(make_server: Any, api_for: Any) -> None:
    tracer = InjectingTracer()
    headers = {"traceparent": CLIENT_TP, "baggage": "tenant=blue"}
    with installed(tracer):
        async with api_for(make_server()) as api:
            mid = await _train_one_step(api, headers)
    for endpoint, request_type in (
        ("server.forward_backward", "ForwardBackward"),
        ("server.optim_step", "OptimStep"),
    ):
        (request_span,) = tracer.named(endpoint)
        assert request_span.parent_id == CLIENT_SPAN
        assert request_span.trace_id == CLIENT_TRACE
        wait, step = _job_spans(tracer, request_type)
        for child in (wait, step):
            assert child.parent_id == request_span.span_id, (child, request_span)
            assert child.trace_id == CLIENT_TRACE
            assert child.attributes["model_id"] == mid
            # The job carries the endpoint span (and the caller's baggage), not the
            # caller's traceparent.
            assert child.carrier is not None
            assert child.carrier["traceparent"] != CLIENT_TP
            assert child.carrier["baggage"] == "tenant=blue"
    # create_model has no seq_id and no client trace: its job still nests under it.
    (create_span,) = tracer.named("server.create_model")
    wait, step = _job_spans(tracer, "CreateModel")
    assert wait.parent_id == create_span.span_id
    assert step.parent_id == create_span.span_id


async def test_without_an_injector_the_incoming_headers_are_passed_on(
    make_server: Any, api_for: Any
) -> None:
    tracer = MiniTracer()  # spans, but no tinkex_inject_headers
    headers = {"traceparent": CLIENT_TP, "tracestate": "k=v"}
    with installed(tracer):
        async with api_for(make_server()) as api:
            await _train_one_step(api, headers)
    (request_span,) = tracer.named("server.forward_backward")
    wait, step = _job_spans(tracer, "ForwardBackward")
    for child in (wait, step):
        assert child.carrier == {"traceparent": CLIENT_TP, "tracestate": "k=v"}
        assert child.parent_id == CLIENT_SPAN  # siblings of the endpoint span
    assert request_span.parent_id == CLIENT_SPAN


async def test_no_trace_headers_and_no_tracer_give_no_carrier(
    make_server: Any, api_for: Any
) -> None:
    tracer = MiniTracer()
    with installed(tracer):
        async with api_for(make_server()) as api:
            await _train_one_step(api, {})
    wait, step = _job_spans(tracer, "ForwardBackward")
    assert wait.carrier is None
    assert step.carrier is None


async def test_endpoint_span_carries_the_http_semantic_conventions(
    make_server: Any, api_for: Any
) -> None:
    """Stable HTTP server attributes (the route template, never the raw path; no
    deprecated ``http.method`` or ``http.path``); the status, known only once the answer
    starts, through the late mapping; ``error.type`` only on a 5xx."""
    tracer = MiniTracer()
    with installed(tracer):
        server = make_server()
        async with api_for(server) as api:
            mid = await _train_one_step(api, {"user-agent": "span-test/1"})
            await api.result(
                await api.ok(
                    "save_weights",
                    {"model_id": mid, "path": "c1", "seq_id": 3, "ttl_seconds": None},
                )
            )
            base = f"/api/v1/training_runs/{mid}/checkpoints/weights/c1"
            assert (await api.c.get(f"{base}/archive")).status_code == 302
            row = api.store.get_checkpoint(mid, "weights", "c1")
            (server.runtime.files.absolute(row.directory) / "adapter_config.json").write_text("{}")
            assert (await api.c.get(f"{base}/archive")).status_code == 500
            assert (await api.c.get("/api/v1/no_such_route")).status_code == 404
    (fb,) = tracer.named("server.forward_backward")
    attrs = fb.attributes
    assert attrs["http.request.method"] == "POST"
    assert attrs["http.route"] == "/api/v1/forward_backward"
    assert attrs["url.path"] == "/api/v1/forward_backward"
    assert attrs["url.scheme"] == "http"
    assert attrs["server.address"] == "tinkex.local"
    assert "server.port" not in attrs  # in-process: no socket
    assert attrs["network.protocol.version"] == "1.1"
    assert attrs["user_agent.original"] == "span-test/1"
    assert attrs["tinkex.late_attributes"] == {"http.response.status_code": 200}
    for span in tracer.spans:
        assert "http.method" not in span.attributes
        assert "http.path" not in span.attributes
        assert str(server.config.data_dir) not in repr(span.attributes)
    archive = tracer.named("server.checkpoint_archive_url")
    assert [s.attributes["http.route"] for s in archive] == [
        "/api/v1/training_runs/{run_id}/checkpoints/{kind}/{name}/archive"
    ] * 2
    assert archive[0].attributes["url.path"].endswith(f"/{mid}/checkpoints/weights/c1/archive")
    assert [s.attributes["tinkex.late_attributes"] for s in archive] == [
        {"http.response.status_code": 302},
        {"http.response.status_code": 500, "error.type": "500"},
    ]
    (unknown,) = tracer.named("server.unknown_route")
    assert "http.route" not in unknown.attributes
    assert unknown.attributes["tinkex.late_attributes"] == {"http.response.status_code": 404}
