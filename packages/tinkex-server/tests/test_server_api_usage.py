"""Usage routes on the in-process server: a scripted run whose counts are computed from what
was sent and what came back; retries (same seq_id, same idempotency key) and failed steps
count nothing more; the counts survive a restart; unknown ids are 404."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from tinkex_types import USAGE_COUNTERS, UsageCounts, UsageResponse

MODEL = "tinkex/tiny-llama-100k"


def _datums(lengths: list[int], start: int = 3) -> list[dict[str, Any]]:
    from .conftest import Api

    return [Api.datum([start + (i + j) % 40 for j in range(n + 1)]) for i, n in enumerate(lengths)]


def _tokens(data: list[dict[str, Any]]) -> int:
    return sum(len(c["tokens"]) for d in data for c in d["model_input"]["chunks"])


async def _model(api: Any, sid: str) -> str:
    lora = {"rank": 4, "seed": 7, "train_unembed": True, "train_mlp": True, "train_attn": True}
    body = {"session_id": sid, "model_seq_id": 0, "base_model": MODEL, "lora_config": lora}
    done = await api.result(await api.ok("create_model", body))
    return str(done["model_id"])


async def _usage(api: Any, path: str) -> UsageResponse:
    r = await api.c.get(f"/api/v1/{path}/usage")
    assert r.status_code == 200, r.text
    return UsageResponse.model_validate(r.json())


async def _sample(
    api: Any, sampler: str, prompt: list[int], n: int, max_tokens: int, logprobs: bool = False
) -> dict[str, Any]:
    body = {
        "num_samples": n,
        "prompt": {"chunks": [{"tokens": prompt}]},
        "sampling_params": {"max_tokens": max_tokens, "temperature": 1.0, "seed": 5},
        "sampling_session_id": sampler,
        "seq_id": 0,
        "prompt_logprobs": logprobs,
        "topk_prompt_logprobs": 0,
    }
    return await api.result(await api.ok("asample", body))


async def test_scripted_run_counts_what_was_sent_and_generated(api: Any) -> None:
    sid = await api.session()
    mid = await _model(api, sid)
    batches = [_datums([4, 7]), _datums([3, 5, 9], start=10), _datums([6])]
    seq = 0
    for data in batches:
        seq += 1
        await api.result(await api.ok("forward_backward", api.fb_body(mid, seq, data)))
        seq += 1
        await api.result(
            await api.ok("optim_step", {"adam_params": {}, "model_id": mid, "seq_id": seq})
        )
    fwd = _datums([5, 2])
    seq += 1
    await api.result(await api.ok("forward", api.fwd_body(mid, seq, fwd)))
    seq += 1
    unnamed = await api.result(
        await api.ok(
            "save_weights_for_sampler",
            {"model_id": mid, "sampling_session_seq_id": 0, "seq_id": seq, "ttl_seconds": None},
        )
    )
    run_sampler = unnamed["sampling_session_id"]
    base = await api.ok(
        "create_sampling_session",
        {"session_id": sid, "sampling_session_seq_id": 1, "base_model": MODEL, "model_path": None},
    )
    base_sampler = base["sampling_session_id"]
    expected_run = {"prompt": 0, "generated": 0, "sequences": 0, "requests": 0}
    expected_base = dict(expected_run)
    logprob_prompt = 0
    for sampler, prompt, n, max_tokens, logprobs, into in (
        (run_sampler, [1, 5, 6], 2, 6, False, expected_run),
        (run_sampler, [7, 8, 9, 10, 11], 3, 4, True, expected_run),
        (base_sampler, [2, 3], 1, 5, False, expected_base),
        (base_sampler, [4, 5, 6, 7], 1, 1, True, expected_base),
    ):
        out = await _sample(api, sampler, prompt, n, max_tokens, logprobs)
        into["prompt"] += len(prompt)
        into["requests"] += 1
        into["sequences"] += len(out["sequences"])
        into["generated"] += sum(len(s["tokens"]) for s in out["sequences"])
        if logprobs:
            logprob_prompt += len(prompt)

    run = await _usage(api, f"training_runs/{mid}")
    assert run.scope == "training_run"
    assert run.id == mid
    assert run.source == "server"
    t = run.totals
    assert t.forward_backward_requests == len(batches)
    assert t.forward_backward_datums == sum(len(b) for b in batches)
    assert t.forward_backward_tokens == sum(_tokens(b) for b in batches)
    assert (t.forward_requests, t.forward_datums, t.forward_tokens) == (1, 2, _tokens(fwd))
    assert t.optim_steps == len(batches)
    assert t.sample_requests == expected_run["requests"]
    assert t.sample_prompt_tokens == expected_run["prompt"]
    assert t.sampled_sequences == expected_run["sequences"]
    assert t.sampled_tokens == expected_run["generated"]
    assert (t.logprobs_requests, t.logprobs_prompt_tokens) == (1, 5)
    kinds = {(e.kind, e.sampling_session_id) for e in run.entries}
    assert kinds == {("training", None), ("sampling", run_sampler)}
    assert run.by_base_model == {MODEL: UsageCounts(**t.counters())}

    session = await _usage(api, f"sessions/{sid}")
    assert session.scope == "session"
    s = session.totals
    assert s.sample_requests == expected_run["requests"] + expected_base["requests"]
    assert s.sample_prompt_tokens == expected_run["prompt"] + expected_base["prompt"]
    assert s.sampled_tokens == expected_run["generated"] + expected_base["generated"]
    assert s.logprobs_prompt_tokens == logprob_prompt
    assert s.forward_backward_tokens == t.forward_backward_tokens
    base_entry = next(e for e in session.entries if e.sampling_session_id == base_sampler)
    assert base_entry.training_run_id is None
    assert base_entry.sampled_tokens == expected_base["generated"]
    summed = UsageCounts()
    for entry in session.entries:
        summed = summed.plus(entry)
    assert summed == UsageCounts(**s.counters())


async def test_retries_and_failures_count_once(api: Any) -> None:
    sid = await api.session()
    mid = await _model(api, sid)
    data = _datums([4, 6])
    first = await api.ok("forward_backward", api.fb_body(mid, 1, data))
    again = await api.ok("forward_backward", api.fb_body(mid, 1, data))  # same seq_id
    assert again["request_id"] == first["request_id"]
    await api.result(first)
    key = {"x-idempotency-key": "usage-opt-1"}
    step = {"adam_params": {}, "model_id": mid, "seq_id": 2}
    one = await api.ok("optim_step", step, headers=key)
    await api.result(one)
    assert (await api.ok("optim_step", step, headers=key))["request_id"] == one["request_id"]
    # A step the engine refuses (target tokens out of the vocabulary) counts nothing.
    bad = api.datum([5, 6, 7])
    bad["loss_fn_inputs"]["target_tokens"]["data"] = [10**6, 10**6]
    refused = await api.ok("forward_backward", api.fb_body(mid, 3, [bad]))
    status, body = await api.poll(refused["request_id"])
    assert status != 200 or "error" in body, body
    t = (await _usage(api, f"training_runs/{mid}")).totals
    assert t.forward_backward_requests == 1
    assert t.forward_backward_tokens == _tokens(data)
    assert t.optim_steps == 1


async def test_usage_survives_a_restart(make_server: Any, api_for: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "restart"
    server = make_server(data_dir=data_dir)
    data = _datums([3, 8])
    async with api_for(server) as api:
        sid = await api.session()
        mid = await _model(api, sid)
        await api.result(await api.ok("forward_backward", api.fb_body(mid, 1, data)))
        before = await _usage(api, f"sessions/{sid}")
    server.close()
    async with api_for(make_server(data_dir=data_dir)) as api:
        after = await _usage(api, f"sessions/{sid}")
    assert after == before
    assert after.totals.forward_backward_tokens == _tokens(data)


async def test_unknown_ids_are_404_and_a_new_run_is_all_zero(api: Any) -> None:
    for path in ("training_runs/nope:train:0", "sessions/nope"):
        r = await api.c.get(f"/api/v1/{path}/usage")
        assert r.status_code == 404
        assert "nope" in r.json()["detail"]
    sid = await api.session()
    mid = await _model(api, sid)
    fresh = await _usage(api, f"training_runs/{mid}")
    assert fresh.entries == []
    assert all(v == 0 for v in fresh.totals.counters().values())
    assert set(fresh.totals.counters()) == set(USAGE_COUNTERS)
    paths = (await api.c.get("/openapi.json")).json()["paths"]
    for route in ("/api/v1/training_runs/{run_id}/usage", "/api/v1/sessions/{session_id}/usage"):
        assert set(paths[route]["get"]["responses"]) >= {"200", "404"}


async def test_a_failure_to_count_never_fails_the_step(
    api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sid = await api.session()
    mid = await _model(api, sid)
    await _usage(api, f"training_runs/{mid}")  # the usage tables exist
    with api.store.tx() as c:
        c.execute("DROP TABLE usage")
    with caplog.at_level(logging.ERROR, logger="tinkex_server.usage"):
        out = await api.result(await api.ok("forward_backward", api.fb_body(mid, 1)))
    assert "loss:sum" in out["metrics"]
    assert "could not record the usage" in caplog.text


async def test_hourly_rows_sum_to_the_report(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import tinkex_server._usage as usage_module

    sid = await api.session()
    mid = await _model(api, sid)
    sizes = ([4], [6, 2])
    for seq, (hour, lengths) in enumerate(zip((1000, 1001), sizes, strict=True), start=1):
        clock = types.SimpleNamespace(time=lambda hour=hour: hour * 3600.0 + 5)
        monkeypatch.setattr(usage_module, "time", clock)
        await api.result(await api.ok("forward_backward", api.fb_body(mid, seq, _datums(lengths))))
    with api.store.tx() as c:
        rows = c.execute(
            "SELECT hour, forward_backward_tokens FROM usage WHERE training_run_id=? ORDER BY hour",
            (mid,),
        ).fetchall()
    assert [(r["hour"], r["forward_backward_tokens"]) for r in rows] == [
        (1000 * 3600, 4),
        (1001 * 3600, 8),
    ]
    report = await _usage(api, f"training_runs/{mid}")
    assert len(report.entries) == 1
    assert report.totals.forward_backward_tokens == 12
    assert report.totals.forward_backward_datums == 3


async def test_recording_a_step_runs_no_schema_statement(api: Any) -> None:
    """The usage tables are made when the store opens, not inside every applied step."""
    sid = await api.session()
    mid = await _model(api, sid)
    statements: list[str] = []
    conn = api.store._conn
    conn.set_trace_callback(statements.append)
    try:
        await api.result(await api.ok("forward_backward", api.fb_body(mid, 1, _datums([4]))))
        await api.result(
            await api.ok("optim_step", {"adam_params": {}, "model_id": mid, "seq_id": 2})
        )
    finally:
        conn.set_trace_callback(None)
    assert any("INSERT INTO usage" in s for s in statements), statements
    assert not [s for s in statements if "CREATE " in s.upper()]
