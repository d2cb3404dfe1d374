"""The plugin surface: sinks registry, console and otel sinks, records, classification, API."""

from __future__ import annotations

import io
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

import tinkex_telemetry
import tinkex_types
from tinkex_telemetry import (
    ConsoleSink,
    OtelSink,
    TelemetryPlugin,
    TelemetryRecord,
    TelemetrySink,
    default_plugin,
    exception_record,
    format_record,
    is_user_error,
    record_from_event,
)
from tinkex_telemetry import _plugin as plugin_module
from tinkex_types import (
    APIStatusError,
    BadRequestError,
    FutureEvent,
    NotFoundError,
    PluginError,
    QueueStateEvent,
    RegularizerEvent,
    RequestErrorCategory,
    RequestEvent,
    RequestFailedError,
    TinkexValidationError,
)


def test_public_api_is_exactly_all() -> None:
    public = {name for name in dir(tinkex_telemetry) if not name.startswith("_")}
    assert public - {"annotations"} == set(tinkex_telemetry.__all__) - {"__version__"}
    for name in tinkex_telemetry.__all__:
        assert getattr(tinkex_telemetry, name) is not None


def test_sink_factories_are_registered_through_the_hook(otel: Any) -> None:
    registry = otel.hooks.telemetry_sinks()
    assert registry.names() == ["backend", "console", "otel"]
    stream = io.StringIO()
    console = registry.get("console")(stream=stream)
    assert isinstance(console, ConsoleSink)
    assert isinstance(console, TelemetrySink)
    assert console in otel.plugin.sinks
    otel.hooks.on_request(
        RequestEvent("POST", "/api/v1/asample", 0, 0.0123, status_code=200, request_type="Sample")
    )
    otel.hooks.on_request(
        RequestEvent(
            "POST", "/api/v1/asample", 1, 0.5, error="ConnectError: refused", will_retry=True
        )
    )
    otel.hooks.on_future(FutureEvent("req-7", "resolved", 2.5, 4, request_type="Sample"))
    otel.hooks.on_queue_state_change(
        QueueStateEvent("req-7", "paused_rate_limit", "active", "rate limited")
    )
    otel.hooks.on_regularizer(RegularizerEvent("l2", "start"))  # DEBUG: below the default level
    otel.hooks.on_regularizer(RegularizerEvent("l2", "stop", duration_s=0.002, value=0.25))
    console.log("custom_event", {"step": 3})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 6
    assert "INFO" in lines[0]
    assert "http POST /api/v1/asample -> 200 in 12.3 ms (attempt 0, Sample)" in lines[0]
    assert "ERROR" in lines[1]
    assert "error ConnectError: refused" in lines[1]
    assert "will retry" in lines[1]
    assert "future req-7 resolved after 4 polls in 2.50 s [Sample]" in lines[2]
    assert "WARNING" in lines[3]
    assert "queue req-7: active -> paused_rate_limit (rate limited)" in lines[3]
    assert "regularizer l2 took 2.0 ms, value 0.25" in lines[4]
    assert "custom_event step=3" in lines[5]
    console.close()
    assert console not in otel.plugin.sinks
    otel.hooks.on_future(FutureEvent("req-8", "resolved", 1, 1))
    assert len(stream.getvalue().splitlines()) == 6


def test_console_filters() -> None:
    stream = io.StringIO()
    sink = ConsoleSink(stream=stream, min_severity="warn", kinds=["future", "exception"])
    sink.emit(record_from_event(FutureEvent("a", "resolved", 1, 1)))
    sink.emit(record_from_event(FutureEvent("b", "failed", 1, 1, category="server", error="boom")))
    sink.emit(record_from_event(QueueStateEvent("c", "paused_capacity", None, "x")))
    sink.log_exception(ValueError("kaput"))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "future b failed" in lines[0]
    assert "category=server: boom" in lines[0]
    assert "unhandled_exception" in lines[1]
    assert "kaput" in lines[1]


def test_console_defaults_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    ConsoleSink().log("to_stderr")
    captured = capsys.readouterr()
    assert "to_stderr" in captured.err
    assert captured.out == ""


def test_otel_sink_adds_span_events_and_counts(otel: Any) -> None:
    sink = otel.plugin.create_sink("otel")
    assert isinstance(sink, OtelSink)
    with otel.hooks.operation_span("train_step", {}):
        sink.log("checkpoint", {"path": "tinker://a", "nested": {"step": 2}}, "warning")
        sink.log_exception(BadRequestError("nope", status_code=400))
        sink.emit(
            record_from_event(FutureEvent("r", "resolved", 1, 1))
        )  # hook events: not duplicated
    span = otel.span("train_step")
    names = [e.name for e in span.events]
    assert names == ["checkpoint", "user_error"]
    attrs = span.events[0].attributes
    assert attrs["path"] == "tinker://a"
    assert attrs["nested.step"] == 2
    assert attrs["tinkex.event.severity"] == "WARNING"
    points = otel.metric_points()["tinkex.telemetry.events"]
    assert sum(p.value for p in points) == 2
    assert sink.flush(2)
    sink.close()
    assert sink not in otel.plugin.sinks


def test_unknown_sink_and_duplicate_plugins(otel: Any) -> None:
    with pytest.raises(PluginError, match="unknown telemetry sink 'nope'"):
        otel.plugin.create_sink("nope")
    second = TelemetryPlugin(tracer_provider=otel.tracer_provider)
    pm = tinkex_types.make_plugin_manager(load_entrypoints=False, plugins=[otel.plugin, second])
    with pytest.raises(PluginError, match="registered twice"):
        tinkex_types.Hooks(pm).telemetry_sinks()
    quiet = TelemetryPlugin(tracer_provider=otel.tracer_provider, register_sinks=False)
    pm = tinkex_types.make_plugin_manager(load_entrypoints=False, plugins=[otel.plugin, quiet])
    assert tinkex_types.Hooks(pm).telemetry_sinks().names() == ["backend", "console", "otel"]


def test_a_broken_sink_does_not_starve_others(otel: Any) -> None:
    class Broken:
        def emit(self, record: TelemetryRecord) -> None:
            raise RuntimeError("broken sink")

        def flush(self, timeout: float | None = None) -> bool:
            raise RuntimeError("broken flush")

        def close(self, timeout: float | None = None) -> None:
            raise RuntimeError("broken close")

    got: list[TelemetryRecord] = []

    class Good:
        def emit(self, record: TelemetryRecord) -> None:
            got.append(record)

        def flush(self, timeout: float | None = None) -> bool:
            return True

        def close(self, timeout: float | None = None) -> None:
            pass

    otel.plugin.attach(Broken())
    otel.plugin.attach(Good())
    otel.hooks.on_future(FutureEvent("r", "cancelled", 0.1, 0))
    assert [r.name for r in got] == ["tinkex.future.cancelled"]
    assert otel.plugin.flush(1) is False
    otel.plugin.close(1)
    assert otel.plugin.sinks == ()


def test_module_entry_point_delegates_to_the_default_plugin() -> None:
    pm = tinkex_types.make_plugin_manager(load_entrypoints=False, plugins=[plugin_module])
    hooks = tinkex_types.Hooks(pm)
    assert hooks.telemetry_sinks().names() == ["backend", "console", "otel"]
    assert default_plugin() is default_plugin()
    # Global providers are not set in tests: spans are non-recording, nothing is injected.
    with hooks.operation_span("sample", {"model_id": "m"}):
        headers: dict[str, str] = {}
        hooks.inject_headers(headers)
    assert headers == {}
    hooks.on_request(RequestEvent("GET", "/x", 0, 0.1))
    hooks.on_future(FutureEvent("r", "resolved", 0.1, 1))
    hooks.on_queue_state_change(QueueStateEvent("r", "active", None, ""))
    hooks.on_regularizer(RegularizerEvent("l1", "stop", duration_s=0.1))
    assert {impl.plugin_name for impl in pm.hook.tinkex_operation_span.get_hookimpls()} == {
        pm.get_name(plugin_module)
    }


def test_default_plugin_propagation_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin_module, "_default", None)
    monkeypatch.setenv("TINKEX_OTEL_PROPAGATE", "off")
    assert default_plugin().propagator is None
    monkeypatch.setattr(plugin_module, "_default", None)
    monkeypatch.setenv("TINKEX_OTEL_PROPAGATE", "true")
    assert default_plugin().propagator is not None
    monkeypatch.setattr(plugin_module, "_default", None)
    monkeypatch.delenv("TINKEX_OTEL_PROPAGATE")
    assert default_plugin().propagator is not None
    # The same words as tinkex_http.Config.otel_propagate: "n" and "f" are off too.
    for word in ("n", "F", "No"):
        monkeypatch.setattr(plugin_module, "_default", None)
        monkeypatch.setenv("TINKEX_OTEL_PROPAGATE", word)
        assert default_plugin().propagator is None, word
    # A value that is not a boolean word is ignored (Config rejects it, naming the variable).
    monkeypatch.setattr(plugin_module, "_default", None)
    monkeypatch.setenv("TINKEX_OTEL_PROPAGATE", "maybe")
    assert default_plugin().propagator is not None


def test_server_operations_are_server_spans(otel: Any) -> None:
    with otel.plugin.operation_span("server.request"):
        with otel.plugin.operation_span("server.engine_step"):
            pass
    with otel.plugin.operation_span("server.forward_backward"):
        with otel.plugin.operation_span("server.queue_wait"):
            pass
    with otel.plugin.operation_span("forward_backward"):
        pass
    assert otel.span("server.request").kind is SpanKind.SERVER
    assert otel.span("server.forward_backward").kind is SpanKind.SERVER
    assert otel.span("server.engine_step").kind is SpanKind.INTERNAL
    assert otel.span("server.queue_wait").kind is SpanKind.INTERNAL
    assert otel.span("forward_backward").kind is SpanKind.INTERNAL
    custom = TelemetryPlugin(tracer_provider=otel.tracer_provider, server_operations=["handle"])
    with custom.operation_span("handle"), custom.operation_span("server.request"):
        pass
    assert otel.span("handle").kind is SpanKind.SERVER
    assert [s.kind for s in otel.spans() if s.name == "server.request"] == [
        SpanKind.SERVER,
        SpanKind.INTERNAL,
    ]


def test_span_attribute_conversion(otel: Any) -> None:
    class Mode:
        value = "fast"

    attrs = {
        "model_id": "m",
        "tinkex.seq_id": 2,
        "lr": 1e-4,
        "ids": [1, 2, 3],
        "mix": [1, "a"],
        "mode": Mode(),
        "none": None,
        "Authorization": "Bearer xyz",
        "custom.secret": "s",
        "http.route": "/api/v1/x",
    }
    with otel.hooks.operation_span("op", attrs):
        pass
    got = dict(otel.span("op").attributes)
    assert got["tinkex.model_id"] == "m"
    assert got["tinkex.seq_id"] == 2
    assert got["tinkex.lr"] == 1e-4
    assert tuple(got["tinkex.ids"]) == (1, 2, 3)
    assert tuple(got["tinkex.mix"]) == ("1", "a")
    assert got["tinkex.mode"] == "fast"
    assert got["http.route"] == "/api/v1/x"
    assert "tinkex.none" not in got
    assert not any("uthorization" in k or "secret" in k for k in got)


class _Chained(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "user"),
    [
        (BadRequestError("x", status_code=400), True),
        (NotFoundError("x", status_code=404), True),
        (APIStatusError("x", status_code=408), False),
        (APIStatusError("x", status_code=410), False),
        (APIStatusError("x", status_code=429), False),
        (APIStatusError("x", status_code=500), False),
        (RequestFailedError("x", category=RequestErrorCategory.USER), True),
        (RequestFailedError("x", category=RequestErrorCategory.SERVER), False),
        (TinkexValidationError("f", "bad"), True),
        (ValueError("plain"), False),
    ],
)
def test_user_error_classification(exc: BaseException, user: bool) -> None:
    assert is_user_error(exc) is user


def test_user_error_found_through_the_cause_chain() -> None:
    outer = _Chained("wrapped")
    outer.__cause__ = BadRequestError("bad", status_code=422)
    assert is_user_error(outer)
    assert not is_user_error(_Chained("alone"))

    class WithReason(Exception):
        def __init__(self, reason: Any) -> None:
            super().__init__("r")
            self.reason = reason

    class StatusOnly(Exception):
        status = 403

    assert is_user_error(WithReason(StatusOnly()))
    a, b = _Chained("a"), _Chained("b")
    a.__context__, b.__context__ = b, a  # a cycle
    assert is_user_error(a) is False


def test_exception_records() -> None:
    user = exception_record(BadRequestError("bad", status_code=400, body={"detail": "x"}))
    assert (user.name, user.severity) == ("user_error", "WARNING")
    assert user.data == {
        "error_type": "BadRequestError",
        "message": "400: bad",
        "status_code": 400,
        "body": {"detail": "x"},
    }
    crash = exception_record(RuntimeError("boom"), "CRITICAL")
    assert (crash.name, crash.severity, crash.data["traceback"]) == (
        "unhandled_exception",
        "CRITICAL",
        None,
    )
    assert "unhandled_exception" in format_record(crash)


def test_record_from_event_rejects_other_objects() -> None:
    with pytest.raises(TypeError):
        record_from_event("nope")  # type: ignore[arg-type]
