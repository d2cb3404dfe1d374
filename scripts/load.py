"""Load test: many concurrent samples and trainers against one ``tinkex serve``.

Run it from the repository root::

    hatch run hatch-test.py3.11:python scripts/load.py                 # 1,000 samples, 50 trainers
    hatch run hatch-test.py3.11:python scripts/load.py --samples 8 --trainers 2 --steps 1 --json

It starts one ``tinkex serve`` subprocess on 127.0.0.1 with a temporary data directory and,
through the tinkex async client API, drives at the same time:

* ``--samples`` sample requests, all in flight at once (``asyncio.gather`` of
  ``SamplingClient.sample_async``), alternating between a base-model sampler and a sampler
  on a LoRA adapter saved during setup, each with its own seed;
* ``--trainers`` trainers, each with its own ``ServiceClient`` session and its own LoRA
  training client, doing ``--steps`` × (``forward_backward`` + ``optim_step``) and then a
  ``save_state``.

It reports errors (count and kinds): operations that failed or returned a wrong result, HTTP
5xx answers seen by the clients (even when a retry succeeded, through a ``tinkex_on_request``
observer), error lines in the server log and a server that exited. Transport errors of
single HTTP attempts (connect/read failures) are counted apart, under ``http``: an operation
they made fail is an error anyway, and the others were retried successfully. Also: wall
times, throughput, p50/p99 latencies, the server's peak RSS (psutil on the server PID and
its children, sampled every 20 ms), the host's ``ListenOverflows`` growth and the load
average before and after. Exit code 0 when there were no errors, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import re
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ (the server launcher) lives at the repository root
    sys.path.insert(0, str(ROOT))

from bench._harness import percentile  # noqa: E402
from bench._server import API_KEY, ServerProcess  # noqa: E402

DEFAULT_MODEL = "tinkex/tiny-llama-100k"
#: Lines of the server log that count as errors (tracebacks, ERROR/CRITICAL records, 5xx).
_LOG_ERROR = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|\bHTTP/1\.1\" 5\d\d|status=5\d\d")


def log(message: str) -> None:
    print(f"[load] {message}", file=sys.stderr, flush=True)


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return []


def listen_overflows() -> int | None:
    """The kernel's ``TcpExt ListenOverflows`` counter (connections dropped because a listen
    queue was full; host-wide), or ``None`` off Linux."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table.get("ListenOverflows", 0))
    return None


# -- what the clients saw ----------------------------------------------------------------------
class RequestCounter:
    """A ``tinkex_on_request`` observer: every HTTP attempt of every client, retries included."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.transport_errors: Counter[str] = Counter()
        self.retried = 0
        self.attempts = 0

    def tinkex_on_request(self, event: Any) -> None:
        with self._lock:
            self.attempts += 1
            if event.will_retry:
                self.retried += 1
            if event.status_code is not None:
                self.statuses[str(event.status_code)] += 1
            if event.error is not None:
                retry = "retried" if event.will_retry else "not retried by the transport"
                what = f"{event.method} {event.path}: {event.error[:120]}"
                self.transport_errors[f"{what} after {event.duration_s:.1f} s ({retry})"] += 1

    def server_errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code.startswith("5"))


def make_hooks(counter: RequestCounter) -> Any:
    import tinkex_types
    from tinkex_types import hookimpl

    class _Observer:
        @hookimpl
        def tinkex_on_request(self, event: Any) -> None:
            counter.tinkex_on_request(event)

    return tinkex_types.Hooks(tinkex_types.make_plugin_manager(plugins=[_Observer()]))


@dataclass
class Errors:
    """Failed operations, by kind (exception type and the first line of its message)."""

    kinds: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, where: str, exc: BaseException | str) -> None:
        if isinstance(exc, BaseException):
            first = (str(exc).splitlines() or [""])[0][:200]
            kind = f"{where}: {type(exc).__name__}: {first}"
            example = "".join(traceback.format_exception(exc))[-2000:]
        else:
            kind = example = f"{where}: {exc}"
        self.kinds[kind] += 1
        if len(self.examples) < 5:
            self.examples.append(example)

    @property
    def count(self) -> int:
        return sum(self.kinds.values())


# -- server memory -----------------------------------------------------------------------------
class RssWatch:
    """Samples the RSS of a process and of its children (psutil) in a daemon thread."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self.interval = interval
        self.start_bytes = self._read()[0]
        self.peak_bytes = self.start_bytes
        self.peak_total_bytes = self.start_bytes
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-watch", daemon=True)

    def _read(self) -> tuple[int, int]:
        import psutil

        own = int(self._proc.memory_info().rss)
        total = own
        for child in self._proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a child that exited meanwhile
                total += int(child.memory_info().rss)
        return own, total

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                own, total = self._read()
            except psutil.Error:
                return
            self.peak_bytes = max(self.peak_bytes, own)
            self.peak_total_bytes = max(self.peak_total_bytes, total)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.end_bytes = self._read()[0] if self._proc.is_running() else 0


# -- the load ------------------------------------------------------------------------------------
@dataclass
class Results:
    sample_latency_s: list[float] = field(default_factory=list)
    sample_tokens: int = 0
    samples_ok: int = 0
    samples_wall_s: float = math.nan
    step_latency_s: list[float] = field(default_factory=list)
    trainer_latency_s: list[float] = field(default_factory=list)
    trainers_ok: int = 0
    steps_ok: int = 0
    saves_ok: int = 0
    trainers_wall_s: float = math.nan
    setup_s: float = math.nan
    wall_s: float = math.nan


def _datum(rng: random.Random, length: int) -> Any:
    from tinkex_types import Datum, ModelInput

    ids = [rng.randrange(5, 1024) for _ in range(length + 1)]
    return Datum(
        model_input=ModelInput.from_ints(ids[:-1]),
        loss_fn_inputs={"target_tokens": ids[1:], "weights": [1.0] * length},
    )


async def _one_sample(
    sampler: Any, i: int, args: argparse.Namespace, res: Results, errors: Errors
) -> None:
    from tinkex_types import ModelInput, SamplingParams

    rng = random.Random(i)
    prompt = ModelInput.from_ints([rng.randrange(5, 1024) for _ in range(8)])
    params = SamplingParams(max_tokens=args.max_tokens, temperature=1.0, seed=i)
    start = time.perf_counter()
    try:
        response = await sampler.sample_async(prompt, 1, params)
    except Exception as exc:
        errors.add("sample", exc)
        return
    res.sample_latency_s.append(time.perf_counter() - start)
    tokens = response.sequences[0].tokens if response.sequences else []
    if not tokens or len(tokens) > args.max_tokens:
        errors.add("sample", f"got {len(tokens)} tokens for max_tokens={args.max_tokens}")
        return
    res.samples_ok += 1
    res.sample_tokens += len(tokens)


async def _samples(
    samplers: list[Any], args: argparse.Namespace, res: Results, errors: Errors
) -> None:
    start = time.perf_counter()
    await asyncio.gather(
        *(
            _one_sample(samplers[i % len(samplers)], i, args, res, errors)
            for i in range(args.samples)
        )
    )
    res.samples_wall_s = time.perf_counter() - start


async def _train(
    service: Any, i: int, args: argparse.Namespace, res: Results, errors: Errors
) -> None:
    from tinkex_types import AdamParams

    rng = random.Random(10_000 + i)
    batch = [_datum(rng, 16) for _ in range(2)]
    client = await service.create_lora_training_client_async(args.model, rank=4, seed=i)
    for step in range(args.steps):
        started = time.perf_counter()
        fb = await client.forward_backward_async(batch, "cross_entropy")
        opt = await client.optim_step_async(AdamParams(learning_rate=1e-3))
        out = await fb
        await opt
        res.step_latency_s.append(time.perf_counter() - started)
        loss = out.metrics.get("loss:sum")
        if loss is None or not math.isfinite(loss):
            errors.add("trainer", f"step {step}: loss:sum is {loss!r}")
            return
        res.steps_ok += 1
    saved = await (await client.save_state_async(f"load-{i}"))
    if not saved.path or not saved.path.startswith("tinker://"):
        errors.add("trainer", f"save_state returned path {saved.path!r}")
        return
    res.saves_ok += 1


async def _one_trainer(
    url: str, hooks: Any, i: int, args: argparse.Namespace, res: Results, errors: Errors
) -> None:
    from tinkex_clients import ServiceClient

    start = time.perf_counter()
    service = None
    try:
        service = await ServiceClient.create_async(base_url=url, api_key=API_KEY, hooks=hooks)
        await _train(service, i, args, res, errors)
    except Exception as exc:
        errors.add("trainer", exc)
        return
    finally:
        if service is not None:
            await service.aclose()
    res.trainer_latency_s.append(time.perf_counter() - start)
    res.trainers_ok += 1


async def _trainers(
    url: str, hooks: Any, args: argparse.Namespace, res: Results, errors: Errors
) -> None:
    start = time.perf_counter()
    await asyncio.gather(
        *(_one_trainer(url, hooks, i, args, res, errors) for i in range(args.trainers))
    )
    res.trainers_wall_s = time.perf_counter() - start


async def drive(
    url: str, hooks: Any, args: argparse.Namespace, res: Results, errors: Errors
) -> None:
    """Setup (a base-model sampler, and a LoRA adapter saved for sampling), then the load."""
    from tinkex_clients import ServiceClient

    started = time.perf_counter()
    async with await ServiceClient.create_async(
        base_url=url, api_key=API_KEY, hooks=hooks
    ) as service:
        samplers = [await service.create_sampling_client_async(base_model=args.model)]
        if args.adapter:
            training = await service.create_lora_training_client_async(args.model, rank=4)
            saved = await (await training.save_weights_for_sampler_async("load-adapter"))
            samplers.append(await service.create_sampling_client_async(model_path=saved.path))
        res.setup_s = time.perf_counter() - started
        log(
            f"setup {res.setup_s:.1f} s; {args.samples} samples on {len(samplers)} sampler(s) "
            f"and {args.trainers} trainers x {args.steps} steps, all at once"
        )
        start = time.perf_counter()
        await asyncio.gather(
            _samples(samplers, args, res, errors), _trainers(url, hooks, args, res, errors)
        )
        res.wall_s = time.perf_counter() - start


# -- the report ----------------------------------------------------------------------------------
def _ms(values: list[float]) -> dict[str, float | None]:
    def r(x: float) -> float | None:
        return round(x * 1e3, 1) if math.isfinite(x) else None

    return {
        "p50": r(percentile(values, 50)),
        "p99": r(percentile(values, 99)),
        "max": r(max(values) if values else math.nan),
    }


def _per_s(count: int, seconds: float) -> float | None:
    return round(count / seconds, 2) if seconds > 0 and math.isfinite(seconds) else None


def _round(x: float) -> float | None:
    return round(x, 2) if math.isfinite(x) else None


def build_report(
    ctx: dict[str, Any], res: Results, errors: Errors, counter: RequestCounter
) -> dict[str, Any]:
    args: argparse.Namespace = ctx["args"]
    for code, n in sorted(counter.statuses.items()):
        if code.startswith("5"):
            errors.add("http", f"{n} responses with status {code}")
    for line in ctx["log_errors"][:20]:
        errors.add("server log", line[:200])
    if not ctx["server_alive"]:
        errors.add("server", "tinkex serve exited during the run")
    rss: RssWatch = ctx["rss"]
    mb = 1e6
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_before": ctx["load_before"],
            "load_average_after": ctx["load_after"],
        },
        "config": {
            "samples": args.samples,
            "trainers": args.trainers,
            "steps": args.steps,
            "max_tokens": args.max_tokens,
            "model": args.model,
            "adapter_sampler": args.adapter,
            "torch_threads": ctx["torch_threads"],
        },
        "errors": {"count": errors.count, "kinds": dict(errors.kinds), "examples": errors.examples},
        "wall_s": _round(res.wall_s),
        "setup_s": _round(res.setup_s),
        "samples": {
            "ok": res.samples_ok,
            "wall_s": _round(res.samples_wall_s),
            "per_s": _per_s(res.samples_ok, res.samples_wall_s),
            "tokens": res.sample_tokens,
            "tokens_per_s": _per_s(res.sample_tokens, res.samples_wall_s),
            "latency_ms": _ms(res.sample_latency_s),
        },
        "trainers": {
            "ok": res.trainers_ok,
            "steps_ok": res.steps_ok,
            "saves_ok": res.saves_ok,
            "wall_s": _round(res.trainers_wall_s),
            "steps_per_s": _per_s(res.steps_ok, res.trainers_wall_s),
            "step_latency_ms": _ms(res.step_latency_s),
            "trainer_latency_ms": _ms(res.trainer_latency_s),
        },
        "http": {
            "attempts": counter.attempts,
            "retried": counter.retried,
            "statuses": dict(sorted(counter.statuses.items())),
            "transport_errors": sum(counter.transport_errors.values()),
            "transport_error_kinds": dict(counter.transport_errors),
        },
        "server": {
            "pid": ctx["pid"],
            "alive_after": ctx["server_alive"],
            "rss_start_mb": round(rss.start_bytes / mb, 1),
            "rss_peak_mb": round(rss.peak_bytes / mb, 1),
            "rss_peak_with_children_mb": round(rss.peak_total_bytes / mb, 1),
            "rss_end_mb": round(getattr(rss, "end_bytes", 0) / mb, 1),
            "rss_samples": rss.samples,
            "log_error_lines": len(ctx["log_errors"]),
            "listen_overflows_host": ctx.get("listen_overflows"),
        },
    }


def format_text(report: dict[str, Any]) -> str:
    m, c, s, t, srv = (report[k] for k in ("machine", "config", "samples", "trainers", "server"))
    lines = [
        f"tinkex serve load: {c['samples']} samples ({c['max_tokens']} tokens max) + "
        f"{c['trainers']} trainers x {c['steps']} steps + save, {c['model']}",
        f"machine: {m['cpus']} CPUs, {m['platform']}, load average before "
        f"{m['load_average_before']}, after {m['load_average_after']}",
        f"errors: {report['errors']['count']}",
        *(f"  {n} x {kind}" for kind, n in report["errors"]["kinds"].items()),
        f"wall time: {report['wall_s']} s (setup {report['setup_s']} s)",
        f"samples: {s['ok']} ok in {s['wall_s']} s = {s['per_s']} samples/s "
        f"({s['tokens_per_s']} tokens/s); latency p50 {s['latency_ms']['p50']} ms, "
        f"p99 {s['latency_ms']['p99']} ms",
        f"trainers: {t['ok']} ok, {t['steps_ok']} steps, {t['saves_ok']} saves in "
        f"{t['wall_s']} s = {t['steps_per_s']} steps/s; step latency p50 "
        f"{t['step_latency_ms']['p50']} ms, p99 {t['step_latency_ms']['p99']} ms; "
        f"trainer p50 {t['trainer_latency_ms']['p50']} ms, p99 {t['trainer_latency_ms']['p99']} ms",
        f"http: {report['http']['attempts']} attempts, {report['http']['retried']} retried, "
        f"statuses {report['http']['statuses']}, "
        f"{report['http']['transport_errors']} transport errors",
        *(f"  {n} x {kind}" for kind, n in report["http"]["transport_error_kinds"].items()),
        f"server RSS: start {srv['rss_start_mb']} MB, peak {srv['rss_peak_mb']} MB "
        f"(with children {srv['rss_peak_with_children_mb']} MB), end {srv['rss_end_mb']} MB",
    ]
    return "\n".join(lines)


# -- entry point ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=1000, help="concurrent sample requests")
    p.add_argument("--trainers", type=int, default=50, help="concurrent LoRA trainers")
    p.add_argument("--steps", type=int, default=3, help="forward_backward+optim_step per trainer")
    p.add_argument("--max-tokens", type=int, default=8, help="tokens per sample")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument(
        "--no-adapter",
        dest="adapter",
        action="store_false",
        help="sample the base model only (default: half on a saved LoRA adapter)",
    )
    p.add_argument("--torch-threads", type=int, default=max(1, min(os.cpu_count() or 1, 2)))
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="write the report as JSON (to stdout without PATH)",
    )
    p.add_argument("--keep", action="store_true", help="keep the data directory and server log")
    args = p.parse_args(argv)
    for name in ("samples", "trainers", "steps", "max_tokens"):
        if getattr(args, name) < (1 if name == "max_tokens" else 0):
            p.error(f"--{name.replace('_', '-')} must be >= {1 if name == 'max_tokens' else 0}")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="tinkex-load-"))
    server = ServerProcess(workdir / "server-data", torch_threads=args.torch_threads)
    counter, errors, res = RequestCounter(), Errors(), Results()
    ctx: dict[str, Any] = {"args": args, "torch_threads": args.torch_threads}
    ctx["load_before"] = load_average()
    overflows_before = listen_overflows()
    log(f"load average {ctx['load_before']}; starting tinkex serve in {workdir}")
    server.start()
    ctx["pid"] = server.pid
    log(f"tinkex serve (pid {server.pid}) on {server.base_url}")
    try:
        with RssWatch(server.pid) as rss:
            try:
                asyncio.run(drive(server.base_url, make_hooks(counter), args, res, errors))
            except Exception as exc:  # setup failed: report it like any other error
                errors.add("setup", exc)
        ctx["rss"] = rss
        ctx["server_alive"] = server.alive
        after = listen_overflows()
        ctx["listen_overflows"] = (
            None if after is None or overflows_before is None else after - overflows_before
        )
    finally:
        server.stop()
        ctx["load_after"] = load_average()
        text = server.log_tail(10_000_000)
        ctx["log_errors"] = [ln for ln in text.splitlines() if _LOG_ERROR.search(ln)]
        if args.keep:
            log(f"kept {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    return build_report(ctx, res, errors, counter)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    if args.json is None:
        print(format_text(report))
    else:
        payload = json.dumps(report, indent=2)
        if args.json == "-":
            print(payload)
        else:
            Path(args.json).write_text(payload + "\n")
            print(format_text(report))
    return 0 if report["errors"]["count"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
