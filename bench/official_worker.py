"""One official tinker client driven round by round from another process (stdlib + tinker).

Run with the python of a venv that holds the official release (tinker 0.38.0 cannot share
the bench environment with 0.16.1): ``python official_worker.py BASE_URL API_KEY MODEL``.
It creates a LoRA training client and a base-model sampler, prints ``ready``, then for
every ``round N`` line on stdin runs N ``get_info``, N one-token ``sample`` and N one-datum
``forward_backward`` calls, each waited for, and prints one JSON line of wall times.
``quit`` (or end of input) stops it. Used by P1 for the protobuf generation.
"""

from __future__ import annotations

import json
import sys
import time

PROMPT = [1, 17, 42, 99, 7]
FB_TOKENS = 32


def main(base_url: str, api_key: str, model: str) -> None:
    import tinker
    from tinker import types as T

    service = tinker.ServiceClient(base_url=base_url, api_key=api_key)
    training = service.create_lora_training_client(model, rank=4)
    sampler = service.create_sampling_client(base_model=model)
    prompt = T.ModelInput.from_ints(PROMPT)
    seq = [(7 * i) % 500 + 3 for i in range(FB_TOKENS + 1)]
    datum = T.Datum(
        model_input=T.ModelInput.from_ints(seq[:-1]),
        loss_fn_inputs={"target_tokens": seq[1:], "weights": [1.0] * FB_TOKENS},
    )
    print(json.dumps({"ready": True, "version": tinker.__version__}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] != "round":
            break
        n = int(cmd[1])
        t0 = time.perf_counter()
        for _ in range(n):
            training.get_info()
        t1 = time.perf_counter()
        for i in range(n):
            sampler.sample(prompt, 1, T.SamplingParams(max_tokens=1, seed=i)).result()
        t2 = time.perf_counter()
        for _ in range(n):
            training.forward_backward([datum], "cross_entropy").result()
        t3 = time.perf_counter()
        print(json.dumps({"info": t1 - t0, "sample": t2 - t1, "fb": t3 - t2}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
