"""One P1 side in its own process, driven round by round over stdin/stdout.

``python p1_worker.py KIND BASE_URL API_KEY MODEL`` with KIND one of ``tinker`` (whatever
official release this python has: 0.16.1 in the bench env, 0.38.0 in its own venv),
``tinkex-json``, ``tinkex-protobuf`` or ``raw`` (a keep-alive ``httpx.Client`` speaking
the JSON protocol by hand: the floor). Every side gets a process of its own so no client
pays for another's background threads (event loops, heartbeats, telemetry) on one GIL.
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


def _raw(base_url: str, model: str) -> tuple[dict[str, Any], str]:
    from bench._clients import RawClient

    raw = RawClient(base_url)
    model_id = raw.create_model(model, rank=4)
    sampler = raw.create_sampler(model)
    seq = [(7 * i) % 500 + 3 for i in range(FB_TOKENS + 1)]
    calls: dict[str, Callable[[int], Any]] = {
        "info": lambda i: raw.get_info(model_id),
        "sample": lambda i: raw.sample(sampler, PROMPT, 1, seed=i),
        "fb": lambda i: raw.forward_backward(model_id, seq),
    }
    return calls, "raw httpx"


def main(kind: str, base_url: str, api_key: str, model: str) -> None:
    if kind == "raw":
        calls, name = _raw(base_url, model)
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
