"""Conformance: the official ``tinker==0.16.1`` client against ``tinkex serve``.

Nobody on this project wrote that client, so it is the honest check that tinkex-server
speaks the wire protocol of spec/protocol.md §2. The test starts ``tinkex serve`` as a
subprocess on 127.0.0.1 (``--port 0``, a temporary data directory, ``--api-key``, test
routes on), waits for ``/api/v1/healthz``, points the client at it with ``TINKER_BASE_URL``
and ``TINKER_API_KEY=tml-...`` and drives the client's public API, unchanged. Covered, each
with a result check that could fail:

* ``ServiceClient()``, ``get_server_capabilities``, ``create_lora_training_client`` on the
  built-in ``tinkex/tiny-llama-1m``, ``TrainingClient.get_info`` and ``get_tokenizer``
  (ids equal to the bundled tokenizer's);
* ``forward``; five rounds of ``forward_backward`` + ``optim_step`` with ``cross_entropy``
  (the loss falls every round); ``importance_sampling``, ``cispo`` and ``dro`` at ratio 1
  (loss ``-sum(A)``, ``-sum(A*lp)``), ``ppo`` with clip thresholds (loss recomputed here);
  ``forward_backward_custom``; a 1030-datum ``forward`` that the client splits into two
  chunks (outputs and the merged ``loss:sum`` checked);
* ``save_weights_and_get_sampling_client``, ``sample`` with ``num_samples=3``, ``seed`` and a
  string ``stop`` (same seed, same tokens; never past a stop), ``sample`` with a token-id
  ``stop`` and prompt / top-k prompt logprobs, ``compute_logprobs`` (equal to the training
  forward), ``SamplingClient.get_base_model`` / ``get_tokenizer``, a pickled copy of the
  sampling client (seq_ids from k * 10**9; same tokens);
* ``save_state``, ``save_weights_for_sampler``, ``load_state``, ``load_state_with_optimizer``,
  ``create_training_client_from_state`` and ``..._with_optimizer`` (weights come back
  exactly), ``ServiceClient.create_sampling_client`` from a ``model_path`` and a
  ``base_model``, ``TrainingClient.create_sampling_client`` from a ``weights/`` path;
* ``RestClient``: ``list_checkpoints``, ``list_user_checkpoints``, ``list_training_runs``,
  ``get_training_run``, ``get_training_run_by_tinker_path``,
  ``get_weights_info_by_tinker_path``, ``list_sessions``, ``get_session``, ``get_sampler``,
  ``publish``/``unpublish_checkpoint_from_tinker_path``,
  ``set_checkpoint_ttl_from_tinker_path``, ``delete_checkpoint_from_tinker_path``,
  ``get_checkpoint_archive_url`` (its ``Expires`` header parsed) and
  ``get_checkpoint_archive_url_from_tinker_path``, each archive fetched by a plain HTTP GET
  (no key, no Tinker headers) and opened as a PEFT tar;
* the client's own background traffic: its telemetry batch arrives and is accepted, and it
  logs no warning at all (it warns on every protocol hiccup it works around: a 200
  ``try_again``, a rejected telemetry batch, missed heartbeats) except the unconditional
  "Creating checkpoint archive" notice.

Every call above succeeds against tinkex-server; none had to be left out.

``get_tokenizer`` in 0.16.1 calls ``transformers.AutoTokenizer.from_pretrained(name)``. The
test makes the name resolve offline with a Hugging Face cache in tmp
(``hf/hub/models--tinkex--tiny-llama-1m/{refs/main,snapshots/<rev>/...}``) written by
``tinkex_server.export_builtin_model`` (transformers 5.x also wants ``config.json`` there)
and the hub switched to offline mode.

Teardown reaches past the public API once: 0.16.1 has no way to stop a ServiceClient, so
``_shut_down`` calls ``holder.close()`` (cancels the heartbeat and telemetry tasks) and closes
the holder's pooled HTTP clients on the client's event loop. Left alone, they would keep
running for the rest of the test session and their sockets would surface later as
``ResourceWarning`` in an unrelated test.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import math
import os
import pickle
import sys
import tarfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "compat"))

import compat_harness as harness

MODEL = "tinkex/tiny-llama-1m"
API_KEY = "tml-conformance-test-key"
CALL_TIMEOUT_S = 30.0  # every future .result() is bounded by this

pytestmark = [pytest.mark.conformance]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[harness.Served]:
    """``tinkex serve`` in a subprocess on a free port with a fresh data directory."""
    with harness.serve(tmp_path, flags=["--enable-test-routes"], api_key=API_KEY) as served:
        yield served


@pytest.fixture
def offline_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hugging Face hub cache holding the built-in model, with the hub offline.

    ``huggingface_hub`` reads its environment once, at import; it is imported first (with the
    real environment) and its constants are patched for this test only, so the result does
    not depend on whether another test imported it before.
    """
    import huggingface_hub.constants as hf_constants

    import tinkex_server

    hf_home = tmp_path / "hf"
    hub = hf_home / "hub"
    repo = hub / ("models--" + MODEL.replace("/", "--"))
    revision = "0" * 40
    snapshot = repo / "snapshots" / revision
    tinkex_server.export_builtin_model(MODEL, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    for name, value in {
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(hf_constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return snapshot


def _logprobs(output: Any) -> list[list[float]]:
    return [entry["logprobs"].tolist() for entry in output.loss_fn_outputs]


def _close(a: list[float], b: list[float], tol: float = 1e-4) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


PHRASES = [
    "The cat sat on the mat.",
    "One two three four five.",
    "Hello world, this is tinkex.",
]


@pytest.mark.timeout(90)
def test_official_client_full_loop(
    served: harness.Served,
    offline_hf_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tinker")
    for name in list(os.environ):
        if name.startswith(("TINKER_", "CLOUDFLARE_ACCESS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TINKER_API_KEY", API_KEY)
    monkeypatch.setenv("TINKER_BASE_URL", served.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")

    import tinker
    from tinker import types

    assert tinker.__version__ == "0.16.1"
    T = CALL_TIMEOUT_S

    service = tinker.ServiceClient()
    try:
        _run_loop(types, service, served, T)
    finally:
        _shut_down(service.holder)
    # The client logs a warning for every protocol hiccup it works around (a 200 try_again
    # poll, a rejected telemetry batch, missed heartbeats, ...). The only warning expected
    # is the unconditional one that announces an archive download.
    unexpected = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith("tinker")
        and r.levelno >= logging.WARNING
        and not r.getMessage().startswith("Creating checkpoint archive for run id:")
    ]
    assert unexpected == []


def _shut_down(holder: Any) -> None:
    """Stop the client's heartbeat and telemetry tasks and close its HTTP connections.

    0.16.1 has no public way to do this. Without it the tasks run on the client's event-loop
    thread for the rest of the session and its idle keep-alive sockets are only reclaimed by
    the garbage collector, which reports them as ``ResourceWarning`` in whatever test happens
    to run then.
    """
    import asyncio

    holder.close()

    async def close_connections() -> None:
        for pool in list(holder._client_pools.values()):
            for client in list(pool._clients):
                await client.close()

    asyncio.run_coroutine_threadsafe(close_connections(), holder.get_loop()).result(timeout=10)


def _run_loop(types: Any, service: Any, served: harness.Served, T: float) -> None:
    # --- capabilities -----------------------------------------------------------------
    caps = service.get_server_capabilities()
    names = [m.model_name for m in caps.supported_models]
    assert MODEL in names, names

    # --- training client, info, tokenizer ---------------------------------------------
    training = service.create_lora_training_client(base_model=MODEL, rank=4, seed=0)
    info = training.get_info()
    model_id = info.model_id
    assert info.model_data.model_name == MODEL
    assert info.lora_rank == 4
    tokenizer = training.get_tokenizer()

    from tokenizers import Tokenizer

    bundled = Tokenizer.from_file(str(served_tokenizer_file()))
    for phrase in PHRASES:
        ids = tokenizer.encode(phrase, add_special_tokens=False)
        assert ids == bundled.encode(phrase, add_special_tokens=False).ids
        assert tokenizer.decode(ids) == phrase
    eos = tokenizer.eos_token_id
    assert tokenizer.convert_ids_to_tokens(eos) == "<|eos|>"

    sequences = [[1, *tokenizer.encode(p, add_special_tokens=False), eos] for p in PHRASES]

    def datum(ids: list[int], **extra: list[float]) -> Any:
        n = len(ids) - 1
        inputs: dict[str, Any] = {"target_tokens": ids[1:], **extra}
        if not extra:
            inputs["weights"] = [1.0] * n
        return types.Datum(model_input=types.ModelInput.from_ints(ids[:-1]), loss_fn_inputs=inputs)

    ce_data = [datum(ids) for ids in sequences]
    n_tokens = sum(len(ids) - 1 for ids in sequences)

    # --- forward ----------------------------------------------------------------------
    fwd0 = training.forward(ce_data, "cross_entropy").result(timeout=T)
    lp0 = _logprobs(fwd0)
    assert [len(x) for x in lp0] == [len(ids) - 1 for ids in sequences]
    assert all(v < 0 for row in lp0 for v in row)
    assert math.isclose(fwd0.metrics["loss:sum"], -sum(map(sum, lp0)), rel_tol=1e-4)

    # --- 5 x (forward_backward + optim_step), cross_entropy -----------------------------
    adam = types.AdamParams(learning_rate=1e-2)
    losses: list[float] = []
    for _ in range(5):
        fb = training.forward_backward(ce_data, "cross_entropy")
        opt = training.optim_step(adam)  # submitted before fb finished: seq_id ordering
        losses.append(fb.result(timeout=T).metrics["loss:sum"] / n_tokens)
        opt.result(timeout=T)
    assert losses[0] == pytest.approx(fwd0.metrics["loss:sum"] / n_tokens, rel=1e-4)
    assert losses[-1] < losses[0], losses
    assert all(b < a for a, b in itertools.pairwise(losses)), losses

    # --- importance_sampling: with logprobs of the current weights the ratio is 1 ------
    current = _logprobs(training.forward(ce_data, "cross_entropy").result(timeout=T))
    advantages = [[1.0 if i % 2 == 0 else -0.5] * len(row) for i, row in enumerate(current)]
    rl_data = [
        datum(ids, logprobs=lp, advantages=adv)
        for ids, lp, adv in zip(sequences, current, advantages, strict=True)
    ]
    is_out = training.forward_backward(rl_data, "importance_sampling").result(timeout=T)
    assert is_out.metrics["loss:sum"] == pytest.approx(-sum(map(sum, advantages)), rel=1e-3)
    for row, out in zip(current, _logprobs(is_out), strict=True):
        assert _close(row, out)
    training.optim_step(adam).result(timeout=T)

    # --- ppo with explicit clip thresholds (old logprobs: before the IS step) ----------
    ppo_out = training.forward_backward(
        rl_data,
        "ppo",
        loss_fn_config={"clip_low_threshold": 0.8, "clip_high_threshold": 1.2},
    ).result(timeout=T)
    moved = _logprobs(ppo_out)
    assert not all(_close(a, b, 1e-6) for a, b in zip(current, moved, strict=True))
    expected_ppo = 0.0
    for new_row, old_row, adv_row in zip(moved, current, advantages, strict=True):
        for new_lp, old_lp, adv in zip(new_row, old_row, adv_row, strict=True):
            ratio = math.exp(new_lp - old_lp)
            expected_ppo -= min(ratio * adv, min(max(ratio, 0.8), 1.2) * adv)
    assert ppo_out.metrics["loss:sum"] == pytest.approx(expected_ppo, rel=1e-3)

    # --- cispo and dro on the same weights (gradients add up until optim_step) ---------
    rl_now = [
        datum(ids, logprobs=lp, advantages=adv)
        for ids, lp, adv in zip(sequences, moved, advantages, strict=True)
    ]
    # Ratio 1: cispo is -sum(A * lp); dro's penalty (lp - q)^2 vanishes, leaving the same.
    expected_linear = -sum(
        a * lp
        for lp_row, adv_row in zip(moved, advantages, strict=True)
        for a, lp in zip(adv_row, lp_row, strict=True)
    )
    cispo_out = training.forward_backward(rl_now, "cispo").result(timeout=T)
    assert cispo_out.metrics["loss:sum"] == pytest.approx(expected_linear, rel=1e-3)
    dro_out = training.forward_backward(rl_now, "dro", loss_fn_config={"beta": 0.05}).result(
        timeout=T
    )
    assert dro_out.metrics["loss:sum"] == pytest.approx(expected_linear, rel=1e-3)
    training.optim_step(adam).result(timeout=T)

    # --- forward_backward_custom: a client-side loss equal to cross_entropy -----------
    after_rl = _logprobs(training.forward(ce_data, "cross_entropy").result(timeout=T))

    def custom_loss(data: list[Any], logprobs_list: list[Any]) -> tuple[Any, dict[str, float]]:
        assert len(data) == len(logprobs_list)
        loss = sum(-lp.sum() for lp in logprobs_list)
        return loss, {"custom_tokens:sum": float(sum(lp.numel() for lp in logprobs_list))}

    bare = [
        types.Datum(
            model_input=types.ModelInput.from_ints(ids[:-1]),
            loss_fn_inputs={"target_tokens": ids[1:]},
        )
        for ids in sequences
    ]
    custom = training.forward_backward_custom(bare, custom_loss).result(timeout=T)
    assert custom.metrics["custom_tokens:sum"] == n_tokens
    assert custom.metrics["loss:sum"] == pytest.approx(-sum(map(sum, after_rl)), rel=1e-4)
    training.optim_step(adam).result(timeout=T)

    # --- a forward the client splits into chunks (1024 datums per request) -----------
    short = [ids[:4] for ids in sequences]
    many = [datum(short[i % len(short)]) for i in range(1030)]
    chunked = training.forward(many, "cross_entropy").result(timeout=T)
    assert len(chunked.loss_fn_outputs) == 1030
    per_short = _logprobs(
        training.forward([datum(x) for x in short], "cross_entropy").result(timeout=T)
    )
    for i, row in enumerate(_logprobs(chunked)):
        assert _close(row, per_short[i % len(short)], 1e-5)
    expected_sum = -sum(sum(per_short[i % len(short)]) for i in range(1030))
    assert chunked.metrics["loss:sum"] == pytest.approx(expected_sum, rel=1e-4)

    # --- save_weights_and_get_sampling_client, sample, compute_logprobs ---------------
    sampler = training.save_weights_and_get_sampling_client()
    assert sampler.get_base_model() == MODEL
    sampler_tokenizer = sampler.get_tokenizer()
    assert sampler_tokenizer.encode(PHRASES[0], add_special_tokens=False) == tokenizer.encode(
        PHRASES[0], add_special_tokens=False
    )
    prompt_ids = sequences[0][:4]
    prompt = types.ModelInput.from_ints(prompt_ids)
    params = types.SamplingParams(max_tokens=12, temperature=1.0, seed=123, stop=["\n"])
    first = sampler.sample(prompt=prompt, num_samples=3, sampling_params=params).result(timeout=T)
    again = sampler.sample(prompt=prompt, num_samples=3, sampling_params=params).result(timeout=T)
    assert len(first.sequences) == 3
    assert [s.tokens for s in first.sequences] == [s.tokens for s in again.sequences]
    assert len({tuple(s.tokens) for s in first.sequences}) > 1  # seed + i per sample
    for seq in first.sequences:
        assert seq.logprobs is not None
        assert len(seq.logprobs) == len(seq.tokens) >= 1
        assert all(v <= 0.0 for v in seq.logprobs)
        assert "\n" not in tokenizer.decode(seq.tokens[:-1])  # never ran past a stop
        if seq.stop_reason == "length":
            assert len(seq.tokens) == 12
        else:
            assert seq.stop_reason == "stop"
            last = seq.tokens[-1]
            assert last in (eos, tokenizer.convert_tokens_to_ids("<|im_end|>")) or (
                "\n" in tokenizer.decode(seq.tokens)
            )

    # Stop given as token ids; prompt logprobs and top-k prompt logprobs requested.
    eos_params = types.SamplingParams(max_tokens=4, temperature=1.0, seed=7, stop=[eos])
    with_prompt = sampler.sample(
        prompt=prompt,
        num_samples=1,
        sampling_params=eos_params,
        include_prompt_logprobs=True,
        topk_prompt_logprobs=3,
    ).result(timeout=T)
    (only,) = with_prompt.sequences
    assert eos not in only.tokens[:-1]
    assert only.stop_reason == ("stop" if only.tokens[-1] == eos else "length")
    prompt_lp = with_prompt.prompt_logprobs
    assert prompt_lp is not None
    assert len(prompt_lp) == len(prompt_ids)
    assert prompt_lp[0] is None
    reference = sampler.compute_logprobs(prompt).result(timeout=T)
    assert _close([float(v) for v in prompt_lp[1:]], [float(v) for v in reference[1:]], 1e-5)
    topk = with_prompt.topk_prompt_logprobs
    assert topk is not None
    assert len(topk) == len(prompt_ids)
    assert topk[0] is None
    for position, pairs in enumerate(topk[1:], start=1):
        assert pairs is not None
        assert len(pairs) == 3
        values = [lp for _, lp in pairs]
        assert values == sorted(values, reverse=True)
        assert values[0] >= prompt_lp[position] - 1e-5

    # A pickled copy (a "shadow" client, seq_ids from k * 10**9) samples the same tokens.
    clone = pickle.loads(pickle.dumps(sampler))
    try:
        cloned = clone.sample(prompt=prompt, num_samples=3, sampling_params=params).result(
            timeout=T
        )
        assert [s.tokens for s in cloned.sequences] == [s.tokens for s in first.sequences]
    finally:
        _shut_down(clone.holder)

    full = sequences[1]
    sampled_lp = sampler.compute_logprobs(types.ModelInput.from_ints(full)).result(timeout=T)
    assert len(sampled_lp) == len(full)
    assert sampled_lp[0] is None
    trained_lp = _logprobs(training.forward([datum(full)], "cross_entropy").result(timeout=T))[0]
    assert _close([float(v) for v in sampled_lp[1:]], trained_lp, 1e-4)

    # --- save_state / save_weights_for_sampler / load_state ---------------------------
    snapshot_lp = _logprobs(training.forward(ce_data, "cross_entropy").result(timeout=T))
    state_path = training.save_state("conformance-state").result(timeout=T).path
    assert state_path == f"tinker://{model_id}/weights/conformance-state"
    sampler_path = training.save_weights_for_sampler("conformance-sampler").result(timeout=T).path
    assert sampler_path == f"tinker://{model_id}/sampler_weights/conformance-sampler"

    training.forward_backward(ce_data, "cross_entropy").result(timeout=T)
    training.optim_step(adam).result(timeout=T)
    drifted = _logprobs(training.forward(ce_data, "cross_entropy").result(timeout=T))
    assert not all(_close(a, b, 1e-6) for a, b in zip(snapshot_lp, drifted, strict=True))

    training.load_state(state_path).result(timeout=T)
    restored = _logprobs(training.forward(ce_data, "cross_entropy").result(timeout=T))
    assert all(_close(a, b, 1e-5) for a, b in zip(snapshot_lp, restored, strict=True))
    training.load_state_with_optimizer(state_path).result(timeout=T)
    training.forward_backward(ce_data, "cross_entropy").result(timeout=T)
    training.optim_step(adam).result(timeout=T)

    resumed = service.create_training_client_from_state(state_path)
    resumed_info = resumed.get_info()
    assert resumed_info.model_id != model_id
    assert resumed_info.lora_rank == 4
    resumed_lp = _logprobs(resumed.forward(ce_data, "cross_entropy").result(timeout=T))
    assert all(_close(a, b, 1e-5) for a, b in zip(snapshot_lp, resumed_lp, strict=True))
    resumed_opt = service.create_training_client_from_state_with_optimizer(state_path)
    resumed_opt_lp = _logprobs(resumed_opt.forward(ce_data, "cross_entropy").result(timeout=T))
    assert all(_close(a, b, 1e-5) for a, b in zip(snapshot_lp, resumed_opt_lp, strict=True))
    resumed_opt.forward_backward(ce_data, "cross_entropy").result(timeout=T)
    resumed_opt.optim_step(adam).result(timeout=T)

    # --- sampling clients from a checkpoint path and from the base model --------------
    from_path = service.create_sampling_client(model_path=sampler_path)
    path_lp = from_path.compute_logprobs(types.ModelInput.from_ints(sequences[0])).result(timeout=T)
    assert _close([float(v) for v in path_lp[1:]], snapshot_lp[0], 1e-4)
    from_state = training.create_sampling_client(state_path)
    state_lp = from_state.compute_logprobs(types.ModelInput.from_ints(sequences[0])).result(
        timeout=T
    )
    assert _close([float(v) for v in state_lp[1:]], snapshot_lp[0], 1e-4)
    base = service.create_sampling_client(base_model=MODEL)
    greedy = types.SamplingParams(max_tokens=5, temperature=0.0)
    base_out = base.sample(prompt=prompt, num_samples=1, sampling_params=greedy).result(timeout=T)
    assert len(base_out.sequences) == 1
    assert 1 <= len(base_out.sequences[0].tokens) <= 5

    # --- REST ---------------------------------------------------------------------------
    rest = service.create_rest_client()
    listed = rest.list_checkpoints(model_id).result(timeout=T)
    by_id = {c.checkpoint_id: c for c in listed.checkpoints}
    assert set(by_id) == {"weights/conformance-state", "sampler_weights/conformance-sampler"}
    assert by_id["weights/conformance-state"].checkpoint_type == "training"
    assert by_id["weights/conformance-state"].tinker_path == state_path
    assert by_id["sampler_weights/conformance-sampler"].checkpoint_type == "sampler"
    assert by_id["sampler_weights/conformance-sampler"].tinker_path == sampler_path
    mine = rest.list_user_checkpoints().result(timeout=T)
    assert {state_path, sampler_path} <= {c.tinker_path for c in mine.checkpoints}

    runs = rest.list_training_runs().result(timeout=T)
    run_ids = {r.training_run_id for r in runs.training_runs}
    assert {model_id, resumed_info.model_id, resumed_opt.get_info().model_id} <= run_ids
    assert runs.cursor.total_count >= 3
    run = rest.get_training_run(model_id).result(timeout=T)
    assert run.base_model == MODEL
    assert run.is_lora
    assert run.lora_rank == 4
    assert not run.corrupted
    assert run.last_checkpoint is not None
    assert run.last_checkpoint.tinker_path == state_path
    assert rest.get_training_run_by_tinker_path(state_path).result(timeout=T).training_run_id == (
        model_id
    )
    weights_info = rest.get_weights_info_by_tinker_path(state_path).result(timeout=T)
    assert (weights_info.base_model, weights_info.is_lora, weights_info.lora_rank) == (
        MODEL,
        True,
        4,
    )

    # A fresh server and one ServiceClient: exactly one session, ours (the pickled sampler
    # above reused it).
    (session_id,) = rest.list_sessions().result(timeout=T).sessions
    session = rest.get_session(session_id).result(timeout=T)
    assert {model_id, resumed_info.model_id} <= set(session.training_run_ids)
    assert len(session.sampler_ids) >= 3  # the unnamed snapshot, from_path, base
    for sampler_id in session.sampler_ids:
        assert rest.get_sampler(sampler_id).result(timeout=T).base_model == MODEL

    rest.publish_checkpoint_from_tinker_path(sampler_path).result(timeout=T)
    published = rest.list_checkpoints(model_id).result(timeout=T).checkpoints
    assert [c.public for c in published if c.tinker_path == sampler_path] == [True]
    rest.unpublish_checkpoint_from_tinker_path(sampler_path).result(timeout=T)
    rest.set_checkpoint_ttl_from_tinker_path(sampler_path, 3600).result(timeout=T)
    with_ttl = rest.list_checkpoints(model_id).result(timeout=T).checkpoints
    (entry,) = [c for c in with_ttl if c.tinker_path == sampler_path]
    assert entry.expires_at is not None
    assert entry.public is False
    rest.set_checkpoint_ttl_from_tinker_path(sampler_path, None).result(timeout=T)

    archive = rest.get_checkpoint_archive_url(model_id, "sampler_weights/conformance-sampler")
    archive_url = archive.result(timeout=T)
    # 0.16.1 returns a naive datetime only when it could parse the server's Expires header
    # (HTTP-date); otherwise it falls back to an aware now + 15 min.
    assert archive_url.expires.tzinfo is None
    now = datetime.now(UTC).replace(tzinfo=None)
    assert now + timedelta(minutes=10) < archive_url.expires < now + timedelta(minutes=20)
    _check_archive(archive_url.url, served.url)
    by_path = rest.get_checkpoint_archive_url_from_tinker_path(state_path).result(timeout=T)
    _check_archive(by_path.url, served.url)

    rest.delete_checkpoint_from_tinker_path(sampler_path).result(timeout=T)
    remaining = rest.list_checkpoints(model_id).result(timeout=T).checkpoints
    assert [c.tinker_path for c in remaining] == [state_path]

    # The server really checked the client's key (it was started with --api-key).
    anonymous = httpx.get(f"{served.url}/api/v1/training_runs", timeout=5.0, trust_env=False)
    assert anonymous.status_code == 401

    # --- telemetry: the client's background batch reached the server and was accepted --
    _wait_for_telemetry(served.url, session_id)


def served_tokenizer_file() -> Path:
    import tinkex_server

    path = Path(tinkex_server.__file__).parent / "data" / "tokenizer" / "tokenizer.json"
    assert path.is_file(), path
    return path


def _check_archive(url: str, base_url: str) -> None:
    assert url.startswith(base_url), url
    # Plain GET: no X-API-Key, no Tinker headers (the URL authorises itself).
    response = httpx.get(url, timeout=CALL_TIMEOUT_S, trust_env=False)
    assert response.status_code == 200, response.text[:200]
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert {"adapter_config.json", "adapter_model.safetensors", "checkpoint_complete"} <= set(
            members
        )
        assert all(not n.startswith("/") and ".." not in n.split("/") for n in members)
        config_file = tar.extractfile(members["adapter_config.json"])
        assert config_file is not None
        config = json.loads(config_file.read())
        weights_file = tar.extractfile(members["adapter_model.safetensors"])
        assert weights_file is not None
        weights = weights_file.read()
    assert config["r"] == 4
    from safetensors import safe_open  # noqa: F401  (proves the dependency is importable)
    from safetensors.torch import load as load_safetensors

    tensors = load_safetensors(weights)
    assert any(".lora_A." in key for key in tensors)
    assert any(".lora_B." in key for key in tensors)


def _wait_for_telemetry(url: str, session_id: str) -> None:
    """0.16.1 flushes telemetry every 10 s; wait (bounded) for a batch of this session."""
    deadline = time.monotonic() + 15.0
    while True:
        response = httpx.get(
            f"{url}/api/v1/_test/telemetry",
            headers={"X-API-Key": API_KEY},
            timeout=5.0,
            trust_env=False,
        )
        assert response.status_code == 200
        batches = response.json()["batches"]
        mine = [b for b in batches if b.get("session_id") == session_id]
        if mine:
            events = [e["event"] for b in mine for e in b["events"]]
            assert "SESSION_START" in events
            assert all(b.get("sdk_version") == "0.16.1" for b in mine)
            return
        assert time.monotonic() < deadline, "no telemetry batch from the client within 15 s"
        time.sleep(0.25)
