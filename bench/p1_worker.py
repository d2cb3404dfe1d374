"""One P1 side in its own process, driven round by round over stdin/stdout.

``python p1_worker.py KIND BASE_URL API_KEY MODEL`` with KIND one of ``tinker`` (whatever
official release this python has: 0.16.1 in the bench env, 0.38.0 in its own venv),
``tinkex-json``, ``tinkex-protobuf``, or a floor: a keep-alive ``httpx.Client`` doing by
hand the wire work of one generation's client, with no SDK around it: ``raw`` (0.16.1's:
JSON bodies, JSON results, ``get_info`` asked every time) or ``raw-protobuf`` (0.38's:
``get_info`` answered from the value fetched when the client was created, ``sample``'s
and ``forward_backward``'s results asked for as protobuf, ``forward_backward`` sent as a
zstd-compressed protobuf body, as the server's client flags tell 0.38 to). Every side
gets a process of its own so no client pays for another's background threads (event
loops, heartbeats, telemetry) on one GIL.
It creates a LoRA training client and a base-model sampler, prints one JSON line with
``ready``, then for every ``round N`` line runs N ``get_info``, N one-token ``sample`` and
N one-datum ``forward_backward`` calls, each waited for, and prints one JSON line of wall
times. ``quit`` (or end of input) stops it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

PROMPT = [1, 17, 42, 99, 7]
FB_TOKENS = 32


def _sdk(kind: str, base_url: str, api_key: str, model: str) -> tuple[dict[str, Any], str]:
    if kind == "tinker":
        import tinker
        from tinker import types as T

        service: Any = tinker.ServiceClient(base_url=base_url, api_key=api_key)
        version = f"tinker {tinker.__version__}"
    else:
        import tinkex_types as T  # type: ignore[no-redef]
        from tinkex_clients import ServiceClient

        protocol = kind.split("-", 1)[1]
        service = ServiceClient(base_url=base_url, api_key=api_key, protocol=protocol)
        version = f"tinkex {protocol}"
    training = service.create_lora_training_client(model, rank=4)
    sampler = service.create_sampling_client(base_model=model)
    prompt = T.ModelInput.from_ints(PROMPT)
    seq = [(7 * i) % 500 + 3 for i in range(FB_TOKENS + 1)]
    datum = T.Datum(
        model_input=T.ModelInput.from_ints(seq[:-1]),
        loss_fn_inputs={"target_tokens": seq[1:], "weights": [1.0] * FB_TOKENS},
    )
    calls: dict[str, Callable[[int], Any]] = {
        "info": lambda i: training.get_info(),
        "sample": lambda i: sampler.sample(
            prompt, 1, T.SamplingParams(max_tokens=1, seed=i)
        ).result(),
        "fb": lambda i: training.forward_backward([datum], "cross_entropy").result(),
    }
    return calls, version


def _keyed(raw: Any) -> Any:
    """Give every POST of the floor an ``X-Idempotency-Key``, as both official generations
    send one (the server files it with the request: the same server work)."""
    import uuid

    def key(request: Any) -> None:
        if request.method != "GET":
            request.headers["x-idempotency-key"] = uuid.uuid4().hex

    raw.http.event_hooks["request"].append(key)
    return raw


def _raw(base_url: str, model: str) -> tuple[dict[str, Any], str]:
    from bench._clients import RawClient

    raw = _keyed(RawClient(base_url))
    model_id = raw.create_model(model, rank=4)
    sampler = raw.create_sampler(model)
    seq = [(7 * i) % 500 + 3 for i in range(FB_TOKENS + 1)]
    calls: dict[str, Callable[[int], Any]] = {
        "info": lambda i: raw.get_info(model_id),
        "sample": lambda i: raw.sample(sampler, PROMPT, 1, seed=i),
        "fb": lambda i: raw.forward_backward(model_id, seq),
    }
    return calls, "raw httpx"


def _raw_protobuf(base_url: str, model: str) -> tuple[dict[str, Any], str]:
    from bench._clients import RawClient

    raw = _keyed(RawClient(base_url))
    model_id = raw.create_model(model, rank=4)
    sampler = raw.create_sampler(model)
    floor = _ProtoFloor(raw, model_id)
    info = raw.get_info(model_id)  # 0.38 fetches it once, when the client is created
    calls: dict[str, Callable[[int], Any]] = {
        "info": lambda i: info,
        "sample": lambda i: floor.sample(sampler, PROMPT, 1, seed=i),
        "fb": lambda i: floor.forward_backward(),
    }
    return calls, "raw httpx (0.38 wire)"


class _ProtoFloor:
    """The 0.38 generation's wire work over a :class:`bench._clients.RawClient`.

    The protobuf ``forward_backward`` bodies (one per ``seq_id``, zstd-compressed) are built
    ahead of the timed calls, so the floor pays for the wire and the server only, as the
    JSON floor sends ``json=`` bodies that cost microseconds to build.
    """

    PROTOBUF = "application/x-protobuf"

    def __init__(self, raw: Any, model_id: str, ahead: int = 512) -> None:
        import zstandard

        from tinkex_types import (
            PROTOBUF_MEDIA_TYPE,
            Datum,
            ForwardBackwardInput,
            ForwardBackwardRequest,
            ModelInput,
            codec_for,
        )

        self.raw = raw
        self.model_id = model_id
        codec = codec_for(PROTOBUF_MEDIA_TYPE)
        seq = [(7 * i) % 500 + 3 for i in range(FB_TOKENS + 1)]
        datum = Datum(
            model_input=ModelInput.from_ints(seq[:-1]),
            loss_fn_inputs={"target_tokens": seq[1:], "weights": [1.0] * FB_TOKENS},
        )
        fb_input = ForwardBackwardInput(data=[datum], loss_fn="cross_entropy")
        compress = zstandard.ZstdCompressor().compress

        def body(seq_id: int) -> bytes:
            request = ForwardBackwardRequest(
                forward_backward_input=fb_input, model_id=model_id, seq_id=seq_id
            )
            return bytes(compress(codec.encode(request)))

        self.ahead = ahead
        self.body = body
        self.bodies: dict[int, bytes] = {}
        self._prepare(raw._seq[model_id] + 1)

    def _prepare(self, first: int) -> None:
        self.bodies = {k: self.body(k) for k in range(first, first + self.ahead)}

    def wait(self, request_id: str) -> Any:
        """``retrieve_future`` asking for protobuf, as 0.38 does for these results."""
        http = self.raw.http
        while True:
            response = http.post(
                "/api/v1/retrieve_future",
                json={"request_id": request_id, "allow_metadata_only": True},
                headers={"accept": self.PROTOBUF},
                timeout=60.0,
            )
            if response.status_code == 408:
                continue
            response.raise_for_status()
            if response.headers.get("content-type", "").startswith(self.PROTOBUF):
                return response.content
            body = response.json()
            if isinstance(body, dict) and body.get("type") == "try_again":
                continue
            if isinstance(body, dict) and "error" in body:
                raise RuntimeError(f"request {request_id} failed: {body['error']}")
            return body

    def sample(self, sampler: str, prompt: list[int], max_tokens: int, seed: int) -> Any:
        raw = self.raw
        raw._seq[sampler] += 1
        fut = raw.post(
            "/api/v1/asample",
            {
                "sampling_session_id": sampler,
                "seq_id": raw._seq[sampler],
                "num_samples": 1,
                "prompt": {"chunks": [{"tokens": prompt}]},
                "sampling_params": {"max_tokens": max_tokens, "seed": seed},
            },
        )
        return self.wait(fut["request_id"])

    def forward_backward(self) -> Any:
        raw = self.raw
        raw._seq[self.model_id] += 1
        seq_id = raw._seq[self.model_id]
        if seq_id not in self.bodies:  # (only after `ahead` calls; never in a P1 run)
            self._prepare(seq_id)
        response = raw.http.post(
            "/api/v1/forward_backward",
            content=self.bodies.pop(seq_id),
            headers={"content-type": self.PROTOBUF, "content-encoding": "zstd"},
        )
        response.raise_for_status()
        return self.wait(response.json()["request_id"])


def main(kind: str, base_url: str, api_key: str, model: str) -> None:
    if kind == "raw":
        calls, name = _raw(base_url, model)
    elif kind == "raw-protobuf":
        calls, name = _raw_protobuf(base_url, model)
    else:
        calls, name = _sdk(kind, base_url, api_key, model)
    print(json.dumps({"ready": True, "name": name}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] != "round":
            break
        n = int(cmd[1])
        out: dict[str, float] = {}
        for key, fn in calls.items():
            start = time.perf_counter()
            for i in range(n):
                fn(i)
            out[key] = time.perf_counter() - start
        print(json.dumps(out), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main(*sys.argv[1:5])
