"""``POST /api/v1/create_custom_loss`` and ``forward_backward`` with ``loss_fn="custom"``
(tinker 0.38 server-side custom losses), spoken as raw JSON against the in-process server:
the allowlist refuses with a 400 naming the node and its target, a created loss computes
what the same built-in loss computes, and a bad batch changes nothing."""

from __future__ import annotations

from typing import Any

import pytest


def _node(op: str, name: str, target: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"op": op, "name": name, "target": target, "args": list(args), "kwargs": kwargs}


def _ref(name: str) -> dict[str, str]:
    return {"ref": name}


def neg_ll_graph(*extra: dict[str, Any], loss: str = "neg") -> dict[str, Any]:
    """``-(logprobs * weights).sum()``, metric ``custom/n:sum`` (plus ``extra`` nodes)."""
    return {
        "nodes": [
            _node("placeholder", "logprobs", "logprobs"),
            _node("placeholder", "weights", "weights"),
            _node("call_function", "mul", "operator.mul", _ref("logprobs"), _ref("weights")),
            _node("call_method", "sum_1", "sum", _ref("mul")),
            _node("call_function", "neg", "operator.neg", _ref("sum_1")),
            *extra,
            _node(
                "output",
                "output",
                "output",
                {"tuple": [_ref(loss), {"dict": {"custom/n:sum": _ref("sum_1")}}]},
            ),
        ]
    }


INPUTS = [{"name": "logprobs", "rank": 1}, {"name": "weights", "rank": 1}]


def create_body(sid: str, graph: dict[str, Any], seq: int = 0) -> dict[str, Any]:
    return {
        "session_id": sid,
        "custom_loss_seq_id": seq,
        "name": "neg_ll",
        "inputs": INPUTS,
        "graph": graph,
        "type": "create_custom_loss",
    }


def custom_fb(api: Any, mid: str, seq: int, loss_id: str | None, data: Any = None) -> Any:
    body = api.fb_body(mid, seq, data)
    fb = body["forward_backward_input"]
    fb["loss_fn"] = "custom"
    fb["loss_fn_config_v2"] = None if loss_id is None else {"loss_id": loss_id}
    return body


async def create(api: Any, sid: str, graph: dict[str, Any], seq: int = 0) -> str:
    body = await api.result(await api.ok("create_custom_loss", create_body(sid, graph, seq)))
    assert body["type"] == "create_custom_loss"
    return str(body["loss_id"])


@pytest.mark.parametrize(
    ("extra", "loss", "named"),
    [
        (
            [_node("call_function", "noise", "torch.randn_like", _ref("neg"))],
            "noise",
            "node 'noise' (call_function 'torch.randn_like')",
        ),
        (
            [_node("call_function", "shell", "os.system", "echo hi")],
            "neg",
            "node 'shell' (call_function 'os.system')",
        ),
        (
            [_node("call_method", "back", "backward", _ref("neg"))],
            "neg",
            "node 'back' (call_method 'backward')",
        ),
        (
            [_node("get_attr", "w", "weight")],
            "neg",
            "node 'w' (get_attr 'weight')",
        ),
        (
            [_node("call_function", "g", "getattr", _ref("neg"), "grad_fn")],
            "neg",
            "node 'g' (call_function 'getattr')",
        ),
        (
            [_node("call_function", "e", "torch.exp", _ref("neg"), out=_ref("mul"))],
            "neg",
            "writes into out=",
        ),
        (
            [_node("call_method", "c", "to", _ref("neg"), {"device": "cuda"})],
            "neg",
            "device 'cuda'",
        ),
    ],
)
async def test_operations_outside_the_allowlist_are_a_400_naming_node_and_target(
    api: Any, extra: list[dict[str, Any]], loss: str, named: str
) -> None:
    sid = await api.session()
    r = await api.post("create_custom_loss", create_body(sid, neg_ll_graph(*extra, loss=loss)))
    assert r.status_code == 400, r.text
    assert "graph.nodes[5]" in r.text
    assert named in r.text


async def test_a_metric_outside_the_custom_namespace_is_refused(api: Any) -> None:
    sid = await api.session()
    graph = neg_ll_graph()
    graph["nodes"][-1]["args"][0]["tuple"][1]["dict"] = {"loss:sum": _ref("sum_1")}
    r = await api.post("create_custom_loss", create_body(sid, graph))
    assert r.status_code == 400, r.text
    assert "metric 'loss:sum'" in r.text


async def test_a_malformed_graph_is_refused_before_the_allowlist(api: Any) -> None:
    sid = await api.session()
    graph = neg_ll_graph()
    graph["nodes"][2]["args"] = [_ref("sum_1"), _ref("weights")]  # refers forward
    r = await api.post("create_custom_loss", create_body(sid, graph))
    assert r.status_code in (400, 422), r.text
    assert "not an earlier node" in r.text


async def test_a_created_loss_computes_the_builtin_loss_it_spells(api: Any) -> None:
    sid = await api.session()
    loss_id = await create(api, sid, neg_ll_graph())
    assert loss_id == f"{sid}:loss:0"
    # The same seq id again answers the first future.
    again = await api.ok("create_custom_loss", create_body(sid, neg_ll_graph()))
    assert (await api.result(again))["loss_id"] == loss_id
    custom_model = await api.model(sid, 0, seed=3)
    builtin_model = await api.model(sid, 1, seed=3)
    data = [api.datum([5, 6, 7, 8, 9], [1.0, -0.5, 2.0, 0.0]), api.datum([3, 4, 5], [1.0, 1.0])]
    mine = await api.result(
        await api.ok("forward_backward", custom_fb(api, custom_model, 1, loss_id, data))
    )
    ref = await api.result(await api.ok("forward_backward", api.fb_body(builtin_model, 1, data)))
    assert mine["metrics"]["loss:sum"] == pytest.approx(ref["metrics"]["loss:sum"], rel=1e-5)
    assert mine["metrics"]["custom/n:sum"] == pytest.approx(-ref["metrics"]["loss:sum"], rel=1e-5)
    for a, b in zip(mine["loss_fn_outputs"], ref["loss_fn_outputs"], strict=True):
        assert a["logprobs"]["data"] == pytest.approx(b["logprobs"]["data"], abs=1e-6)
    step = {"adam_params": {"learning_rate": 1.0, "eps": 1.0}}
    for mid in (custom_model, builtin_model):
        await api.result(await api.ok("optim_step", {**step, "model_id": mid, "seq_id": 2}))
    after = [
        await api.result(await api.ok("forward", api.fwd_body(mid, 3, data)))
        for mid in (custom_model, builtin_model)
    ]
    assert after[0]["metrics"]["loss:sum"] == pytest.approx(
        after[1]["metrics"]["loss:sum"], rel=1e-5
    )
    assert after[0]["metrics"]["loss:sum"] < ref["metrics"]["loss:sum"]


async def test_the_loss_id_must_name_a_loss_of_the_models_session(api: Any) -> None:
    sid = await api.session()
    other = await api.session()
    loss_id = await create(api, other, neg_ll_graph())
    mid = await api.model(sid)
    for seq, lid, problem in (
        (1, None, "is missing"),
        (2, "nope", "no custom loss 'nope'"),
        (3, loss_id, "belongs to another session"),
    ):
        r = await api.post("forward_backward", custom_fb(api, mid, seq, lid))
        assert r.status_code == 400, r.text
        assert "forward_backward_input.loss_fn_config.loss_id" in r.text
        assert problem in r.text
    # The refused seq ids were freed: the next step runs at once.
    ok = await api.result(await api.ok("forward_backward", api.fb_body(mid, 4)))
    assert ok["metrics"]["loss:sum"] > 0


async def test_a_bad_datum_fails_before_any_gradient(api: Any) -> None:
    sid = await api.session()
    loss_id = await create(api, sid, neg_ll_graph())
    tried, clean = await api.model(sid, 0, seed=4), await api.model(sid, 1, seed=4)
    good = api.datum([5, 6, 7, 8, 9])
    bad = api.datum([5, 6, 7])
    bad["loss_fn_inputs"]["weights"] = {"data": [1.0] * 3, "dtype": "float32", "shape": [3]}
    fut = await api.ok("forward_backward", custom_fb(api, tried, 1, loss_id, [good, bad]))
    status, body = await api.poll(fut["request_id"])
    assert status == 200
    assert body["category"] == "user"
    assert "data[1]" in body["error"]
    assert "node 'mul' (operator.mul)" in body["error"]
    # The failed step left no gradient: both models take the same step from here.
    for seq, mid in ((2, tried), (1, clean)):
        await api.result(await api.ok("forward_backward", custom_fb(api, mid, seq, loss_id)))
    step = {"adam_params": {"learning_rate": 1.0, "eps": 1.0}}
    outs = []
    for seq, mid in ((3, tried), (2, clean)):
        await api.result(await api.ok("optim_step", {**step, "model_id": mid, "seq_id": seq}))
        outs.append(await api.result(await api.ok("forward", api.fwd_body(mid, seq + 1))))
    assert outs[0]["metrics"]["loss:sum"] == outs[1]["metrics"]["loss:sum"]


async def test_created_losses_survive_a_restart(
    make_server: Any, api_for: Any, tmp_path: Any
) -> None:
    data_dir = tmp_path / "kept"
    first = make_server(data_dir=data_dir)
    async with api_for(first) as api:
        sid = await api.session()
        loss_id = await create(api, sid, neg_ll_graph())
        mid = await api.model(sid)
    first.close()
    async with api_for(make_server(data_dir=data_dir)) as api:
        out = await api.result(await api.ok("forward", custom_fb_forward(api, mid, loss_id)))
    assert out["metrics"]["custom/n:sum"] < 0


def custom_fb_forward(api: Any, mid: str, loss_id: str) -> Any:
    body = api.fwd_body(mid, 1)
    body["forward_input"]["loss_fn"] = "custom"
    body["forward_input"]["loss_fn_config_v2"] = {"loss_id": loss_id}
    return body
