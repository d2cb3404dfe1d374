"""Server-side custom losses (tinker 0.38 ``create_custom_loss``): tracing and encoding on
the client, the server's allowlist, and the same gradients as the client-side
``forward_backward_custom`` of the same loss, over ``local://`` and over HTTP (the app under
uvicorn on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tinkex_clients import LossHandle, ServiceClient
from tinkex_clients._custom_loss_graph import encode_graph, trace_loss
from tinkex_server._app import create_app
from tinkex_server._config import ServerConfig
from tinkex_server.testing import serve_app
from tinkex_types import (
    AdamParams,
    BadRequestError,
    CustomLossGraph,
    Datum,
    Hooks,
    ModelInput,
    TinkexValidationError,
)

from .conftest import FAST_POLLS, TINY

#: eps far above the gradients: the first AdamW step is then ~ lr * g (linear in the
#: gradient), so equal weights afterwards mean equal gradients, not just equal signs.
LINEAR_STEP = AdamParams(learning_rate=1.0, eps=1.0, weight_decay=0.0)


def _datum(tokens: list[int], adv: float) -> Datum:
    n = len(tokens) - 1
    return Datum(
        model_input=ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": tokens[1:],
            "old_logprobs": [-2.0 - 0.1 * i for i in range(n)],
            "advantages": [adv * (1 + i % 2) for i in range(n)],
            "mask": [1.0 if i else 0.0 for i in range(n)],
        },
    )


DATA = [_datum([10 + (i + j) % 7 for j in range(9)], 1.0 - i) for i in range(3)]
EVAL = [
    Datum(
        model_input=d.model_input,
        loss_fn_inputs={
            "target_tokens": d.loss_fn_inputs["target_tokens"],
            "weights": [1.0] * d.loss_fn_inputs["target_tokens"].size,
        },
    )
    for d in DATA
]
RANKS: dict[str, Any] = {"logprobs": 1, "old_logprobs": 1, "advantages": 1, "mask": 1}


def clipped_pg(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: Any
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A PPO-style loss with a KL penalty: exp, clamp, minimum, where, logsumexp..."""
    ratio = torch.exp(logprobs - old_logprobs)
    clipped = torch.clamp(ratio, 0.8, 1.2)
    surrogate = -torch.minimum(ratio * advantages, clipped * advantages)
    kl = (ratio - 1) - (logprobs - old_logprobs)
    terms = torch.where(mask > 0, surrogate + 0.1 * kl, torch.zeros_like(surrogate))
    spread = torch.logsumexp(logprobs, dim=0) - logprobs.mean()
    loss = terms.sum() + 0.01 * spread
    return loss, {"custom/kl:mean": kl.mean(), "custom/terms:sum": terms.sum()}


def _batch_loss(data: list[Datum], logprobs: list[torch.Tensor]) -> tuple[Any, dict[str, Any]]:
    """The same loss as a client-side ``forward_backward_custom`` function."""
    total: Any = 0.0
    for datum, lp in zip(data, logprobs, strict=True):
        inputs = [datum.loss_fn_inputs[k].to_torch() for k in ("old_logprobs", "advantages")]
        loss, _ = clipped_pg(lp, *inputs, datum.loss_fn_inputs["mask"].to_torch())
        total = total + loss
    return total, {"loss:sum": float(total.detach())}


# -- tracing and encoding (no server) ----------------------------------------------------------


def test_tracing_encodes_every_node_as_plain_data() -> None:
    handle = trace_loss(clipped_pg, RANKS, "s")
    assert handle.name == "clipped_pg"
    assert handle.input_names == ("old_logprobs", "advantages", "mask")
    assert handle.loss_id is None
    graph = encode_graph(handle)
    again = CustomLossGraph.from_json(graph.to_json())
    assert again == graph
    targets = {(n.op, n.target) for n in graph.nodes}
    for expected in [
        ("call_function", "torch.exp"),
        ("call_function", "torch.clamp"),
        ("call_function", "operator.sub"),
        ("call_function", "torch.where"),
        ("call_function", "torch.logsumexp"),
        ("call_method", "mean"),
    ]:
        assert expected in targets
    assert [n.target for n in graph.nodes if n.op == "placeholder"] == [
        "logprobs",
        "old_logprobs",
        "advantages",
        "mask",
    ]
    logsumexp = next(n for n in graph.nodes if n.target == "torch.logsumexp")
    assert logsumexp.kwargs == {"dim": 0}
    out = graph.nodes[-1]
    assert out.op == "output"
    assert out.args[0]["tuple"][1]["dict"].keys() == {"custom/kl:mean", "custom/terms:sum"}


def test_constants_slices_and_infinities_are_encoded() -> None:
    def fancy(logprobs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = logprobs.to(torch.float64)[1:, ...]
        return x.clamp(min=float("-inf")).sum(), {}

    graph = encode_graph(trace_loss(fancy, {"logprobs": 1}, "s"))
    encoded = [a for n in graph.nodes for a in [*n.args, *n.kwargs.values()]]
    assert {"dtype": "float64"} in encoded
    assert {"float": "-inf"} in encoded
    assert {"tuple": [{"slice": [1, None, None]}, {"ellipsis": True}]} in encoded


def _branching(logprobs: torch.Tensor) -> Any:
    if logprobs.sum() > 0:
        return logprobs.sum(), {}
    return -logprobs.sum(), {}


def _host(logprobs: torch.Tensor) -> Any:
    return logprobs.sum(), {"custom/x:sum": logprobs.sum().item()}


def _bad_metric(logprobs: torch.Tensor) -> Any:
    return logprobs.sum(), {"Loss": logprobs.sum()}


_CAPTURED = torch.ones(3)


def _captures(logprobs: torch.Tensor) -> Any:
    return (logprobs * torch.nn.Parameter(_CAPTURED)).sum(), {}


def _defaults(logprobs: torch.Tensor, weights: Any = None) -> Any:
    return logprobs.sum(), {}


def _no_logprobs(weights: torch.Tensor) -> Any:
    return weights.sum(), {}


@pytest.mark.parametrize(
    ("fn", "ranks", "message"),
    [
        (_branching, {"logprobs": 1}, "cannot be traced"),
        (_host, {"logprobs": 1}, "calls item()"),
        (_bad_metric, {"logprobs": 1}, "custom/<name>:sum"),
        (_defaults, {"logprobs": 1, "weights": 1}, "has a default"),
        (_no_logprobs, {"weights": 1}, "logprobs as its first parameter"),
        (clipped_pg, {"logprobs": 1}, "must give a rank for each"),
        (clipped_pg, {**RANKS, "logprobs": 0}, "rank 1"),
        (clipped_pg, {**RANKS, "mask": 3}, "not 0, 1 or 2"),
    ],
)
def test_tracing_refuses_what_a_graph_cannot_hold(fn: Any, ranks: Any, message: str) -> None:
    with pytest.raises(TinkexValidationError) as info:
        trace_loss(fn, ranks, "s")
    assert message in str(info.value)


def test_a_captured_tensor_is_refused() -> None:
    with pytest.raises(TinkexValidationError, match=r"captures a tensor|cannot be traced"):
        trace_loss(_captures, {"logprobs": 1}, "s")


# -- against a real server -----------------------------------------------------------------------


def _serve_http(app: Any) -> Iterator[str]:
    with serve_app(app) as url:
        yield url


def _urls(kind: str, data_dir: Path) -> Iterator[str]:
    if kind == "http":
        yield from _serve_http(create_app(ServerConfig(data_dir=data_dir, poll_hold_s=0.05)))
        return
    from tinkex_server._local import get_local_server

    try:
        yield f"local://{data_dir}"
    finally:
        get_local_server(data_dir).close()


@pytest.fixture(params=["local", "http"])
def service(
    request: pytest.FixtureRequest, tmp_path: Path, local_hooks: Hooks
) -> Iterator[ServiceClient]:
    for url in _urls(request.param, (tmp_path / "data").resolve()):
        client = ServiceClient(
            base_url=url, api_key="tml-test", hooks=local_hooks, poll_policy=FAST_POLLS
        )
        try:
            yield client
        finally:
            client.close()


def _logprobs(out: Any) -> list[list[float]]:
    return [list(o["logprobs"].data) for o in out.loss_fn_outputs]


def test_server_side_loss_matches_the_client_side_one(service: ServiceClient) -> None:
    handle = service.create_custom_loss(clipped_pg, RANKS).result(60)
    assert isinstance(handle, LossHandle)
    assert handle.loss_id is not None
    assert handle.session_id == service.session_id
    server_side = service.create_lora_training_client(TINY, rank=4, seed=5)
    client_side = service.create_lora_training_client(TINY, rank=4, seed=5)
    here = trace_loss(clipped_pg, RANKS, service.session_id)  # the same graph, run here
    traced_here = service.create_lora_training_client(TINY, rank=4, seed=5)

    first = server_side.next_seq_id
    a = server_side.forward_backward_custom(DATA, handle).result(60)
    assert server_side.next_seq_id == first + 1  # one server-side forward_backward
    b = client_side.forward_backward_custom(DATA, _batch_loss).result(60)
    c = traced_here.forward_backward_custom(DATA, here).result(60)
    assert a.metrics["loss:sum"] == pytest.approx(b.metrics["loss:sum"], rel=1e-5)
    assert c.metrics["loss:sum"] == pytest.approx(b.metrics["loss:sum"], rel=1e-5)
    for key in ("custom/kl:mean", "custom/terms:sum"):
        assert a.metrics[key] == pytest.approx(c.metrics[key], rel=1e-5, abs=1e-6)
    for x, y in zip(_logprobs(a), _logprobs(b), strict=True):
        assert x == pytest.approx(y, abs=1e-6)

    for tc in (server_side, client_side, traced_here):
        tc.optim_step(LINEAR_STEP).result(60)
    after = [tc.forward(EVAL, "cross_entropy").result(60) for tc in (server_side, client_side)]
    after.append(traced_here.forward(EVAL, "cross_entropy").result(60))
    moved = [
        abs(x - y)
        for before_row, after_row in zip(_logprobs(a), _logprobs(after[0]), strict=True)
        for x, y in zip(before_row, after_row, strict=True)
    ]
    assert max(moved) > 1e-3  # the step changed the model...
    for other in after[1:]:  # ...and identically: the same gradients
        for x, y in zip(_logprobs(after[0]), _logprobs(other), strict=True):
            assert x == pytest.approx(y, abs=2e-5)


def _noise(logprobs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    return (logprobs * torch.rand_like(logprobs)).sum(), {}


def _nn_functional(logprobs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    return -F.log_softmax(logprobs, dim=0).sum(), {}


def test_the_server_refuses_operations_outside_its_allowlist(service: ServiceClient) -> None:
    with pytest.raises(BadRequestError) as info:
        service.create_custom_loss(_noise, {"logprobs": 1}).result(60)
    message = str(info.value)
    assert "graph.nodes[1]" in message
    assert "'rand_like'" in message
    assert "torch.rand_like" in message
    # The refused loss was not created: a loss of allowed operations still is.
    ok = service.create_custom_loss(_nn_functional, {"logprobs": 1}).result(60)
    tc = service.create_lora_training_client(TINY, rank=4, seed=1)
    out = tc.forward_backward_custom(DATA, ok).result(60)
    assert out.metrics["loss:sum"] > 0


def test_handles_are_checked_before_sending(service: ServiceClient) -> None:
    handle = service.create_custom_loss(clipped_pg, RANKS).result(60)
    with pytest.raises(TinkexValidationError, match="already created"):
        service.create_custom_loss(clipped_pg, RANKS).result(60)
    tc = service.create_lora_training_client(TINY, rank=4, seed=1)
    missing = [Datum(model_input=DATA[0].model_input, loss_fn_inputs={"target_tokens": [1] * 8})]
    with pytest.raises(TinkexValidationError, match=r"data\[0\].loss_fn_inputs.old_logprobs"):
        tc.forward_backward_custom(missing, handle)
    foreign = LossHandle(
        name=handle.name,
        inputs=handle.inputs,
        session_id="another-session",
        graph=handle.graph,
        loss_id=handle.loss_id,
    )
    with pytest.raises(TinkexValidationError, match="another-session"):
        tc.forward_backward_custom(DATA, foreign)


def test_a_created_loss_by_name_equals_the_handle(service: ServiceClient) -> None:
    """tinker 0.38's by-name form: ``forward_backward(data, "custom", {"loss_id": id})``."""
    handle = service.create_custom_loss(clipped_pg, RANKS).result(60)
    assert handle.loss_id is not None
    by_handle = service.create_lora_training_client(TINY, rank=4, seed=5)
    by_name = service.create_lora_training_client(TINY, rank=4, seed=5)
    a = by_handle.forward_backward_custom(DATA, handle).result(60)
    b = by_name.forward_backward(DATA, "custom", {"loss_id": handle.loss_id}).result(60)
    assert b.metrics == pytest.approx(a.metrics)
    assert _logprobs(b) == _logprobs(a)
    for config in (None, {}, {"loss_id": ""}, {"loss_id": 3}):
        with pytest.raises(TinkexValidationError, match=r"loss_fn_config\['loss_id'\]"):
            by_name.forward_backward(DATA, "custom", config)
    with pytest.raises(TinkexValidationError, match="only loss_id"):
        by_name.forward_backward(DATA, "custom", {"loss_id": handle.loss_id, "beta": 1.0})
