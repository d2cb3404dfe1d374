"""Protocol negotiation (tinkex_clients._protocol) against every server shape we know.

Each shape is a test server (``httpx.MockTransport``) in front of :class:`FakeTinker`:

* ``tinkex``: ``tinkex serve`` -- flags ``proto_write_fwdbwd`` + ``proto_compress_fwdbwd``,
  takes protobuf (zstd) bodies, answers protobuf results when the poll's Accept asks;
* ``skyrl_tx``: skyrl-tx 0.3.0 -- no ``client/config`` (404), JSON only (a FastAPI JSON
  decode error, 422, for anything else);
* ``skyrl``: the ``skyrl`` package -- ``client/config`` answers only
  ``{"pjwt_auth_enabled": false}``, JSON only;
* ``hosted``: the hosted service -- ``client/config`` answers ``{}``, takes protobuf (the
  official SDK >= 0.25 always sends it);
* ``liar``: flags that claim protobuf, but protobuf bodies are refused with 415 (the
  fallback case).

Then the real local server (``local://``): both generations (``ServerConfig.protobuf``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tinkex_clients import ServiceClient
from tinkex_clients._protocol import forget_learned, is_hosted, learned_json
from tinkex_http import Config
from tinkex_server.testing import ServeProcess
from tinkex_types import (
    PROTOBUF_MEDIA_TYPE,
    AdamParams,
    APIStatusError,
    Datum,
    ForwardBackwardOutput,
    ForwardBackwardRequest,
    Hooks,
    ModelInput,
    SampleResponse,
    SamplingParams,
    TinkexValidationError,
    codec_for,
    decode_content,
)

from .conftest import FAST_POLLS, TINY, FakeTinker

PROTO = codec_for(PROTOBUF_MEDIA_TYPE)
SHAPES = ("tinkex", "skyrl_tx", "skyrl", "hosted", "liar")
HOSTED_URL = "https://tinker.thinkingmachines.dev"


class ShapedServer:
    """One server shape in front of a :class:`FakeTinker` (see the module docstring)."""

    def __init__(self, shape: str) -> None:
        self.shape = shape
        self.fake = FakeTinker()
        #: (path, content-type, content-encoding, accept) of every request.
        self.log: list[tuple[str, str, str, str]] = []
        #: (status, body) of every answer to a protobuf body.
        self.proto_answers: list[int] = []

    @property
    def takes_protobuf(self) -> bool:
        return self.shape in ("tinkex", "hosted")

    def sent(self, path: str) -> list[tuple[str, str, str, str]]:
        return [entry for entry in self.log if entry[0] == path]

    def _config(self) -> httpx.Response:
        if self.shape == "skyrl_tx":
            return httpx.Response(404, json={"detail": "Not Found"})
        answers: dict[str, Any] = {
            "tinkex": {"proto_write_fwdbwd": True, "proto_compress_fwdbwd": True},
            "skyrl": {"pjwt_auth_enabled": False},
            "hosted": {},
            "liar": {"proto_write_fwdbwd": True},
        }
        return httpx.Response(200, json=answers[self.shape])

    async def _protobuf(self, request: httpx.Request) -> httpx.Response:
        if self.shape in ("skyrl_tx", "skyrl"):
            detail = [{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error"}]
            return httpx.Response(422, json={"detail": detail})
        if self.shape == "liar":
            return httpx.Response(415, json={"detail": "Unsupported Media Type"})
        body = decode_content(request.content, request.headers.get("content-encoding"))
        decoded = PROTO.decode(ForwardBackwardRequest, body)
        data = decoded.to_json_dict()
        path = "/api/v1/forward_backward"
        if decoded.forward_only:
            path = "/api/v1/forward"
            data = {
                "forward_input": data["forward_backward_input"],
                "model_id": data["model_id"],
                "seq_id": data["seq_id"],
            }
        as_json = httpx.Request(
            "POST", request.url.copy_with(path=path), json=data, headers=request.headers
        )
        return await self.fake.handler(as_json)

    async def _result(self, request: httpx.Request) -> httpx.Response:
        answer = await self.fake.handler(request)
        data = answer.json()
        wants = PROTOBUF_MEDIA_TYPE in request.headers.get("accept", "")
        if answer.status_code != 200 or not wants or not self.takes_protobuf:
            return answer
        model: type[ForwardBackwardOutput] | type[SampleResponse] | None = None
        if "loss_fn_outputs" in data:
            model = ForwardBackwardOutput
        elif "sequences" in data:
            model = SampleResponse
        if model is None:
            return answer
        content = PROTO.encode(model.model_validate(data))
        return httpx.Response(200, content=content, headers={"content-type": PROTOBUF_MEDIA_TYPE})

    async def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        headers = request.headers
        self.log.append(
            (
                path,
                headers.get("content-type", ""),
                headers.get("content-encoding", ""),
                headers.get("accept", ""),
            )
        )
        if path == "/api/v1/client/config":
            return self._config()
        if path.endswith("/finish"):
            if self.shape in ("skyrl_tx", "skyrl"):
                return httpx.Response(404, json={"detail": "Not Found"})
            return httpx.Response(200, json={})
        if headers.get("content-type", "").startswith(PROTOBUF_MEDIA_TYPE):
            answer = await self._protobuf(request)
            self.proto_answers.append(answer.status_code)
            return answer
        if path == "/api/v1/retrieve_future":
            return await self._result(request)
        return await self.fake.handler(request)


def _data(n: int = 1) -> list[Datum]:
    return [
        Datum(
            model_input=ModelInput.from_ints([1, 2, 3 + i]),
            loss_fn_inputs={"target_tokens": [2, 3, 4 + i], "weights": [1.0, 1.0, 0.5]},
        )
        for i in range(n)
    ]


def _client(server: ShapedServer, hooks: Hooks, **config: Any) -> ServiceClient:
    url = HOSTED_URL if server.shape == "hosted" else f"http://{server.shape}.test"
    return ServiceClient(
        api_key="tml-test-key",
        base_url=url,
        transport=httpx.MockTransport(server.handler),
        hooks=hooks,
        poll_policy=FAST_POLLS,
        **config,
    )


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    forget_learned()
    yield
    forget_learned()


def _loop(service: ServiceClient) -> tuple[list[float], SampleResponse]:
    """forward, forward_backward + optim_step twice, sample: the losses and the sample."""
    tc = service.create_lora_training_client(TINY, rank=4, seed=7)
    losses = [tc.forward(_data(2), "cross_entropy").result(10).metrics["loss:sum"]]
    for _ in range(2):
        out = tc.forward_backward(_data(2), "cross_entropy").result(10)
        assert len(out.loss_fn_outputs) == 2
        assert out.loss_fn_outputs[0]["logprobs"].shape == [3]
        losses.append(out.metrics["loss:sum"])
        tc.optim_step(AdamParams(learning_rate=0.1)).result(10)
    sampler = tc.save_weights_and_get_sampling_client("w")
    params = SamplingParams(max_tokens=3, seed=11)
    sample = sampler.sample(ModelInput.from_ints([1, 2]), 2, params)
    return losses, sample.result(10)


@pytest.mark.parametrize("shape", SHAPES)
def test_each_server_shape_gets_its_generation(shape: str, private_hooks: Hooks) -> None:
    server = ShapedServer(shape)
    service = _client(server, private_hooks)
    try:
        expected = "protobuf" if server.takes_protobuf else "json"
        losses, sample = _loop(service)
        assert service._session.protocol.generation == expected
    finally:
        service.close()
    # The same results whatever the encoding (the fake's model is deterministic).
    assert losses[0] == losses[1]
    assert losses[2] < losses[1]
    assert [len(s.tokens) for s in sample.sequences] == [3, 3]
    # Every training step ran exactly once, in order: forward 1, fwd/bwd 2, optim 3...
    (model,) = server.fake.models.values()
    assert model.seq_ids == sorted(set(model.seq_ids)) == list(range(1, 7))
    bodies = server.sent("/api/v1/forward_backward") + server.sent("/api/v1/forward")
    polls = server.sent("/api/v1/retrieve_future")
    if server.takes_protobuf:
        # forward as forward_backward(forward_only); zstd only when the flags say so.
        assert server.sent("/api/v1/forward") == []
        assert {b[1] for b in bodies} == {PROTOBUF_MEDIA_TYPE}
        assert {b[2] for b in bodies} == ({"zstd"} if shape == "tinkex" else {""})
        assert server.proto_answers == [200, 200, 200]
        assert any(PROTOBUF_MEDIA_TYPE in p[3] for p in polls)
    else:
        first_json = 1 if shape == "liar" else 0
        assert {b[1] for b in bodies[first_json:]} == {"application/json"}
        assert all(PROTOBUF_MEDIA_TYPE not in p[3] for p in polls)
    if shape == "liar":  # one protobuf attempt, refused, then JSON for good
        assert server.proto_answers == [415]
        assert learned_json(HOSTED_URL) is None
        assert learned_json("http://liar.test") is not None
    elif not server.takes_protobuf:
        assert server.proto_answers == []  # never tried
    # sessions/{id}/finish on close, only to servers with the handshake (404 tolerated).
    finished = [p for p, *_ in server.log if p.endswith("/finish")]
    assert finished == ([] if shape == "skyrl_tx" else ["/api/v1/sessions/sess-0/finish"])


def test_fallback_is_remembered_per_server(private_hooks: Hooks) -> None:
    """A second session to a server that refused protobuf does not try it again; another
    server is not affected."""
    liar = ShapedServer("liar")
    for _ in range(2):
        service = _client(liar, private_hooks)
        try:
            tc = service.create_lora_training_client(TINY, rank=4)
            tc.forward_backward(_data(), "cross_entropy").result(10)
        finally:
            service.close()
    assert liar.proto_answers == [415]
    assert len(liar.sent("/api/v1/forward_backward")) == 3  # proto, JSON, JSON
    other = ShapedServer("tinkex")
    service = _client(other, private_hooks)
    try:
        tc = service.create_lora_training_client(TINY, rank=4)
        tc.forward_backward(_data(), "cross_entropy").result(10)
    finally:
        service.close()
    assert other.proto_answers == [200]


def test_chunks_already_accepted_are_not_sent_again(private_hooks: Hooks) -> None:
    """A multi-chunk forward_backward: the refused first chunk is re-sent as JSON, later
    chunks go as JSON; each seq_id reaches the model once."""
    liar = ShapedServer("liar")
    service = _client(liar, private_hooks)
    try:
        tc = service.create_lora_training_client(TINY, rank=4)
        tc.max_chunk_items = 1
        out = tc.forward_backward(_data(3), "cross_entropy").result(10)
    finally:
        service.close()
    assert len(out.loss_fn_outputs) == 3
    (model,) = liar.fake.models.values()
    assert model.seq_ids == [1, 2, 3]
    kinds = [b[1] for b in liar.sent("/api/v1/forward_backward")]
    assert kinds == [
        PROTOBUF_MEDIA_TYPE,
        "application/json",
        "application/json",
        "application/json",
    ]


def test_chunk_flags_lower_the_chunk_size(private_hooks: Hooks) -> None:
    server = ShapedServer("tinkex")
    flags = {"proto_write_fwdbwd": True, "fwdbwd_max_chunk_len": 2}
    server._config = lambda: httpx.Response(200, json=flags)  # type: ignore[method-assign]
    service = _client(server, private_hooks)
    try:
        tc = service.create_lora_training_client(TINY, rank=4)
        assert (tc.max_chunk_items, tc.max_chunk_bytes) == (2, 5_000_000)
        out = tc.forward_backward(_data(5), "cross_entropy").result(10)
    finally:
        service.close()
    assert len(out.loss_fn_outputs) == 5
    assert len(server.sent("/api/v1/forward_backward")) == 3  # 2 + 2 + 1 datums


def test_a_410_heartbeat_stops_the_heartbeats(private_hooks: Hooks) -> None:
    """tinker 0.38: a heartbeat answered 410 (the session was finished) ends the loop."""
    server = ShapedServer("tinkex")
    beats: list[int] = []
    inner = server.handler

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/session_heartbeat":
            beats.append(1)
            return httpx.Response(410, json={"detail": "session finished"})
        return await inner(request)

    service = ServiceClient(
        api_key="tml-test-key",
        base_url="http://tinkex.test",
        transport=httpx.MockTransport(handler),
        hooks=private_hooks,
        heartbeat_interval=0.01,
    )
    try:
        deadline = time.monotonic() + 10
        while not beats and time.monotonic() < deadline:
            time.sleep(0.01)
        task = service._session._heartbeat_task
        assert task is not None
        while not task.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert task.done()
        assert not task.cancelled()
    finally:
        service.close()
    assert beats == [1]


def test_a_content_refusal_after_protobuf_was_taken_is_not_a_fallback(
    private_hooks: Hooks,
) -> None:
    """Once a server took protobuf, a 400 to a protobuf body is about the content: it is
    raised, nothing is re-sent as JSON and nothing is remembered."""
    server = ShapedServer("tinkex")
    refuse_next = {"on": False}
    inner = server.handler

    async def handler(request: httpx.Request) -> httpx.Response:
        if refuse_next["on"] and request.url.path == "/api/v1/forward_backward":
            server.log.append((request.url.path, request.headers.get("content-type", ""), "", ""))
            return httpx.Response(400, json={"detail": "data[0]: bad targets"})
        return await inner(request)

    service = ServiceClient(
        api_key="tml-test-key",
        base_url="http://tinkex.test",
        transport=httpx.MockTransport(handler),
        hooks=private_hooks,
        poll_policy=FAST_POLLS,
    )
    try:
        tc = service.create_lora_training_client(TINY, rank=4)
        tc.forward_backward(_data(), "cross_entropy").result(10)
        refuse_next["on"] = True
        with pytest.raises(APIStatusError) as info:
            tc.forward_backward(_data(), "cross_entropy").result(10)
        assert info.value.status_code == 400
        assert service._session.protocol.generation == "protobuf"
    finally:
        service.close()
    kinds = [b[1] for b in server.sent("/api/v1/forward_backward")]
    assert kinds == [PROTOBUF_MEDIA_TYPE, PROTOBUF_MEDIA_TYPE]
    assert learned_json("http://tinkex.test") is None


def test_protocol_json_skips_the_handshake(private_hooks: Hooks) -> None:
    server = ShapedServer("tinkex")
    service = _client(server, private_hooks, protocol="json")
    try:
        tc = service.create_lora_training_client(TINY, rank=4)
        tc.forward(_data(), "cross_entropy").result(10)
        tc.forward_backward(_data(), "cross_entropy").result(10)
    finally:
        service.close()
    assert server.sent("/api/v1/client/config") == []
    assert server.proto_answers == []
    assert [b[1] for b in server.sent("/api/v1/forward")] == ["application/json"]
    assert not [p for p, *_ in server.log if p.endswith("/finish")]


def test_protocol_protobuf_never_falls_back(private_hooks: Hooks) -> None:
    server = ShapedServer("skyrl_tx")
    service = _client(server, private_hooks, protocol="protobuf")
    try:
        tc = service.create_lora_training_client(TINY, rank=4)
        with pytest.raises(APIStatusError) as info:
            tc.forward_backward(_data(), "cross_entropy").result(10)
        assert info.value.status_code == 422
    finally:
        service.close()
    assert server.proto_answers == [422]
    assert len(server.sent("/api/v1/forward_backward")) == 1
    assert learned_json("http://skyrl_tx.test") is None


def test_auth_refusal_of_the_handshake_is_raised(private_hooks: Hooks) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": "invalid API key"})

    with pytest.raises(APIStatusError) as info:
        ServiceClient(
            api_key="tml-test-key",
            base_url="http://auth.test",
            transport=httpx.MockTransport(handler),
            hooks=private_hooks,
        )
    assert info.value.status_code == 401
    assert "client/config" in str(info.value)


def test_protocol_setting_and_variable() -> None:
    local = {"base_url": "local://"}
    assert Config(env={}, **local).protocol == "auto"
    assert Config(env={"TINKEX_PROTOCOL": "JSON"}, **local).protocol == "json"
    assert Config(protocol="protobuf", env={}, **local).protocol == "protobuf"
    with pytest.raises(TinkexValidationError) as info:
        Config(env={"TINKEX_PROTOCOL": "grpc"}, **local)
    assert "TINKEX_PROTOCOL" in str(info.value)
    assert "auto, json, protobuf" in str(info.value)
    with pytest.raises(TinkexValidationError) as info:
        Config(protocol="xml", env={}, **local)
    assert "protocol" in str(info.value)


def test_hosted_hosts() -> None:
    assert is_hosted(HOSTED_URL)
    assert is_hosted("https://thinkingmachines.ai/x")
    assert not is_hosted("http://127.0.0.1:8000")
    assert not is_hosted("https://evilthinkingmachines.dev")


# -- the real local server, both generations --------------------------------------------------


class Recording(httpx.AsyncBaseTransport):
    """Records (path, content-type, answer content-type) around a real transport."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.seen: list[tuple[str, str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.seen.append(
            (
                request.url.path,
                request.headers.get("content-type", ""),
                response.headers.get("content-type", ""),
            )
        )
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _local_run(protobuf: bool, data_dir: Path, hooks: Hooks) -> dict[str, Any]:
    from tinkex_server._config import ServerConfig
    from tinkex_server._local import LocalTransport, get_local_server

    server = get_local_server(config=ServerConfig(data_dir=data_dir, protobuf=protobuf))
    recording = Recording(LocalTransport(server))
    service = ServiceClient(
        base_url="local://", transport=recording, hooks=hooks, poll_policy=FAST_POLLS
    )
    try:
        losses, sample = _loop(service)
        generation = service._session.protocol.generation
    finally:
        service.close()
        server.close()
    return {"generation": generation, "losses": losses, "sample": sample, "seen": recording.seen}


def test_local_server_both_generations(tmp_path: Path, local_hooks: Hooks) -> None:
    """The real local server with protobuf on (``tinkex serve``) and off (``--json-only``):
    the same loop, the same numbers, each over its own encoding."""
    runs = {p: _local_run(p, tmp_path / str(p), local_hooks) for p in (True, False)}
    for protobuf, run in runs.items():
        assert run["generation"] == ("protobuf" if protobuf else "json")
        losses = run["losses"]
        assert losses[0] == losses[1] != losses[2]  # forward == first fwd/bwd; a step ran
        seen = run["seen"]
        bodies = [s for s in seen if s[0] in ("/api/v1/forward_backward", "/api/v1/forward")]
        results = [s[2] for s in seen if s[0] == "/api/v1/retrieve_future"]
        if protobuf:
            assert {s[0] for s in bodies} == {"/api/v1/forward_backward"}
            assert {s[1] for s in bodies} == {PROTOBUF_MEDIA_TYPE}
            assert sum(PROTOBUF_MEDIA_TYPE in r for r in results) == 4  # fwd, 2 fwd/bwd, sample
            assert all(s.sequence_id for s in run["sample"].sequences)
        else:
            assert len(bodies) == 3
            assert {s[1] for s in bodies} == {"application/json"}
            assert all(PROTOBUF_MEDIA_TYPE not in r for r in results)
    assert runs[True]["losses"] == runs[False]["losses"]
    tokens = [[s.tokens for s in run["sample"].sequences] for run in runs.values()]
    assert tokens[0] == tokens[1]


KEY = "tml-protocol-serve-KEY-0123456789"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """``start(*flags)``: ``tinkex serve`` as a subprocess on 127.0.0.1, its URL."""
    procs: list[ServeProcess] = []

    def start(*flags: str) -> str:
        data_dir = tmp_path / f"d{len(procs)}"
        procs.append(ServeProcess(data_dir, "--api-key", KEY, "--torch-threads", "1", *flags))
        return procs[-1].url

    try:
        yield start
    finally:
        for proc in procs:
            proc.stop()


@pytest.mark.parametrize("json_only", [False, True], ids=["serve", "serve-json-only"])
def test_tinkex_serve_over_http(serve: Any, local_hooks: Hooks, json_only: bool) -> None:
    """``tinkex serve`` over real HTTP: protobuf bodies (zstd) and protobuf results; with
    ``--json-only`` (no ``client/config``) the same loop over JSON."""
    url = serve(*(["--json-only"] if json_only else []))
    recording = Recording(httpx.AsyncHTTPTransport())
    service = ServiceClient(
        base_url=url, api_key=KEY, transport=recording, hooks=local_hooks, poll_policy=FAST_POLLS
    )
    try:
        losses, sample = _loop(service)
        protocol = service._session.protocol
    finally:
        service.close()
    assert losses[0] == losses[1] != losses[2]
    assert len(sample.sequences) == 2
    bodies = [s for s in recording.seen if s[0] in ("/api/v1/forward_backward", "/api/v1/forward")]
    results = [s[2] for s in recording.seen if s[0] == "/api/v1/retrieve_future"]
    config = [s[2] for s in recording.seen if s[0] == "/api/v1/client/config"]
    assert len(config) == 1
    if json_only:
        assert protocol.generation == "json"
        assert protocol.flags is None
        assert len(bodies) == 3
        assert {s[1] for s in bodies} == {"application/json"}
        assert all(PROTOBUF_MEDIA_TYPE not in r for r in results)
    else:
        assert protocol.generation == "protobuf"
        assert protocol.compress
        assert {s[:2] for s in bodies} == {("/api/v1/forward_backward", PROTOBUF_MEDIA_TYPE)}
        assert sum(PROTOBUF_MEDIA_TYPE in r for r in results) == 4
        assert all(s.sequence_id for s in sample.sequences)
    finished = [s for s in recording.seen if s[0].endswith("/finish")]
    assert len(finished) == (0 if json_only else 1)


def test_json_of_results_is_still_read(private_hooks: Hooks) -> None:
    """A protobuf session whose server answers a result as JSON anyway."""
    server = ShapedServer("tinkex")

    async def json_results(request: httpx.Request) -> httpx.Response:
        return await server.fake.handler(request)

    server._result = json_results  # type: ignore[method-assign]
    service = _client(server, private_hooks)
    try:
        tc = service.create_lora_training_client(TINY, rank=4)
        out = tc.forward_backward(_data(), "cross_entropy").result(10)
    finally:
        service.close()
    assert out.metrics["loss:sum"] > 0
    assert out.loss_fn_outputs[0]["logprobs"].dtype == "float32"
    assert server.proto_answers == [200]


@pytest.mark.parametrize(("protocol", "asked"), [("protobuf", 1), ("json", 4)])
def test_get_info_kept_in_the_protobuf_generation(
    private_hooks: Hooks, protocol: str, asked: int
) -> None:
    """tinker 0.38 asks for the model's info once and answers from it; 0.16.1 asks every
    time: tinkex does what the generation it speaks does."""
    server = ShapedServer("tinkex")
    service = _client(server, private_hooks, protocol=protocol)
    try:
        tc = service.create_lora_training_client(TINY, rank=4)
        infos = [tc.get_info(), tc.get_info(), tc.get_info()]
        assert asyncio.run(tc.get_info_async()).lora_rank == 4
    finally:
        service.close()
    assert {info.model_data.model_name for info in infos} == {TINY}
    assert len(server.sent("/api/v1/get_info")) == asked
