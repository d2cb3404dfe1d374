"""Usage reports from the clients: a scripted run against the real server (``local://`` and
HTTP on 127.0.0.1) gives exactly the tokens sent and generated (computed from the inputs and
the returned sequences); the client's own counts equal the server's; a server without the
usage routes gets the client's counts (``source="client"``); retried requests count once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tinkex_clients import ServiceClient
from tinkex_types import (
    AdamParams,
    Datum,
    Hooks,
    ModelInput,
    NotFoundError,
    SamplingParams,
    UsageResponse,
)

from .conftest import FAST_POLLS

MODEL = "tinkex/tiny-llama-100k"
KEY = "tml-usage-test-key"


def _datum(n: int, start: int) -> Datum:
    ids = [start + (j * 7) % 50 for j in range(n + 1)]
    return Datum(
        model_input=ModelInput.from_ints(ids[:-1]),
        loss_fn_inputs={"target_tokens": ids[1:], "weights": [1.0] * n},
    )


def run_script(service: ServiceClient) -> tuple[str, str, Counter[str]]:
    """A small training and sampling run; returns (run id, base sampler id, the counts
    expected for the run, computed from what was sent and what came back)."""
    tc = service.create_lora_training_client(MODEL, rank=4, seed=3)
    want: Counter[str] = Counter()
    for batch in ([_datum(4, 3), _datum(7, 9)], [_datum(3, 1), _datum(5, 2), _datum(9, 4)]):
        tc.forward_backward(batch, "cross_entropy").result(120)
        want["forward_backward_requests"] += 1
        want["forward_backward_datums"] += len(batch)
        want["forward_backward_tokens"] += sum(d.model_input.length for d in batch)
        tc.optim_step(AdamParams(learning_rate=1e-3)).result(120)
        want["optim_steps"] += 1
    fwd = [_datum(6, 5)]
    tc.forward(fwd, "cross_entropy").result(120)
    want.update(forward_requests=1, forward_datums=1, forward_tokens=fwd[0].model_input.length)
    sampler = tc.save_weights_and_get_sampling_client()
    for prompt, n, max_tokens, logprobs in (
        ([1, 5, 6], 2, 6, False),
        ([7, 8, 9, 10, 11], 3, 4, False),
        ([2, 3, 4, 5], 1, 1, True),  # what compute_logprobs sends
    ):
        params = SamplingParams(max_tokens=max_tokens, seed=11, temperature=1.0)
        out = sampler.sample(ModelInput.from_ints(prompt), n, params, logprobs).result(120)
        want["sample_requests"] += 1
        want["sample_prompt_tokens"] += len(prompt)
        want["sampled_sequences"] += len(out.sequences)
        want["sampled_tokens"] += sum(len(s.tokens) for s in out.sequences)
        if logprobs:
            want["logprobs_requests"] += 1
            want["logprobs_prompt_tokens"] += len(prompt)
    base = service.create_sampling_client(base_model=MODEL)
    assert len(base.compute_logprobs(ModelInput.from_ints([3, 4, 5])).result(120)) == 3
    return tc.model_id, base.sampling_session_id, want


def _check_run(report: UsageResponse, run: str, want: Counter[str], source: str) -> None:
    assert (report.scope, report.id, report.source) == ("training_run", run, source)
    got = {k: v for k, v in report.totals.counters().items() if v}
    assert got == dict(want)
    assert set(report.by_base_model) == {MODEL}


def _check_session(report: UsageResponse, base_sampler: str, want: Counter[str]) -> None:
    assert report.scope == "session"
    entry = next(e for e in report.entries if e.sampling_session_id == base_sampler)
    assert entry.training_run_id is None
    assert (entry.logprobs_requests, entry.logprobs_prompt_tokens) == (1, 3)
    assert entry.sample_prompt_tokens == 3
    t = report.totals
    assert t.forward_backward_tokens == want["forward_backward_tokens"]
    assert t.sample_prompt_tokens == want["sample_prompt_tokens"] + 3


def _same(a: UsageResponse, b: UsageResponse) -> None:
    assert a.totals == b.totals
    assert a.by_base_model == b.by_base_model
    assert sorted(e.model_dump_json() for e in a.entries) == sorted(
        e.model_dump_json() for e in b.entries
    )


def test_local_server_counts_equal_the_script_and_the_client(
    local_service: ServiceClient,
) -> None:
    run, base_sampler, want = run_script(local_service)
    rest = local_service.create_rest_client()
    server = rest.get_training_run_usage(run).result(60)
    _check_run(server, run, want, "server")
    client = rest.get_training_run_usage(run, source="client").result(60)
    _check_run(client, run, want, "client")
    _same(server, client)
    session = local_service.get_usage()
    assert session.source == "server"
    _check_session(session, base_sampler, want)
    _same(session, local_service.get_usage(source="client"))
    assert local_service.create_rest_client().get_usage().result(60) == session


async def test_async_forms(local_service: ServiceClient) -> None:
    tc = await local_service.create_lora_training_client_async(MODEL, rank=4, seed=5)
    data = [_datum(5, 2)]
    await (await tc.forward_backward_async(data, "cross_entropy"))
    usage = await tc.get_usage_async()
    assert usage.source == "server"
    assert usage.totals.forward_backward_tokens == data[0].model_input.length
    rest = local_service.create_rest_client()
    assert await rest.get_training_run_usage_async(tc.model_id) == usage
    session = await rest.get_session_usage_async()
    assert session.id == local_service._session.session_id
    assert session.totals.forward_backward_tokens >= data[0].model_input.length


class _Wrapped(httpx.AsyncBaseTransport):
    """The real local server behind hooks: usage routes can 404, and the response of the
    first request to chosen paths can be lost after the server handled it."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, usage: bool, drop: set[str]) -> None:
        self.inner = inner
        self.usage = usage
        self.drop = set(drop)
        self.dropped: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if not self.usage and path.endswith("/usage"):
            return httpx.Response(404, json={"detail": f"no route {path}"}, request=request)
        response = await self.inner.handle_async_request(request)
        if path in self.drop:
            self.drop.discard(path)
            self.dropped.append(path)
            await response.aread()
            raise httpx.ReadError("connection reset after the server answered", request=request)
        return response


@pytest.fixture
def local_server(local_env: Path) -> Any:
    from tinkex_server._local import get_local_server

    return get_local_server(local_env)


def _client(transport: httpx.AsyncBaseTransport, hooks: Hooks) -> ServiceClient:
    return ServiceClient(
        base_url="http://tinkex.local",
        api_key=KEY,
        transport=transport,
        hooks=hooks,
        poll_policy=FAST_POLLS,
    )


def test_fallback_and_retries_count_once(local_server: Any, local_hooks: Hooks) -> None:
    from tinkex_server._local import LocalTransport

    # Training requests whose answer is lost are re-sent with the same seq_id and
    # idempotency key: the server applies (and counts) them once. (A sample whose answer is
    # lost is re-sent as a new request, as the official client does; the server runs it
    # again, so it is left out here.)
    drop = {"/api/v1/forward_backward", "/api/v1/optim_step"}
    wrapped = _Wrapped(LocalTransport(local_server), usage=False, drop=drop)
    with _client(wrapped, local_hooks) as service:
        run, base_sampler, want = run_script(service)
        assert sorted(wrapped.dropped) == sorted(drop)  # each was sent twice
        rest = service.create_rest_client()
        fallback = rest.get_training_run_usage(run).result(60)
        _check_run(fallback, run, want, "client")
        session = service.get_usage()
        assert session.source == "client"
        _check_session(session, base_sampler, want)
        with pytest.raises(NotFoundError):  # neither the server nor the client knows it
            rest.get_training_run_usage("never:train:0").result(60)
        with pytest.raises(NotFoundError):  # source="server" never falls back
            rest.get_training_run_usage(run, source="server").result(60)
    # The server applied each retried request once, as the client counted.
    with _client(LocalTransport(local_server), local_hooks) as direct:
        server = direct.create_rest_client().get_training_run_usage(run).result(60)
    _check_run(server, run, want, "server")
    _same(server, fallback)


@pytest.fixture(scope="module")
def http_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``tinkex serve`` as a subprocess on 127.0.0.1 (port 0)."""
    from tinkex_server.testing import ServeProcess

    data_dir = tmp_path_factory.mktemp("usage-http")
    with ServeProcess(data_dir, "--api-key", KEY, "--log-level", "warning") as served:
        yield served.url


def test_over_http(http_url: str, local_hooks: Hooks) -> None:
    client = ServiceClient(
        base_url=http_url, api_key=KEY, hooks=local_hooks, poll_policy=FAST_POLLS
    )
    with client as service:
        run, base_sampler, want = run_script(service)
        rest = service.create_rest_client()
        server = rest.get_training_run_usage(run).result(60)
        _check_run(server, run, want, "server")
        _same(server, rest.get_training_run_usage(run, source="client").result(60))
        session = rest.get_session_usage().result(60)
        assert session.source == "server"
        _check_session(session, base_sampler, want)
    raw = httpx.get(
        f"{http_url}/api/v1/sessions/nope/usage", headers={"x-api-key": KEY}, timeout=30
    )
    assert raw.status_code == 404
    assert "nope" in raw.json()["detail"]


def test_bad_arguments_name_the_field(local_service: ServiceClient) -> None:
    from tinkex_types import TinkexValidationError

    rest = local_service.create_rest_client()
    with pytest.raises(TinkexValidationError, match="source"):
        rest.get_usage(source="both")  # type: ignore[arg-type]
    with pytest.raises(TinkexValidationError, match="training_run_id"):
        rest.get_usage("a/b")
    with pytest.raises(TinkexValidationError, match="not both"):
        rest.get_usage("a", session_id="b")


def test_streamed_samples_count_on_both_sides(local_service: ServiceClient) -> None:
    sampler = local_service.create_sampling_client(base_model=MODEL)
    prompt = [6, 7, 8, 9, 10]
    params = SamplingParams(max_tokens=7, seed=3, temperature=1.0)
    with sampler.sample_stream(ModelInput.from_ints(prompt), params, num_samples=2) as stream:
        chunks = list(stream)
    generated = sum(1 for c in chunks if c.token_id is not None)
    assert generated == sum(c.total_tokens or 0 for c in chunks if c.finish_reason is not None)
    rest = local_service.create_rest_client()
    for source in ("server", "client"):
        report = rest.get_session_usage(source=source).result(60)  # type: ignore[arg-type]
        entry = next(
            e for e in report.entries if e.sampling_session_id == sampler.sampling_session_id
        )
        assert (entry.sample_requests, entry.sampled_sequences) == (1, 2)
        assert entry.sample_prompt_tokens == len(prompt)
        assert entry.sampled_tokens == generated
