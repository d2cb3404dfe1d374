"""Compatibility: the official tinker 0.38 client's server-side custom losses on ``tinkex
serve``. ``ServiceClient.create_custom_loss`` uploads the traced graph (tinkex serve's
``client/config`` says ``custom_loss_server_side``), ``forward_backward_custom(data,
handle)`` runs it on the server, and its loss equals the same loss run client-side by the
official client; an operation outside the server's allowlist is a 400 naming the node.

The official client needs torch to trace: the test uses the venv of the cookbook tests
(tinker 0.38.0 with this machine's CPU torch), built once and cached.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "compat"))

import compat_harness as harness

pytestmark = [pytest.mark.conformance]

# The cookbook tests' venv (same key, same lists: it is reused, not rebuilt).
REQUIREMENTS = ["tinker==0.38.0", "tinker-cookbook[math-rl]==0.5.8"]
TORCH = "torch==2.13.0"

SCRIPT = """
import json, sys
import torch
import tinker
from tinker import types

url, key, model = sys.argv[1:4]
service = tinker.ServiceClient(base_url=url, api_key=key)

def pg(logprobs, advantages):
    ratio = torch.exp(logprobs - logprobs.detach())
    loss = -(torch.clamp(ratio, 0.8, 1.2) * advantages).sum()
    loss = loss + 0.1 * torch.logsumexp(logprobs, dim=0)
    return loss, {"custom/pg:sum": loss}

def batch(data, logprobs):
    total = 0
    for datum, lp in zip(data, logprobs):
        total = total + pg(lp, datum.loss_fn_inputs["advantages"].to_torch())[0]
    return total, {}

def noisy(logprobs):
    return (logprobs * torch.rand_like(logprobs)).sum(), {}

handle = service.create_custom_loss(pg, {"logprobs": 1, "advantages": 1}).result()
data = [types.Datum(
    model_input=types.ModelInput.from_ints([5, 6, 7, 8]),
    loss_fn_inputs={"target_tokens": [6, 7, 8, 9], "advantages": [1.0, -0.5, 2.0, 0.3]},
)]
clients = [
    service.create_lora_training_client(base_model=model, rank=4, seed=3).result()
    for _ in range(2)
]
server_side = clients[0].forward_backward_custom(data, handle).result()
client_side = clients[1].forward_backward_custom(data, batch).result()
try:
    service.create_custom_loss(noisy, {"logprobs": 1}).result()
    refusal = None
except Exception as exc:
    refusal = f"{type(exc).__name__}: {exc}"
print(json.dumps({
    "loss_id": handle.loss_id,
    "server": server_side.metrics,
    "client": client_side.metrics,
    "refusal": refusal,
}))
"""


@pytest.mark.timeout(2400)
def test_official_0_38_client_runs_its_custom_loss_on_tinkex_serve(tmp_path: Path) -> None:
    python = harness.ensure_venv(
        "cookbook-0.5.8-tinker-0.38.0-cpu", REQUIREMENTS, first=[TORCH], pins=[TORCH]
    )
    with harness.serve(tmp_path) as served:
        done = subprocess.run(
            [str(python), "-c", SCRIPT, served.url, harness.API_KEY, harness.MODEL],
            capture_output=True,
            text=True,
            env=harness.clean_env(),
            timeout=900,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["loss_id"], report  # uploaded: the server holds the loss
    assert set(report["server"]) == {"loss:sum", "custom/pg:sum"}  # one server-side pass
    assert report["server"]["loss:sum"] == pytest.approx(report["client"]["loss:sum"], rel=1e-5)
    assert report["refusal"] is not None
    assert "400" in report["refusal"]
    assert "node 'rand_like' (call_function 'torch.rand_like')" in report["refusal"]
