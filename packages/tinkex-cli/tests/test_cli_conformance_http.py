"""``tinkex conformance`` over HTTP: against a real ``tinkex serve`` process every row
passes (both wire generations) and nothing it did not create changes; against a
deliberately broken server (the real app behind an ASGI wrapper that breaks chosen routes)
exactly the broken rows fail, and 404s of optional routes read "not offered"."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tinkex_cli import ExitCode, build_cli
from tinkex_cli._cmd_conformance import all_steps
from tinkex_server.testing import ServeProcess, serve_app

KEY = "tml-conformance-http-KEY-0123456789"
BASE_MODEL = "tinkex/tiny-llama-100k"

#: A rule looks at (method, path, body) and answers (status, JSON body), or None to pass.
Rule = Callable[[str, str, bytes], tuple[int, Any] | None]


def conformance(url: str, *args: str) -> Result:
    argv = ["--api-key", KEY, "-f", "json", "conformance", url, *args]
    result = CliRunner().invoke(build_cli(), argv, prog_name="tinkex")
    assert KEY not in result.stdout
    assert KEY not in result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"unexpected exception {result.exception!r}\n{result.output}")
    return result


def rows_of(result: Result) -> dict[str, dict[str, Any]]:
    return {row["step"]: row for row in json.loads(result.stdout)["rows"]}


def has_protocol_setting() -> bool:
    from tinkex_http import Config

    return "protocol" in {f.name for f in dataclasses.fields(Config)}


# -- a real `tinkex serve` ------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``tinkex serve`` as a subprocess on 127.0.0.1 (port 0), requiring ``KEY``."""
    data_dir = tmp_path_factory.mktemp("conformance-serve")
    with ServeProcess(data_dir, "--api-key", KEY, "--log-level", "warning") as served:
        yield served.url


@pytest.fixture(scope="module")
def others(served: str) -> dict[str, Any]:
    """Someone else's run on the served instance: two checkpoints, one published."""
    from tinkex_clients import ServiceClient

    with ServiceClient(base_url=served, api_key=KEY) as service:
        training = service.create_lora_training_client(BASE_MODEL, rank=2, seed=3)
        state = training.save_state("theirs-state").result().path
        sampler = training.save_weights_for_sampler("theirs-sampler").result().path
        assert sampler is not None
        service.create_rest_client().publish_checkpoint_from_tinker_path(sampler).result()
        return {"run": training.model_id, "paths": {state, sampler}, "public": sampler}


def snapshot(url: str, run: str) -> tuple[dict[str, bool], list[str]]:
    """(run's checkpoints -> public, every checkpoint path of the caller)."""
    from tinkex_clients import ServiceClient

    with ServiceClient(base_url=url, api_key=KEY) as service:
        rest = service.create_rest_client()
        theirs = rest.list_checkpoints(run).result().checkpoints
        every = rest.list_user_checkpoints(limit=1000).result().checkpoints
    return {c.tinker_path: c.public for c in theirs}, [c.tinker_path for c in every]


@pytest.mark.parametrize("generation", ["json", "protobuf"])
def test_tinkex_serve_passes_and_is_left_as_it_was(
    served: str, others: dict[str, Any], generation: str
) -> None:
    before = snapshot(served, others["run"])
    result = conformance(served, "--generation", generation)
    if generation == "protobuf" and not has_protocol_setting():
        assert result.exit_code == ExitCode.USAGE
        assert "speaks the JSON generation only" in result.stderr
        return
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["passed"] is True
    assert doc["generation"] == (generation if has_protocol_setting() else "json")
    rows = rows_of(result)
    assert {name: row["status"] for name, row in rows.items() if row["status"] != "ok"} == {}
    assert set(rows) == {s.name for s in all_steps()} | {"cleanup"}
    # nothing it did not create changed; nothing it created is left
    after = snapshot(served, others["run"])
    assert after == before
    assert before[0] == {p: p == others["public"] for p in others["paths"]}
    assert not any("conformance-" in path for path in after[1])


# -- a deliberately broken server ---------------------------------------------------------------


class Breaker:
    """ASGI wrapper: requests a rule answers get that answer (never reaching the app); the
    others go to the real app with their body replayed."""

    def __init__(self, app: Any, rules: list[Rule]) -> None:
        self.app = app
        self.rules = rules

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        for rule in self.rules:
            answer = rule(scope["method"], scope["path"], body)
            if answer is not None:
                status, payload = answer
                headers = [(b"content-type", b"application/json"), (b"x-should-retry", b"false")]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": json.dumps(payload).encode()})
                return
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _loss_of(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    inner = doc.get("forward_backward_input") if isinstance(doc, dict) else None
    return inner.get("loss_fn") if isinstance(inner, dict) else None


def serve_broken(data_dir: Path, rules: list[Rule]) -> Iterator[str]:
    """The real app (JSON generation, short seq-gap grace: broken requests never reach it)
    behind :class:`Breaker`, served by uvicorn on a thread."""
    from tinkex_server import ServerConfig, create_app

    config = ServerConfig(data_dir=data_dir, seq_gap_grace_s=0.2, protobuf=False)
    app = Breaker(create_app(config), rules)
    with serve_app(app) as url:
        yield url


def defects(method: str, path: str, body: bytes) -> tuple[int, Any] | None:
    """Known defects: optim_step crashes, cispo crashes, dro is refused by name, a session's
    answer has the wrong shape, and the sessions listing is not served."""
    if method == "POST" and path == "/api/v1/optim_step":
        return 500, {"detail": "optimizer exploded"}
    if method == "POST" and path == "/api/v1/forward_backward":
        loss = _loss_of(body)
        if loss == "cispo":
            return 500, {"detail": "cispo kernel crashed"}
        if loss == "dro":
            return 400, {"detail": "unknown loss_fn 'dro'"}
    if method == "GET" and re.fullmatch(r"/api/v1/sessions/[^/]+", path):
        return 200, {"training_run_ids": "not a list", "sampler_ids": []}
    if method == "GET" and path == "/api/v1/sessions":
        return 404, {"detail": "Not Found"}
    return None


@pytest.fixture
def broken(tmp_path: Path) -> Iterator[str]:
    yield from serve_broken(tmp_path / "broken", [defects])


def test_broken_server_fails_exactly_the_broken_rows(broken: str) -> None:
    result = conformance(broken, "--generation", "json")
    assert result.exit_code == ExitCode.ERROR, result.output
    doc = json.loads(result.stdout)
    assert doc["passed"] is False
    rows = rows_of(result)
    failed = {name for name, row in rows.items() if row["status"] == "failed"}
    assert failed == {"optim_step", "forward_backward:cispo", "rest.get_session"}
    offered = {name for name, row in rows.items() if row["status"] == "not_offered"}
    assert offered == {"forward_backward:dro", "rest.list_sessions"}
    assert {row["status"] for row in rows.values()} == {"ok", "failed", "not_offered"}
    assert rows["optim_step"]["http_status"] == 500
    assert "optimizer exploded" in rows["optim_step"]["message"]
    assert rows["forward_backward:cispo"]["http_status"] == 500
    assert "cispo kernel crashed" in rows["forward_backward:cispo"]["message"]
    assert rows["forward_backward:dro"]["http_status"] == 400
    assert rows["rest.get_session"]["message"].startswith("unexpected answer")
    assert rows["rest.list_sessions"]["http_status"] == 404
    assert doc["counts"]["failed"] == 3
    assert doc["cleanup"]["left"] == []


def test_broken_server_table_names_status_and_message(broken: str) -> None:
    argv = ["--api-key", KEY, "conformance", broken, "--only", "optim_step"]
    result = CliRunner().invoke(build_cli(), argv, prog_name="tinkex")
    assert result.exit_code == ExitCode.ERROR
    line = next(x for x in result.stdout.splitlines() if "optim_step" in x)
    assert "FAILED" in line
    assert "HTTP 500: optimizer exploded" in line
    assert "FAILED: 0 ok, 1 failed, 0 not offered, 0 skipped" in result.stdout


def test_only_optional_routes_missing_still_passes(tmp_path: Path) -> None:
    def no_publishing(method: str, path: str, body: bytes) -> tuple[int, Any] | None:
        if path.endswith("/publish") or path == "/api/v1/unload_model":
            return 404, {"detail": "Not Found"}
        return None

    for url in serve_broken(tmp_path / "optional", [no_publishing]):
        result = conformance(url, "--generation", "json", "--only", "rest,unload_model")
        assert result.exit_code == 0, result.output
        rows = rows_of(result)
        assert rows["rest.publish_checkpoint"]["status"] == "not_offered"
        assert rows["rest.unpublish_checkpoint"]["status"] == "skipped"
        assert rows["unload_model"]["status"] == "not_offered"
        assert rows["rest.get_training_run"]["status"] == "ok"
        assert json.loads(result.stdout)["passed"] is True
