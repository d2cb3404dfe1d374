"""The published contract holds: schemathesis, with every check, against ``tinkex serve``.

A real server process (``python -m tinkex_server`` on 127.0.0.1, real engine) and the
schemathesis CLI (all phases: coverage, fuzzing, stateful; positive and negative data;
``--checks all``) with a fixed seed. The run must generate at least 1,000 requests over
every operation of ``/openapi.json`` and find no failure: no 5xx, no answer that violates
its declared schema (status, content type, headers, body), no undocumented status, no
schema-violating request accepted.

The server is seeded first (a session, a trained model with a saved checkpoint, a sampler, a
finished future) and schemathesis draws ids from those half of the time (its
``dictionaries``), so the operations reach the real work behind their 404s.

One setting is not a default: ``positive_data_acceptance`` also expects 400, 410 and 422
for schema-valid requests. The schema states shapes; some rules cannot be said in JSON
Schema (a base model or session that exists, ``model_path`` or ``base_model`` given,
``prompt`` room in the context, at least one of ``train_*`` true, a ``tinker://`` path):
the server refuses those with a 400/422 whose ``detail`` names the field.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tinkex_server.testing import ServeProcess

SEED = 20261206
MAX_EXAMPLES = 15
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "410", "422", "429"]

[dictionaries.runs]
values = [{run}]
[dictionaries.sessions]
values = [{session}]
[dictionaries.samplers]
values = [{sampler}]
[dictionaries.futures]
values = [{future}]
[dictionaries.bases]
values = [{base}]
[dictionaries.kinds]
values = ["weights"]
[dictionaries.names]
values = ["seeded"]
[dictionaries.paths]
values = [{path}]

[parameters]
"path.run_id" = {{ dictionary = "runs", probability = 0.5 }}
"path.session_id" = {{ dictionary = "sessions", probability = 0.5 }}
"path.sampler_id" = {{ dictionary = "samplers", probability = 0.5 }}
"path.kind" = {{ dictionary = "kinds", probability = 0.5 }}
"path.name" = {{ dictionary = "names", probability = 0.5 }}
"body.model_id" = {{ dictionary = "runs", probability = 0.5 }}
"body.session_id" = {{ dictionary = "sessions", probability = 0.5 }}
"body.sampling_session_id" = {{ dictionary = "samplers", probability = 0.5 }}
"body.request_id" = {{ dictionary = "futures", probability = 0.5 }}
"body.base_model" = {{ dictionary = "bases", probability = 0.5 }}
"body.tinker_path" = {{ dictionary = "paths", probability = 0.5 }}
"body.model_path" = {{ dictionary = "paths", probability = 0.5 }}
"""
MODEL = "tinkex/tiny-llama-100k"


def _seed(url: str) -> dict[str, str]:
    """A session, a model trained one step and saved as ``weights/seeded``, a sampler and a
    finished future on the server; their ids as TOML strings."""
    with httpx.Client(base_url=f"{url}/api/v1", timeout=120) as c:

        def done(future: dict[str, str]) -> dict[str, object]:
            while True:
                r = c.post("/retrieve_future", json={"request_id": future["request_id"]})
                if r.status_code != 408:
                    assert r.status_code == 200, r.text
                    body: dict[str, object] = r.json()
                    assert "error" not in body, body
                    return body

        session = c.post("/create_session", json={"sdk_version": "0.16.1"}).json()["session_id"]
        fut = c.post(
            "/create_model",
            json={
                "session_id": session,
                "model_seq_id": 0,
                "base_model": MODEL,
                "lora_config": {"rank": 2, "seed": 1},
            },
        ).json()
        run = str(done(fut)["model_id"])
        datum = {
            "model_input": {"chunks": [{"tokens": [1, 2, 3]}]},
            "loss_fn_inputs": {
                "target_tokens": {"data": [2, 3, 4], "dtype": "int64", "shape": [3]},
                "weights": {"data": [1.0, 1.0, 1.0], "dtype": "float32", "shape": [3]},
            },
        }
        fb = c.post(
            "/forward_backward",
            json={
                "model_id": run,
                "seq_id": 1,
                "forward_backward_input": {"data": [datum], "loss_fn": "cross_entropy"},
            },
        ).json()
        done(fb)
        saved = c.post(
            "/save_weights", json={"model_id": run, "seq_id": 2, "path": "seeded"}
        ).json()
        path = str(done(saved)["path"])
        sampler = c.post(
            "/create_sampling_session",
            json={"session_id": session, "sampling_session_seq_id": 0, "model_path": path},
        ).json()["sampling_session_id"]
    values = {
        "run": run,
        "session": session,
        "sampler": sampler,
        "future": fb["request_id"],
        "base": MODEL,
        "path": path,
    }
    return {key: json.dumps(value) for key, value in values.items()}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``tinkex serve`` on a free port of 127.0.0.1; yields its base URL and its log."""
    log = tmp_path / "serve.log"
    flags = ("--poll-hold", "0.2", "--seq-gap-grace", "1", "--torch-threads", "1")
    with ServeProcess(tmp_path / "data", *flags, "--log-level", "warning", log=log) as served:
        yield served.url, log


def test_schemathesis_finds_no_failure(served: tuple[str, Path], tmp_path: Path) -> None:
    url, log = served
    config = tmp_path / "schemathesis.toml"
    seeded = _seed(url)
    config.write_text(CONFIG.format(**seeded))
    report = tmp_path / "report.json"
    cli = Path(sys.executable).parent / "schemathesis"
    run = subprocess.run(
        [
            str(cli),
            "--config-file",
            str(config),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "1",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert report.is_file(), run.stdout[-4000:] + run.stderr[-2000:]
    result = json.loads(report.read_text())
    summary = run.stdout[-6000:]
    assert result["failures"] == [], summary
    assert result["errors"] == [], summary
    assert result["test_cases"]["with_failures"] == 0, summary
    assert result["exit_code"] == 0, summary
    operations = result["operations"]
    assert operations["total"] >= 31
    assert operations["tested"] == operations["total"] == operations["selected"], operations
    assert result["test_cases"]["generated"] >= 1000, result["test_cases"]
    phases = result["phases"]
    for phase in ("coverage", "fuzzing", "stateful"):
        assert phases[phase]["status"] == "success", phases
    _raw_bodies_are_refused_naming_the_field(url, {k: json.loads(v) for k, v in seeded.items()})
    assert "Traceback" not in log.read_text(), log.read_text()[-4000:]


def _raw_bodies_are_refused_naming_the_field(url: str, ids: dict[str, str]) -> None:
    """The raw bodies of issue 17 (what a JSON encoder that writes ``null`` for infinity, or
    a hand-written client, sends) against the same server: 4xx naming the field, never 5xx."""
    run, sampler = ids["run"], ids["sampler"]
    prompt = '{"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3]}]}'
    datum = (
        '{"model_input": ' + prompt + ', "loss_fn_inputs": {'
        '"target_tokens": {"data": [2, 3, 4], "dtype": "int64"}, '
        '"weights": {"data": [null, 1.0, 1.0], "dtype": "float32"}}}'
    )
    sample = (
        '{"sampling_session_id": "SAMPLER", "seq_id": 99, "num_samples": 1, "prompt": PROMPT, '
        '"sampling_params": {"max_tokens": 2, PARAM}}'
    )
    templates = [
        (
            "/api/v1/forward_backward",
            '{"model_id": "RUN", "seq_id": 99, "forward_backward_input": {"data": [DATUM], '
            '"loss_fn": "cross_entropy"}}',
            "weights",
        ),
        (
            "/api/v1/optim_step",
            '{"model_id": "RUN", "seq_id": 99, "adam_params": {"learning_rate": Infinity}}',
            "learning_rate",
        ),
        (
            "/api/v1/optim_step",
            '{"model_id": "RUN", "seq_id": 99, "adam_params": {"learning_rate": null}}',
            "learning_rate",
        ),
        ("/api/v1/asample", sample.replace("PARAM", '"temperature": Infinity'), "temperature"),
        ("/api/v1/asample", sample.replace("PARAM", f'"seed": {2**70}'), "seed"),
    ]
    filled = {"RUN": run, "SAMPLER": sampler, "DATUM": datum, "PROMPT": prompt}
    cases = []
    for path, template, field in templates:
        body = template
        for key, value in filled.items():
            body = body.replace(key, value)
        cases.append((path, body, field))
    with httpx.Client(base_url=url, timeout=60.0) as client:
        for path, body, field in cases:
            answer = client.post(path, content=body, headers={"content-type": "application/json"})
            assert 400 <= answer.status_code < 500, (path, body, answer.text)
            assert field in answer.json()["detail"], (path, body, answer.text)
        archive = client.get(
            f"/api/v1/checkpoint_archives/{run}/weights/seeded",
            params={"expires": "9999999999", "signature": "\u00e9"},
        )
        assert 400 <= archive.status_code < 500, archive.text
        assert client.get("/api/v1/healthz").status_code == 200
