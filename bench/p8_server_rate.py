"""P8 server rate: requests/s ``tinkex serve`` answers from 64 concurrent keep-alive
connections, against the same uvicorn + FastAPI stack answering a constant.

Three targets, each loaded the same way for a fixed time per round (rounds alternate):

* the ceiling: ``bench/bare_server.py``, uvicorn + FastAPI with one route returning a
  constant (no tinkex at all), in its own process;
* ``tinkex serve``'s ``get_info`` of a LoRA model;
* ``tinkex serve``'s ``retrieve_future`` of a completed ``sample`` (answered from the
  futures table).

The load generator is asyncio streams writing pre-built HTTP/1.1 requests on 64
connections and reading the answers by ``Content-Length`` (far cheaper per request than
any HTTP client library, so the server is what is measured; it still shares the 2 cores
with the server, equally for all three). The figure is the lower of the two tinkex rates
over the ceiling's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from bench._clients import SMALL_MODEL, RawClient
from bench._harness import Context, Row, log, median, rounds_within
from bench._server import API_KEY

KEY = "p8"
TITLE = "server requests/s, 64 keep-alive connections"
OP: Final = ">="
TARGET = 0.5
UNIT = "×"
CONNECTIONS = 64

_LISTENING = re.compile(r"listening on (http://\S+)")


def _request(host: str, port: int, path: str, body: dict[str, object]) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nX-API-Key: {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def _connection(
    host: str, port: int, request: bytes, deadline: float, counts: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if status != 200:
                raise RuntimeError(f"answered {status}: {head[:200]!r}")
            counts[0] += 1
    finally:
        writer.close()


def _rate(url: str, path: str, body: dict[str, object], seconds: float) -> float:
    """Requests/s answered over ``seconds`` by ``CONNECTIONS`` keep-alive connections."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = _request(host, port, path, body)

    async def main() -> float:
        counts = [0]
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(
            *(_connection(host, port, request, deadline, counts) for _ in range(CONNECTIONS))
        )
        return counts[0] / (time.perf_counter() - start)

    return asyncio.run(main())


class _BareServer:
    def __init__(self, log_path: Path) -> None:
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self.log_path = log_path
        with log_path.open("wb") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.bare_server"],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            match = _LISTENING.search(log_path.read_text(errors="replace"))
            if match:
                self.url = match.group(1)
                time.sleep(0.2)  # uvicorn starts serving right after the print
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"bare server exited: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("bare server did not start within 60 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def run(ctx: Context) -> Row:
    seconds, rounds = (0.5, 1) if ctx.tiny else (4.0, 3)
    url = ctx.server().base_url
    log(f"p8: {rounds} rounds x {seconds:.0f} s per target, {CONNECTIONS} connections")
    raw = RawClient(url)
    try:
        model_id = raw.create_model(SMALL_MODEL, rank=4)
        sampler = raw.create_sampler(SMALL_MODEL)
        raw._seq[sampler] += 1
        fut = raw.post(
            "/api/v1/asample",
            {
                "sampling_session_id": sampler,
                "seq_id": raw._seq[sampler],
                "num_samples": 1,
                "prompt": {"chunks": [{"tokens": [1, 2, 3]}]},
                "sampling_params": {"max_tokens": 1, "seed": 0},
            },
        )
        request_id = fut["request_id"]
        raw.wait(request_id)  # completed: every later retrieve_future answers at once
    finally:
        raw.close()
    bare = _BareServer(ctx.scratch("p8") / "bare.log")
    targets = {
        "bare": (bare.url, "/api/v1/get_info", {"model_id": model_id}),
        "get_info": (url, "/api/v1/get_info", {"model_id": model_id}),
        "retrieve_future": (url, "/api/v1/retrieve_future", {"request_id": request_id}),
    }
    rates: dict[str, list[float]] = {k: [] for k in targets}
    try:
        for u, path, body in targets.values():
            _rate(u, path, body, min(seconds, 0.5))  # warm-up
        for r in rounds_within(rounds, 60, KEY):
            names = list(targets)
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                u, path, body = targets[name]
                rates[name].append(_rate(u, path, body, seconds))
    finally:
        bare.stop()
    med = {k: median(v) for k, v in rates.items()}
    ratios = {k: med[k] / med["bare"] for k in ("get_info", "retrieve_future")}
    detail = (
        f"get_info {med['get_info']:.0f} req/s ({ratios['get_info']:.2f}×), "
        f"retrieve_future (completed) {med['retrieve_future']:.0f} req/s "
        f"({ratios['retrieve_future']:.2f}×), bare uvicorn+FastAPI constant route "
        f"{med['bare']:.0f} req/s"
    )
    return Row(
        key=KEY,
        title=f"{TITLE} (lower of get_info/retrieve_future over bare FastAPI)",
        value=min(ratios.values()),
        unit=UNIT,
        op=OP,
        target=TARGET,
        detail=detail,
        extra={"rates": rates, "median": med, "ratios": ratios, "connections": CONNECTIONS},
    )
