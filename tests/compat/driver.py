"""Drive one official ``tinker`` client generation through the whole loop against a server.

Run it with the python of a virtual environment that has an official ``tinker`` release
installed (0.16.1 ... 0.38.0); it imports nothing from tinkex, so it runs anywhere::

    /work/venvs/t0.38.0/bin/python tests/compat/driver.py --base-url http://127.0.0.1:8123 \
        --api-key tml-compat --model tinkex/tiny-llama-100k

It prints one JSON object on stdout: ``{"tinker_version", "base_url", "model", "steps":
[{"step", "ok", "error"?, "detail"?}, ...], "refused": [loss, ...], "ok"}`` and exits 0 only
if every step passed. A loss the server refuses with a 4xx that names it (a loss it does not
offer) counts as passed and is listed under ``refused``.
Each step is one public client call (or a small group of them) checked for a plausible
result; a failing step records the exception type and message and the loop goes on with
whatever it still has (later steps that need an earlier result are then recorded as
failed with ``DependencyFailed``).

API differences between generations are handled by feature detection (``hasattr``, the
loss names of ``tinker.types.LossFnType``), never by comparing version strings, except to
label the report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
import typing
import urllib.request
from collections.abc import Callable
from typing import Any

TIMEOUT_S = 60.0
PHRASES = ["The cat sat on the mat.", "One two three four five.", "Hello world, this is tinkex."]
FALLBACK_IDS = [[1, 40, 41, 42, 43, 44, 45, 2], [1, 50, 51, 52, 53, 2], [1, 60, 61, 62, 63, 64, 2]]


class DependencyFailed(Exception):
    """A step could not run because an earlier step it needs failed."""


class CheckFailed(Exception):
    """A call returned, but its result is wrong."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def resolve(value: Any) -> Any:
    """Unwrap futures (APIFuture, ConcurrentFuture, Backcompat*Future) into their results."""
    for _ in range(4):
        result = getattr(value, "result", None)
        if not callable(result) or isinstance(value, type):
            return value
        try:
            value = result(timeout=TIMEOUT_S)
        except TypeError as exc:
            if "timeout" not in str(exc):
                raise
            value = result()
    return value


class Report:
    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.state: dict[str, Any] = {}

    def need(self, *keys: str) -> list[Any]:
        missing = [k for k in keys if k not in self.state]
        if missing:
            raise DependencyFailed(f"needs {', '.join(missing)} from an earlier step")
        return [self.state[k] for k in keys]

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        started = time.monotonic()
        entry: dict[str, Any] = {"step": name}
        try:
            detail = fn()
            entry["ok"] = True
            if detail is not None:
                entry["detail"] = detail
        except Exception as exc:
            entry["ok"] = False
            entry["error"] = f"{type(exc).__name__}: {_short(str(exc))}"
            if not isinstance(exc, (DependencyFailed, CheckFailed)):
                entry["where"] = _where(exc)
        entry["seconds"] = round(time.monotonic() - started, 3)
        self.steps.append(entry)
        print(f"[compat] {name}: {'ok' if entry['ok'] else entry['error']}", file=sys.stderr)
        return entry["ok"]


def _short(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if "site-packages" in f.filename] or frames
    last = inside[-1]
    path = last.filename.split("site-packages/")[-1]
    return f"{path}:{last.lineno}"


def named_refusal(exc: BaseException, loss: str) -> str | None:
    """The message of a 4xx refusal that names ``loss`` (a server that does not offer a loss
    says so: the step counts as passed, reported as ``refused``), else ``None``."""
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int) or not 400 <= status < 500 or status in (408, 409, 429):
        return None
    message = str(exc)
    return _short(message, 300) if repr(loss) in message or f'"{loss}"' in message else None


def loss_names(types: Any) -> list[str]:
    alias = getattr(types, "LossFnType", None)
    names = [n for n in typing.get_args(alias) if isinstance(n, str)] if alias else []
    return [n for n in names if n != "custom"] or ["cross_entropy"]


# --------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------


def run_loop(args: argparse.Namespace, report: Report) -> None:
    import tinker
    from tinker import types

    st = report.state
    st["types"] = types

    def service() -> Any:
        kwargs: dict[str, Any] = {}
        st["service"] = tinker.ServiceClient(**kwargs)
        return None

    report.run("service_client", service)
    _training_steps(args, report, types)
    _sampling_steps(args, report, types)
    _state_steps(args, report, types)
    _rest_steps(args, report, types)
    _close_steps(report)


def _training_steps(args: argparse.Namespace, report: Report, types: Any) -> None:
    st = report.state
    model = args.model

    def capabilities() -> Any:
        (service,) = report.need("service")
        caps = resolve(service.get_server_capabilities())
        names = [m.model_name for m in caps.supported_models]
        check(model in names, f"{model} not in supported_models {names}")
        return {"models": len(names)}

    def create_lora() -> Any:
        (service,) = report.need("service")
        training = resolve(service.create_lora_training_client(base_model=model, rank=4, seed=0))
        info = resolve(training.get_info())
        check(info.model_data.model_name == model, f"model_name {info.model_data.model_name}")
        st["training"] = training
        st["model_id"] = info.model_id
        return {
            "model_id": info.model_id,
            "tokenizer_id": getattr(info.model_data, "tokenizer_id", None),
        }

    def get_tokenizer() -> Any:
        (training,) = report.need("training")
        tokenizer = training.get_tokenizer()
        ids = [tokenizer.encode(p, add_special_tokens=False) for p in PHRASES]
        check(all(ids), "empty encodings")
        check(
            tokenizer.decode(ids[0]) == PHRASES[0], f"round trip gave {tokenizer.decode(ids[0])!r}"
        )
        eos = tokenizer.eos_token_id
        check(eos is not None, "tokenizer has no eos_token_id")
        st["tokenizer"] = tokenizer
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else 1
        st["sequences"] = [[bos, *row, eos] for row in ids]
        st["stop_text"] = "."
        return {"type": type(tokenizer).__name__, "eos": eos}

    report.run("get_server_capabilities", capabilities)
    report.run("create_lora_training_client", create_lora)
    report.run("get_tokenizer", get_tokenizer)
    st.setdefault("sequences", FALLBACK_IDS)

    def datum(ids: list[int], **extra: list[float]) -> Any:
        inputs: dict[str, Any] = {"target_tokens": ids[1:], **extra}
        if "advantages" not in extra:
            inputs["weights"] = [1.0] * (len(ids) - 1)
        return types.Datum(model_input=types.ModelInput.from_ints(ids[:-1]), loss_fn_inputs=inputs)

    def forward() -> Any:
        (training,) = report.need("training")
        seqs = st["sequences"]
        out = resolve(training.forward([datum(s) for s in seqs], "cross_entropy"))
        lps = [list(map(float, o["logprobs"].tolist())) for o in out.loss_fn_outputs]
        check([len(r) for r in lps] == [len(s) - 1 for s in seqs], "logprob lengths")
        check(all(v <= 0 for r in lps for v in r), "positive logprob")
        loss = out.metrics["loss:sum"]
        check(math.isclose(loss, -sum(map(sum, lps)), rel_tol=1e-3), f"loss:sum {loss}")
        st["logprobs"] = lps
        return {"loss:sum": loss}

    report.run("forward", forward)

    for loss in loss_names(types):
        report.run(
            f"forward_backward[{loss}]", lambda loss=loss: _fwdbwd(report, types, datum, loss)
        )

    def optim_step() -> Any:
        (training,) = report.need("training")
        out = resolve(training.optim_step(types.AdamParams(learning_rate=1e-2)))
        return {"metrics": dict(getattr(out, "metrics", None) or {})}

    report.run("optim_step", optim_step)

    def loss_falls() -> Any:
        (training,) = report.need("training")
        data = [datum(s) for s in st["sequences"]]
        losses = []
        for _ in range(3):
            fb = training.forward_backward(data, "cross_entropy")
            opt = training.optim_step(types.AdamParams(learning_rate=1e-2))
            losses.append(resolve(fb).metrics["loss:sum"])
            resolve(opt)
        check(losses[-1] < losses[0], f"loss did not fall: {losses}")
        return {"losses": losses}

    report.run("train_3_steps_cross_entropy", loss_falls)


def _fwdbwd(report: Report, types: Any, datum: Callable[..., Any], loss: str) -> Any:
    (training,) = report.need("training")
    seqs = report.state["sequences"]
    if loss == "cross_entropy":
        data = [datum(s) for s in seqs]
        config = None
    else:
        # Logprobs of the current weights from the forward step; if that step failed, a
        # stand-in (the losses still run, with a ratio != 1).
        lps = report.state.get("logprobs") or [[-2.0] * (len(s) - 1) for s in seqs]
        data = []
        for i, (s, lp) in enumerate(zip(seqs, lps, strict=True)):
            fields: dict[str, Any] = {"logprobs": lp, "advantages": [1.0 - i * 0.5] * len(lp)}
            if loss == "gspo":
                fields["sequence_ratio_mask"] = [1.0] * len(lp)
            data.append(datum(s, **fields))
        config = {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2} if loss == "ppo" else None
        if loss == "dro":
            config = {"beta": 0.1}
    try:
        out = resolve(
            training.forward_backward(data, loss, config)
            if config
            else training.forward_backward(data, loss)
        )
    except Exception as exc:
        refusal = named_refusal(exc, loss)
        if refusal is None:
            raise
        report.state.setdefault("refused", []).append(loss)
        return {"refused": refusal}
    value = out.metrics.get("loss:sum")
    check(value is not None and math.isfinite(value), f"loss:sum {value}")
    check(len(out.loss_fn_outputs) == len(seqs), f"{len(out.loss_fn_outputs)} outputs")
    return {"loss:sum": value}


def _sampling_steps(args: argparse.Namespace, report: Report, types: Any) -> None:
    st = report.state

    def save_and_sample_client() -> Any:
        (training,) = report.need("training")
        sampler = resolve(training.save_weights_and_get_sampling_client(name="compat-sampler"))
        st["sampler"] = sampler
        return None

    report.run("save_weights_and_get_sampling_client", save_and_sample_client)

    def prompt() -> Any:
        return types.ModelInput.from_ints(st["sequences"][0][:4])

    def sample_basic() -> Any:
        (sampler,) = report.need("sampler")
        params = types.SamplingParams(max_tokens=8, temperature=1.0, seed=7)
        out = resolve(sampler.sample(prompt=prompt(), num_samples=3, sampling_params=params))
        check(len(out.sequences) == 3, f"{len(out.sequences)} sequences")
        again = resolve(sampler.sample(prompt=prompt(), num_samples=3, sampling_params=params))
        same = [s.tokens for s in out.sequences] == [s.tokens for s in again.sequences]
        check(same, "same seed gave different tokens")
        check(all(len(s.tokens) <= 8 for s in out.sequences), "more than max_tokens")
        has_lp = all(
            s.logprobs is not None and len(s.logprobs) == len(s.tokens) for s in out.sequences
        )
        check(has_lp, "sampled logprobs missing")
        return {"stop_reasons": [str(s.stop_reason) for s in out.sequences]}

    def sample_stop() -> Any:
        (sampler,) = report.need("sampler")
        stop: Any = [st["sequences"][0][5]] if "tokenizer" not in st else [st["stop_text"]]
        params = types.SamplingParams(max_tokens=16, temperature=1.0, seed=3, stop=stop)
        out = resolve(sampler.sample(prompt=prompt(), num_samples=2, sampling_params=params))
        check(len(out.sequences) == 2, f"{len(out.sequences)} sequences")
        return {"stop": stop, "lengths": [len(s.tokens) for s in out.sequences]}

    def sample_prompt_logprobs() -> Any:
        (sampler,) = report.need("sampler")
        params = types.SamplingParams(max_tokens=4, temperature=1.0, seed=1, stop=[2])
        out = resolve(
            sampler.sample(
                prompt=prompt(),
                num_samples=1,
                sampling_params=params,
                include_prompt_logprobs=True,
                topk_prompt_logprobs=2,
            )
        )
        plp = out.prompt_logprobs
        check(plp is not None and len(plp) == 4, f"prompt_logprobs {plp}")
        check(plp[0] is None, f"prompt_logprobs[0] is {plp[0]!r}, expected None")
        topk = out.topk_prompt_logprobs
        check(topk is not None and len(topk) == 4, f"topk_prompt_logprobs {topk}")
        return {"prompt_logprobs": plp}

    def compute_logprobs() -> Any:
        (sampler,) = report.need("sampler")
        seq = st["sequences"][0]
        lps = resolve(sampler.compute_logprobs(types.ModelInput.from_ints(seq)))
        check(len(lps) == len(seq) and lps[0] is None, f"compute_logprobs {lps}")
        return {"n": len(lps)}

    report.run("sample[num_samples,seed,logprobs]", sample_basic)
    report.run("sample[stop]", sample_stop)
    report.run("sample[prompt_logprobs,topk]", sample_prompt_logprobs)
    report.run("compute_logprobs", compute_logprobs)


def _state_steps(args: argparse.Namespace, report: Report, types: Any) -> None:
    st = report.state

    def save_state() -> Any:
        (training,) = report.need("training")
        path = resolve(training.save_state("compat-state")).path
        check(path.startswith("tinker://"), f"path {path}")
        st["state_path"] = path
        sampler_path = resolve(training.save_weights_for_sampler("compat-weights")).path
        st["sampler_path"] = sampler_path
        return {"state": path, "sampler_weights": sampler_path}

    def load_state() -> Any:
        training, path = report.need("training", "state_path")
        resolve(training.load_state(path))
        return None

    def load_state_with_optimizer() -> Any:
        training, path = report.need("training", "state_path")
        resolve(training.load_state_with_optimizer(path))
        return None

    def from_state() -> Any:
        service, path = report.need("service", "state_path")
        restored = resolve(service.create_training_client_from_state(path))
        info = resolve(restored.get_info())
        check(info.model_data.model_name == args.model, f"model {info.model_data.model_name}")
        st["restored"] = restored
        return {"model_id": info.model_id}

    def from_state_with_optimizer() -> Any:
        service, path = report.need("service", "state_path")
        fn = getattr(service, "create_training_client_from_state_with_optimizer", None)
        check(fn is not None, "client has no create_training_client_from_state_with_optimizer")
        restored = resolve(fn(path))
        resolve(restored.get_info())
        return None

    def sampling_from_path() -> Any:
        service, path = report.need("service", "sampler_path")
        sampler = resolve(service.create_sampling_client(model_path=path))
        params = types.SamplingParams(max_tokens=4, seed=0)
        out = resolve(
            sampler.sample(
                prompt=types.ModelInput.from_ints([1, 5, 6]), num_samples=1, sampling_params=params
            )
        )
        check(len(out.sequences) == 1, "no sequence")
        return None

    report.run("save_state+save_weights_for_sampler", save_state)
    report.run("load_state", load_state)
    report.run("load_state_with_optimizer", load_state_with_optimizer)
    report.run("create_training_client_from_state", from_state)
    report.run("create_training_client_from_state_with_optimizer", from_state_with_optimizer)
    report.run("create_sampling_client(model_path)", sampling_from_path)


def _rest_steps(args: argparse.Namespace, report: Report, types: Any) -> None:
    st = report.state

    def rest() -> Any:
        (service,) = report.need("service")
        st["rest"] = service.create_rest_client()
        return None

    def list_runs() -> Any:
        (rest_client,) = report.need("rest")
        runs = resolve(rest_client.list_training_runs())
        ids = [r.training_run_id for r in runs.training_runs]
        check(len(ids) >= 1, "no training runs listed")
        return {"runs": len(ids)}

    def run_info() -> Any:
        rest_client, model_id, path = report.need("rest", "model_id", "state_path")
        run = resolve(rest_client.get_training_run(model_id))
        by_path = resolve(rest_client.get_training_run_by_tinker_path(path))
        check(by_path.training_run_id == run.training_run_id, "run by path differs")
        fn = getattr(rest_client, "get_weights_info_by_tinker_path", None)
        if fn is not None:
            resolve(fn(path))
        return {"training_run_id": run.training_run_id}

    def list_ckpts() -> Any:
        rest_client, model_id = report.need("rest", "model_id")
        ckpts = resolve(rest_client.list_checkpoints(model_id))
        paths = [c.tinker_path for c in ckpts.checkpoints]
        check(any(p == st.get("state_path") for p in paths), f"state not listed in {paths}")
        user = resolve(rest_client.list_user_checkpoints())
        return {"checkpoints": len(paths), "user_checkpoints": len(user.checkpoints)}

    def publish_cycle() -> Any:
        rest_client, path = report.need("rest", "sampler_path")
        resolve(rest_client.publish_checkpoint_from_tinker_path(path))
        resolve(rest_client.unpublish_checkpoint_from_tinker_path(path))
        resolve(rest_client.set_checkpoint_ttl_from_tinker_path(path, 7200))
        return None

    def download() -> Any:
        rest_client, training, path = report.need("rest", "training", "sampler_path")
        if hasattr(rest_client, "get_checkpoint_archive_url_from_tinker_path"):
            resp = resolve(rest_client.get_checkpoint_archive_url_from_tinker_path(path))
            url = resp.url
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as fetched:
                body = fetched.read()
            check(len(body) > 0, "empty archive")
            return {"api": "archive_url", "bytes": len(body)}
        ext = resolve(training.save_weights_external("compat-external"))
        urls = resolve(rest_client.get_external_weights_urls(ext.path))
        files = dict(urls.urls)
        check(len(files) > 0, "no external weight files")
        sizes = {}
        for name, url in files.items():
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as fetched:
                sizes[name] = len(fetched.read())
        return {"api": "save_weights_external", "files": sizes}

    def delete() -> Any:
        rest_client, path = report.need("rest", "sampler_path")
        resolve(rest_client.delete_checkpoint_from_tinker_path(path))
        return None

    def sessions() -> Any:
        rest_client, service = report.need("rest", "service")
        listed = resolve(rest_client.list_sessions())
        ids = list(listed.sessions)
        check(len(ids) >= 1, "no sessions")
        session_id = service.holder.get_session_id()
        got = resolve(rest_client.get_session(session_id))
        check(len(got.training_run_ids) >= 1, f"session has no runs: {got}")
        return {"sessions": len(ids)}

    report.run("create_rest_client", rest)
    report.run("rest.list_training_runs", list_runs)
    report.run("rest.get_training_run(+by_tinker_path,weights_info)", run_info)
    report.run("rest.list_checkpoints(+user)", list_ckpts)
    report.run("rest.publish/unpublish/set_ttl", publish_cycle)
    report.run("rest.download", download)
    report.run("rest.delete_checkpoint", delete)
    report.run("rest.sessions(list,get)", sessions)


def _close_steps(report: Report) -> None:
    def close() -> Any:
        (service,) = report.need("service")
        if hasattr(service, "close"):
            resolve(service.close("success"))
            return {"api": "ServiceClient.close"}
        holder = service.holder
        holder.close()
        return {"api": "holder.close (no public close in this version)"}

    report.run("close", close)


def main(argv: list[str] | None = None) -> int:
    global TIMEOUT_S
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", default="tml-compat-key")
    parser.add_argument("--model", default="tinkex/tiny-llama-100k")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S)
    parser.add_argument(
        "--allow-hub", action="store_true", help="let get_tokenizer reach the HF hub"
    )
    args = parser.parse_args(argv)
    TIMEOUT_S = args.timeout

    for name in list(os.environ):
        if name.startswith(("TINKER_", "CLOUDFLARE_ACCESS_")):
            del os.environ[name]
    os.environ["TINKER_BASE_URL"] = args.base_url
    os.environ["TINKER_API_KEY"] = args.api_key
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
    if not args.allow_hub:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

    report = Report()
    try:
        import tinker

        version = getattr(tinker, "__version__", "unknown")
    except Exception as exc:
        version = f"import failed: {exc}"
    try:
        run_loop(args, report)
    except Exception as exc:
        report.steps.append(
            {"step": "driver", "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        )
    ok = bool(report.steps) and all(s["ok"] for s in report.steps)
    result = {
        "tinker_version": version,
        "base_url": args.base_url,
        "model": args.model,
        "ok": ok,
        "failed": [s["step"] for s in report.steps if not s["ok"]],
        "refused": report.state.get("refused", []),
        "steps": report.steps,
    }
    print(json.dumps(result, indent=2, default=str))
    sys.stdout.flush()
    # The official clients leave non-daemon threads (event loop, heartbeat) behind.
    os._exit(0 if ok else 1)


if __name__ == "__main__":
    sys.exit(main())
