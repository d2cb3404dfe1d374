"""Issue 17: a canary API key (and Cloudflare Access secret) through every output -- debug
logs (stdlib and structlog), OpenTelemetry spans and metrics (in-memory), reprs of the
client objects and what they hold, exception chains (``__cause__``/``__context__``, the
request headers there and their repr), the CLI with ``-vv --debug``, the server's log and
every file of its data directory: 0 occurrences."""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from click.testing import CliRunner
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tinkex_clients._plugin as clients_plugin
import tinkex_http._plugin as http_plugin
import tinkex_server._plugin as server_plugin
import tinkex_types
from tinkex_clients import ServiceClient
from tinkex_http import Secret
from tinkex_telemetry import TelemetryPlugin
from tinkex_types import AdamParams, Datum, ModelInput, SamplingParams, TensorData

MODEL = "tinkex/tiny-llama-100k"
CANARY = "tml-CANARY-7f3a9c1e5b2d4680aa11"
CF_CANARY = "cf-CANARY-secret-5e6f7a8b9c0d"
CANARIES = (CANARY, CF_CANARY)


def _absent(text: str, where: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"{canary} found in {where}"


class _Capture(logging.Handler):
    """Every stdlib record at DEBUG, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + repr(record.__dict__))


@pytest.fixture
def otel() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    exporter = InMemorySpanExporter()
    tracer = TracerProvider(shutdown_on_exit=False)
    tracer.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    plugin = TelemetryPlugin(tracer_provider=tracer, meter_provider=meter)
    pm = tinkex_types.make_plugin_manager(
        load_entrypoints=False, plugins=[http_plugin, server_plugin, clients_plugin, plugin]
    )
    old = tinkex_types.set_hooks(tinkex_types.Hooks(pm))
    try:
        yield exporter, reader
    finally:
        tinkex_types.set_hooks(old)
        tracer.shutdown()


@pytest.fixture
def stdlib_logs() -> Iterator[_Capture]:
    handler = _Capture()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def _reachable(obj: object, limit: int = 20_000) -> str:
    """repr of ``obj`` and of what its attributes, dicts and lists hold (bounded walk;
    Secret values stop the walk, that is their point)."""
    seen: set[int] = set()
    out: list[str] = []
    todo: list[tuple[object, int]] = [(obj, 0)]
    while todo and len(seen) < limit:
        cur, depth = todo.pop()
        if id(cur) in seen or isinstance(cur, Secret) or depth > 6:
            continue
        seen.add(id(cur))
        if isinstance(cur, str | bytes):
            out.append(cur if isinstance(cur, str) else cur.decode("latin-1"))
            continue
        if isinstance(cur, type) or (callable(cur) and not hasattr(cur, "__dict__")):
            continue
        with contextlib.suppress(Exception):  # a repr may fail; the walk goes on
            out.append(repr(cur))
        if isinstance(cur, dict):
            todo += [(v, depth + 1) for v in (*cur.keys(), *cur.values())]
        elif isinstance(cur, list | tuple | set | frozenset):
            todo += [(v, depth + 1) for v in cur]
        elif isinstance(cur, httpx.Headers):
            todo += [(v, depth + 1) for _, v in cur.multi_items()]
        elif hasattr(cur, "__dict__") and type(cur).__module__.startswith(("tinkex", "httpx")):
            todo += [(v, depth + 1) for v in vars(cur).values()]
    return "\n".join(out)


def _chain_text(exc: BaseException) -> str:
    """What an error reporter serialising the chain would print."""
    parts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    todo = [exc]
    while todo:
        cur = todo.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        parts += [repr(cur), repr(cur.args), _reachable(vars(cur))]
        request = getattr(cur, "_request", None)
        if isinstance(request, httpx.Request):
            parts += [repr(request), repr(request.headers), repr(dict(request.headers))]
        todo += [e for e in (cur.__cause__, cur.__context__) if e is not None]
    return "\n".join(parts)


def _datum() -> Datum:
    tokens = [1, 40, 41, 42, 43, 2]
    return Datum(
        model_input=ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": TensorData(data=tokens[1:], dtype="int64", shape=[5]),
            "weights": TensorData(data=[1.0] * 5, dtype="float32", shape=[5]),
        },
    )


def _session(service: ServiceClient, tmp_path: Path) -> list[BaseException]:
    """A session that touches every part: training, saving, sampling, REST, errors."""
    errors: list[BaseException] = []
    training = service.create_lora_training_client(MODEL, rank=2, seed=0)
    training.forward_backward([_datum()], "cross_entropy").result(120)
    training.optim_step(AdamParams(learning_rate=1e-3)).result(120)
    state = training.save_state("canary").result(120).path
    sampler = training.save_weights_and_get_sampling_client("canary-s")
    sampler.sample(ModelInput.from_ints([1, 40]), 1, SamplingParams(max_tokens=3)).result(120)
    rest = service.create_rest_client()
    rest.list_checkpoints(training.model_id).result(120)
    rest.download_checkpoint(state, tmp_path / "dl").result(120)
    for bad in (
        lambda: rest.get_training_run("no-such-run").result(120),
        lambda: training.load_state("tinker://no-such-run/weights/x").result(120),
    ):
        try:
            bad()
        except Exception as exc:
            errors.append(exc)
    assert errors
    for obj in (service, training, sampler, rest):
        _absent(repr(obj), f"repr of {type(obj).__name__}")
        _absent(_reachable(obj), f"objects reachable from {type(obj).__name__}")
    return errors


def test_canary_never_appears(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader],
    stdlib_logs: _Capture,
) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("TINKEX_DATA_DIR", str(data_dir))
    monkeypatch.setenv("TINKER_LOG", "debug")
    with structlog.testing.capture_logs() as events:
        service = ServiceClient(
            base_url="local://",
            api_key=CANARY,
            cf_access_client_id="cid",
            cf_access_client_secret=CF_CANARY,
            dump_headers=True,
        )
        try:
            errors = _session(service, tmp_path)
        finally:
            service.close()
        # a connection failure: the chain holds the httpx error and its request
        with pytest.raises(Exception) as refused:
            ServiceClient(
                base_url="http://127.0.0.1:9",
                api_key=CANARY,
                cf_access_client_secret=CF_CANARY,
                max_retries=0,
                dump_headers=True,
            ).create_lora_training_client(MODEL, rank=2)
    errors.append(refused.value)
    assert any(isinstance(e, httpx.TransportError) for e in _walk(refused.value))
    for exc in errors:
        _absent(_chain_text(exc), f"exception chain of {type(exc).__name__}")
    # Library loggers go through structlog when it is configured and through stdlib
    # logging otherwise (which one depends on what configured logging first in this
    # process): between them the debug lines were written, and neither holds a secret.
    assert events or stdlib_logs.lines
    _absent(repr(events), "structlog events")
    _absent("\n".join(stdlib_logs.lines), "stdlib logs (client and server)")
    exporter, reader = otel
    spans = exporter.get_finished_spans()
    assert spans
    _absent("\n".join(s.to_json() for s in spans), "OpenTelemetry spans")
    metrics = reader.get_metrics_data()
    assert metrics is not None
    _absent(metrics.to_json(), "OpenTelemetry metrics")
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert files
    for path in files:
        _absent(path.read_bytes().decode("latin-1"), f"data directory file {path.name}")


def _walk(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        cur = todo.pop()
        if id(cur) not in seen:
            seen.add(id(cur))
            yield cur
            todo += [e for e in (cur.__cause__, cur.__context__) if e is not None]


def _cli(*args: str, env: dict[str, str]) -> str:
    from tinkex_cli import build_cli

    argv = ["-vv", "--debug", "--api-key", CANARY, *args]
    result = CliRunner().invoke(build_cli(), argv, env=env, prog_name="tinkex")
    text = result.output
    if result.exception is not None:
        text += "".join(traceback.format_exception(result.exception))
        text += _chain_text(result.exception)
    return text


def test_canary_not_in_cli_output(tmp_path: Path, stdlib_logs: _Capture) -> None:
    data_dir = tmp_path / "data"
    env = {
        "TINKEX_DATA_DIR": str(data_dir),
        "CLOUDFLARE_ACCESS_CLIENT_SECRET": CF_CANARY,
        "TINKEX_MAX_RETRIES": "0",
        "COLUMNS": "200",
    }
    outputs = [
        _cli("--base-url", "local://", "checkpoint", "list", env=env),
        _cli("--base-url", "local://", "run", "list", env=env),
        _cli("--base-url", "local://", "checkpoint", "info", "tinker://x/weights/y", env=env),
        _cli("--base-url", "http://127.0.0.1:9", "checkpoint", "list", env=env),
    ]
    assert any("127.0.0.1:9" in o or "connect" in o.lower() for o in outputs), outputs[-1]
    for i, output in enumerate(outputs):
        _absent(output, f"CLI output {i}")
    _absent("\n".join(stdlib_logs.lines), "stdlib logs of the CLI runs")
    for path in (p for p in data_dir.rglob("*") if p.is_file()):
        _absent(path.read_bytes().decode("latin-1"), f"data directory file {path.name}")


def test_reachable_walk_finds_a_plain_key() -> None:
    """The walk above is able to find a key held in plain text (guards the suite)."""

    class Holder:
        pass

    holder = Holder()
    holder.__dict__["headers"] = {"x-api-key": CANARY}
    Holder.__module__ = "tinkex_fake"
    assert CANARY in _reachable(holder)
    assert CANARY not in _reachable(Secret(CANARY))
