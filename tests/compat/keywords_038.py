"""Drive the official ``tinker`` 0.38 client's new keywords against a server.

Run with the python of an environment holding ``tinker==0.38.0`` (imports nothing from
tinkex)::

    /work/venvs/t0.38.0/bin/python tests/compat/keywords_038.py --base-url URL --api-key KEY

Prints one JSON object ``{"steps": [{"step", "ok", "error"?}], "ok"}``; exits 0 only if
every step passed. Steps: checkpoint ``user_metadata`` listed back, ``overwrite`` refused
then allowed, a Dimuon optimizer refused naming ``optimizer_config.type``,
``create_training_client_from_state(optimizer=)``, an inflight sampler save, and the sampling
extras (``topk_sample_logprobs``, ``prompt_logprobs_last_n``, ``target_prompt_logprobs``,
``prompt_alt_tokens_k``, ``compute_logprobs(prompt_logprobs_last_n=)``) as the client
decodes them (protobuf results).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from collections.abc import Callable
from typing import Any

PROMPT = [1, 17, 93, 4, 250, 31, 8, 77]


class Steps:
    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def run(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
            self.steps.append({"step": name, "ok": True})
        except Exception as exc:  # a failed step is recorded, the others still run
            self.steps.append(
                {
                    "step": name,
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}",
                    "trace": traceback.format_exc(limit=3),
                }
            )


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def refused_naming(call: Callable[[], Any], needle: str) -> None:
    try:
        call()
    except Exception as exc:
        check(needle in str(exc), f"refused without naming {needle!r}: {exc}")
        return
    raise AssertionError(f"not refused (expected an error naming {needle!r})")


def run(args: argparse.Namespace, steps: Steps) -> None:
    import numpy as np
    import tinker
    from tinker import types

    service = tinker.ServiceClient(base_url=args.base_url, api_key=args.api_key)
    rest = tinker.RestClient(base_url=args.base_url, api_key=args.api_key)
    tc = service.create_lora_training_client(base_model=args.model, rank=4, seed=1).result()

    def listed(name: str) -> Any:
        ckpts = rest.list_checkpoints(tc.model_id).result().checkpoints
        return {c.checkpoint_id: c for c in ckpts}[name]

    def metadata() -> None:
        tc.save_state("kw", user_metadata={"stage": "one"}).result()
        check(listed("weights/kw").user_metadata == {"stage": "one"}, "metadata not listed")

    def overwrite() -> None:
        refused_naming(lambda: tc.save_state("kw").result(), "overwrite")
        tc.save_state("kw", overwrite=True, user_metadata={"stage": "two"}).result()
        check(listed("weights/kw").user_metadata == {"stage": "two"}, "not replaced")

    def optimizer() -> None:
        refused_naming(
            lambda: service.create_lora_training_client(
                base_model=args.model, rank=4, optimizer=types.DimuonOptimizerConfig()
            ).result(),
            "optimizer_config.type",
        )
        path = tc.save_state("opt").result().path
        again = service.create_training_client_from_state(
            path, optimizer=types.AdamOptimizerConfig()
        ).result()
        check(again.get_info().optimizer_config.type == "adamw", "optimizer not reported")

    steps.run("user_metadata", metadata)
    steps.run("overwrite", overwrite)
    steps.run("optimizer", optimizer)

    sampler: dict[str, Any] = {}

    def inflight() -> None:
        sampler["client"] = tc.save_weights_and_get_sampling_client(kind="inflight").result()

    def extras() -> None:
        sc = sampler["client"]
        prompt = types.ModelInput.from_ints(PROMPT)
        params = types.SamplingParams(max_tokens=3, temperature=0.0, seed=1)
        full = sc.compute_logprobs(prompt).result()
        ids = np.full((len(PROMPT) - 1, 2), -1, dtype=np.int64)
        ids[:, 0] = PROMPT[1:]
        out = sc.sample(
            prompt,
            1,
            params,
            include_prompt_logprobs=True,
            topk_sample_logprobs=3,
            target_prompt_logprobs=types.TensorData.from_numpy(ids),
            prompt_alt_tokens_k=2,
            prompt_logprobs_last_n=2,
        ).result()
        seq = out.sequences[0]
        check(seq.topk_logprobs is not None, "no topk_logprobs")
        check([row[0][0] for row in seq.topk_logprobs] == list(seq.tokens), "top-1 != token")
        lps = out.prompt_logprobs
        check(lps[:-2] == [None] * (len(PROMPT) - 2), f"last_n ignored: {lps}")
        pairs = zip(lps[-2:], full[-2:], strict=True)
        check(all(math.isclose(a, b, abs_tol=1e-4) for a, b in pairs), "last_n logprobs")
        target = out.target_prompt_logprobs.to_numpy()
        check(list(target.shape) == [len(PROMPT) - 1, 2], f"target shape {target.shape}")
        pairs = zip(target[:, 0].tolist(), full[1:], strict=True)
        check(
            all(math.isclose(a, b, abs_tol=1e-4) for a, b in pairs),
            "target logprobs differ from prompt logprobs",
        )
        alt = out.prompt_alt_tokens.tokens.to_numpy()
        check(list(alt.shape) == [len(PROMPT) - 1, 2], f"alt shape {alt.shape}")
        # Sparse CSR: only the listed cells are sent and answered (row 0 col 0, row 4 col 1).
        sparse = types.TensorData(
            data=[PROMPT[1], PROMPT[5]],
            dtype="int64",
            shape=[len(PROMPT) - 1, 2],
            sparse_crow_indices=[0, 1, 1, 1, 1, 2, 2, 2],
            sparse_col_indices=[0, 1],
        )
        got = sc.sample(prompt, 1, params, target_prompt_logprobs=sparse).result()
        answer = got.target_prompt_logprobs  # sparse too: the listed cells' logprobs
        check(list(answer.sparse_crow_indices) == list(sparse.sparse_crow_indices), "crow")
        check(list(answer.sparse_col_indices) == [0, 1], "sparse columns")
        values = [float(v) for v in answer.data]
        pairs = zip(values, [full[1], full[5]], strict=True)
        check(all(math.isclose(a, b, abs_tol=1e-4) for a, b in pairs), f"sparse {values}")
        last = sc.compute_logprobs(prompt, prompt_logprobs_last_n=3).result()
        check(last[:-3] == [None] * (len(PROMPT) - 3), f"compute_logprobs last_n: {last}")

    steps.run("inflight sampler", inflight)
    steps.run("sampling extras", extras if "client" in sampler else lambda: check(False, "dep"))
    steps.run(
        "record_stability_info refused",
        lambda: refused_naming(
            lambda: (
                service.create_sampling_client(base_model=args.model, record_stability_info=True)
                .result()
                .sample(types.ModelInput.from_ints(PROMPT), 1, types.SamplingParams(max_tokens=1))
                .result()
            ),
            "record_stability_info",
        ),
    )
    service.close("success").result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--model", default="tinkex/tiny-llama-100k")
    args = parser.parse_args()
    steps = Steps()
    try:
        run(args, steps)
    except Exception as exc:
        steps.steps.append({"step": "setup", "ok": False, "error": f"{type(exc).__name__}: {exc}"})
    ok = all(s["ok"] for s in steps.steps)
    print(json.dumps({"steps": steps.steps, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
