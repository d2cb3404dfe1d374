"""``tinkex run usage``: table and JSON against ``tinkex serve`` over HTTP on 127.0.0.1 (a
scripted run whose counts come from what was sent and generated), a session's usage, and a
server without the usage routes (the same app behind a wrapper that answers 404 there)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tinkex_cli import ExitCode, build_cli

KEY = "tml-usage-cli-KEY-0123456789"
BASE_MODEL = "tinkex/tiny-llama-100k"


def _serve(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (a free port) until the generator ends."""
    from tinkex_server.testing import serve_app

    with serve_app(app) as url:
        yield url


@dataclass(frozen=True)
class Scripted:
    url: str
    run: str
    session: str
    want: dict[str, int]


def _script(url: str) -> tuple[str, str, dict[str, int]]:
    from tinkex_clients import ServiceClient
    from tinkex_types import AdamParams, Datum, ModelInput, SamplingParams

    want = dict.fromkeys(("fb_tokens", "datums", "steps", "prompt", "generated", "samples"), 0)
    with ServiceClient(base_url=url, api_key=KEY) as service:
        tc = service.create_lora_training_client(BASE_MODEL, rank=2, seed=4)
        for n in (5, 8):
            ids = [3 + (j * 5) % 40 for j in range(n + 1)]
            datum = Datum(
                model_input=ModelInput.from_ints(ids[:-1]),
                loss_fn_inputs={"target_tokens": ids[1:], "weights": [1.0] * n},
            )
            tc.forward_backward([datum], "cross_entropy").result(120)
            tc.optim_step(AdamParams(learning_rate=1e-3)).result(120)
            want["fb_tokens"] += n
            want["datums"] += 1
            want["steps"] += 1
        sampler = tc.save_weights_and_get_sampling_client()
        prompt = [4, 5, 6, 7]
        out = sampler.sample(ModelInput.from_ints(prompt), 2, SamplingParams(max_tokens=5)).result(
            120
        )
        want["samples"] = 1
        want["prompt"] = len(prompt)
        want["generated"] = sum(len(s.tokens) for s in out.sequences)
        session = service._session.session_id
        assert session is not None
        return tc.model_id, session, want


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scripted]:
    """``tinkex serve`` as a subprocess on 127.0.0.1 (port 0), after a scripted run."""
    from tinkex_server.testing import ServeProcess

    data_dir = tmp_path_factory.mktemp("usage-serve")
    flags = ("--api-key", KEY, "--log-level", "warning")
    with ServeProcess(data_dir, *flags, module="tinkex_cli") as served:
        run, session, want = _script(served.url)
        yield Scripted(served.url, run, session, want)


def tinkex(url: str, *args: str) -> Result:
    argv = ["--base-url", url, "--api-key", KEY, *args]
    result = CliRunner().invoke(build_cli(), argv, prog_name="tinkex")
    assert KEY not in result.stdout
    assert KEY not in result.stderr
    return result


def test_run_usage_json(scripted: Scripted) -> None:
    result = tinkex(scripted.url, "run", "usage", scripted.run, "-f", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["scope"], doc["id"], doc["source"]) == ("training_run", scripted.run, "server")
    t, want = doc["totals"], scripted.want
    assert t["forward_backward_tokens"] == want["fb_tokens"]
    assert t["forward_backward_datums"] == want["datums"]
    assert t["optim_steps"] == want["steps"]
    assert t["sample_requests"] == want["samples"]
    assert t["sample_prompt_tokens"] == want["prompt"]
    assert t["sampled_tokens"] == want["generated"]
    assert t["sampled_sequences"] == 2
    assert t["forward_tokens"] == 0
    assert {e["kind"] for e in doc["entries"]} == {"training", "sampling"}
    assert list(doc["by_base_model"]) == [BASE_MODEL]


def test_run_usage_table_and_tinker_path(scripted: Scripted) -> None:
    path = f"tinker://{scripted.run}/weights/any"
    result = tinkex(scripted.url, "run", "usage", path)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"Usage of training run {scripted.run} (source: server)" in out
    assert "Generated tokens" in out
    total = next(line for line in out.splitlines() if "total" in line)
    cells = [c.strip() for c in total.split("│") if c.strip()]
    want = scripted.want
    expected = [
        "total",
        "0",
        str(want["fb_tokens"]),
        str(want["datums"]),
        str(want["steps"]),
        str(want["samples"]),
        "2",
        str(want["prompt"]),
        str(want["generated"]),
        "0",
    ]
    assert cells == expected


def test_session_usage_and_usage_errors(scripted: Scripted) -> None:
    doc = json.loads(
        tinkex(scripted.url, "-f", "json", "run", "usage", "--session-id", scripted.session).stdout
    )
    assert (doc["scope"], doc["id"]) == ("session", scripted.session)
    assert doc["totals"]["sampled_tokens"] == scripted.want["generated"]
    both = tinkex(scripted.url, "run", "usage", scripted.run, "--session-id", scripted.session)
    assert both.exit_code == ExitCode.USAGE
    assert "one of them" in both.output
    unknown = tinkex(scripted.url, "run", "usage", "nope:train:0")
    assert unknown.exit_code == ExitCode.NOT_FOUND
    assert "nope:train:0" in unknown.stderr


def test_server_without_usage_routes(tmp_path: Path) -> None:
    from tinkex_server._app import create_app
    from tinkex_server._config import ServerConfig

    inner = create_app(ServerConfig(data_dir=tmp_path / "data", api_keys=(KEY,)))

    async def no_usage(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/usage"):
            body = b'{"detail":"Not Found"}'
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await inner(scope, receive, send)

    for url in _serve(no_usage):
        result = tinkex(url, "run", "usage", "some:train:0")
        assert result.exit_code == ExitCode.NOT_FOUND
        assert "without usage routes" in result.stderr
        client = tinkex(url, "-f", "json", "run", "usage", "some:train:0", "--source", "client")
        assert client.exit_code == 0, client.output
        doc = json.loads(client.stdout)
        assert doc["source"] == "client"
        assert doc["entries"] == []
