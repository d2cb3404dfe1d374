"""The later protocol generations (official SDK 0.18 - 0.38, protocol.md §4) against the
real in-process server: client/config and dynamic_config, protobuf (and zstd) bodies with
``forward_only`` and ``loss_fn_config_v2``, malformed bodies (400 naming the problem, the
server keeps serving and the refused ``seq_id`` is freed), session finish (410 after),
``load_weights`` creating a model, external weights, losses the server refuses by name,
unknown routes named, the JSON-only server and two-part save paths."""

from __future__ import annotations

from typing import Any

import httpx
import zstandard

from tinkex_server._local import LocalTransport
from tinkex_types import (
    PROTOBUF_MEDIA_TYPE,
    ForwardBackwardOutput,
    ForwardBackwardRequest,
    codec_for,
)
from tinkex_types.proto import tinker_public_pb2 as pb

PROTO = {"content-type": PROTOBUF_MEDIA_TYPE}
PROTO_ZSTD = {"content-type": PROTOBUF_MEDIA_TYPE, "content-encoding": "zstd"}
ACCEPT_PROTO = {"accept": PROTOBUF_MEDIA_TYPE}


def _proto(request: dict[str, Any], *, forward_only: bool = False) -> bytes:
    codec = codec_for(PROTOBUF_MEDIA_TYPE)
    assert codec is not None
    body: bytes = codec.encode(
        ForwardBackwardRequest.model_validate({**request, "forward_only": forward_only or None})
    )
    return body


async def _poll_proto(api: Any, request_id: str) -> ForwardBackwardOutput:
    codec = codec_for(PROTOBUF_MEDIA_TYPE)
    assert codec is not None
    for _ in range(200):
        r = await api.c.post(
            "/api/v1/retrieve_future",
            json={"request_id": request_id, "allow_metadata_only": False},
            headers=ACCEPT_PROTO,
        )
        if r.status_code != 408:
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith(PROTOBUF_MEDIA_TYPE), r.text
            out: ForwardBackwardOutput = codec.decode(ForwardBackwardOutput, r.content)
            return out
    raise AssertionError(f"{request_id} never finished")


async def test_client_config_flags_and_dynamic_config(api: Any) -> None:
    flags = await api.ok("client/config", {"sdk_version": "0.24.1"})
    assert flags["pjwt_auth_enabled"] is False
    assert flags["proto_write_fwdbwd"] is True  # 0.24.1 then sends protobuf as 0.25+ do
    assert flags["proto_compress_fwdbwd"] is True
    assert flags["fwd_via_fwdbwd"] is True
    assert flags["create_model_via_load_weights"] is True
    assert flags["custom_loss_server_side"] is True  # create_custom_loss is served
    assert 0 < flags["fwdbwd_max_chunk_bytes_count"] <= 64 * 1024 * 1024
    dynamic = await api.ok("client/dynamic_config", {"sdk_version": "0.38.0"})
    assert dynamic["refresh_interval_sec"] > 0
    assert dynamic["sample_cancel_enabled"] is False


async def test_zstd_protobuf_forward_only_and_v2_config(api: Any) -> None:
    sid = await api.session()
    mid = await api.model(sid)
    body = api.fb_body(mid, 1)
    # forward_only: the forward of the same message (no gradient: optim_step has none).
    packed = zstandard.ZstdCompressor().compress(_proto(body, forward_only=True))
    r = await api.c.post("/api/v1/forward_backward", content=packed, headers=PROTO_ZSTD)
    assert r.status_code == 200, r.text
    forward = await _poll_proto(api, r.json()["request_id"])
    assert api.applied(mid)[-1] == (1, "Forward")
    # The same batch by JSON forward gives the same loss.
    json_fwd = await api.result(await api.ok("forward", api.fwd_body(mid, 2)))
    assert json_fwd["metrics"]["loss:sum"] == forward.metrics["loss:sum"]

    # loss_fn_config_v2 wins over loss_fn_config: dro with beta 5 (v2) over 0.1 (v1)
    # equals dro with beta 5 sent in the one map.
    datum = api.datum([5, 6, 7, 8, 9])
    datum["loss_fn_inputs"] = {
        "target_tokens": datum["loss_fn_inputs"]["target_tokens"],
        "logprobs": {"data": [-2.0] * 4, "dtype": "float32", "shape": [4]},
        "advantages": {"data": [1.0] * 4, "dtype": "float32", "shape": [4]},
    }
    losses = []
    for seq, config, v2 in ((3, {"beta": 0.1}, {"beta": 5.0}), (4, {"beta": 5.0}, None)):
        msg = {
            "forward_backward_input": {
                "data": [datum],
                "loss_fn": "dro",
                "loss_fn_config": config,
                "loss_fn_config_v2": v2,
            },
            "model_id": mid,
            "seq_id": seq,
        }
        r = await api.c.post(
            "/api/v1/forward_backward", content=_proto(msg, forward_only=True), headers=PROTO
        )
        assert r.status_code == 200, r.text
        losses.append((await _poll_proto(api, r.json()["request_id"])).metrics["loss:sum"])
    assert losses[0] == losses[1]


async def test_bad_bodies_are_400_and_free_their_seq_id(make_server: Any, api_for: Any) -> None:
    # A refused body frees its seq_id: the next step runs without waiting the (long) grace.
    server = make_server(seq_gap_grace_s=3600.0, poll_hold_s=0.5)
    async with api_for(server) as api:
        sid = await api.session()
        mid = await api.model(sid)
        good = _proto(api.fb_body(mid, 1))
        unknown_field = good + b"\x98\x06\x01"  # field 99, varint 1
        stable = {
            "forward_backward_input": {
                "data": [api.datum([5, 6, 7, 8])],
                "loss_fn": "stable_reinforce",
                "loss_fn_config": None,
            },
            "model_id": mid,
            "seq_id": 4,
        }
        cases: list[tuple[bytes, dict[str, str], str]] = [
            (unknown_field, PROTO, "[99]"),
            (zstandard.ZstdCompressor().compress(good)[:-6], PROTO_ZSTD, "zstd"),
            (b"\x0a\xff\xff", PROTO, "protobuf"),
            (good, {"content-type": "application/x-msgpack"}, "Content-Type"),
        ]
        for content, headers, needle in cases:
            r = await api.c.post("/api/v1/forward_backward", content=content, headers=headers)
            assert r.status_code == 400, (headers, r.text)
            assert needle in r.json()["detail"], r.json()
        # A loss the server does not offer: a 400 naming it (JSON and protobuf), seq freed.
        msg = pb.ForwardBackwardRequest()
        msg.ParseFromString(_proto(api.fb_body(mid, 4)))
        msg.loss_fn = "stable_reinforce"
        r = await api.c.post(
            "/api/v1/forward_backward", content=msg.SerializeToString(), headers=PROTO
        )
        assert r.status_code == 400
        assert "stable_reinforce" in r.json()["detail"]
        custom = {**stable, "seq_id": 5}
        custom["forward_backward_input"] = {**stable["forward_backward_input"], "loss_fn": "custom"}
        r = await api.post("forward_backward", custom)
        assert r.status_code == 400  # a created loss (create_custom_loss) needs its loss_id
        assert "forward_backward_input.loss_fn_config.loss_id" in r.json()["detail"]
        # The bodies of seq 1 (unknown field), 4 (stable_reinforce) and 5 (custom) were
        # refused: those numbers are freed, so 2, 3 and 6 run without waiting for them.
        for seq in (2, 3):
            await api.result(await api.ok("forward_backward", api.fb_body(mid, seq)))
        r = await api.c.post(
            "/api/v1/forward_backward", content=_proto(api.fb_body(mid, 6)), headers=PROTO
        )
        assert r.status_code == 200, r.text
        out = await _poll_proto(api, r.json()["request_id"])
        assert out.metrics["loss:sum"] > 0
        assert [s for s, _ in api.applied(mid)] == [None, 2, 3, 6]


async def test_finish_session_then_410(api: Any) -> None:
    sid = await api.session()
    await api.model(sid)
    done = await api.ok(f"sessions/{sid}/finish", {"reason": {"type": "success"}, "detail": None})
    assert done == {}
    r = await api.post("session_heartbeat", {"session_id": sid})
    assert r.status_code == 410
    assert sid in r.json()["detail"]
    r = await api.post(
        "create_model",
        {"session_id": sid, "model_seq_id": 1, "base_model": "tinkex/tiny-llama-100k"},
    )
    assert r.status_code == 410
    r = await api.post(f"sessions/{sid}/finish", {"reason": {"type": "bogus"}})
    assert r.status_code == 422
    r = await api.post("sessions/nope/finish", {"reason": {"type": "errored"}})
    assert r.status_code == 404


async def test_load_weights_creates_the_model(api: Any) -> None:
    sid = await api.session()
    mid = await api.model(sid, rank=8)
    first = await api.result(await api.ok("forward_backward", api.fb_body(mid, 1)))
    adam = {"learning_rate": 0.05, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8}
    await api.result(
        await api.ok("optim_step", {"model_id": mid, "adam_params": adam, "seq_id": 2})
    )
    saved = await api.result(
        await api.ok("save_weights", {"model_id": mid, "path": "s1", "seq_id": 3})
    )
    fut = await api.ok(
        "load_weights",
        {"session_id": sid, "model_seq_id": 1, "path": saved["path"], "optimizer": True},
    )
    assert fut["model_id"] == f"{sid}:train:1"
    assert (await api.result(fut))["path"] == saved["path"]
    info = await api.ok("get_info", {"model_id": f"{sid}:train:1"})
    assert info["lora_rank"] == 8
    # The client numbers the new model's steps from 1.
    out = await api.result(await api.ok("forward", api.fwd_body(f"{sid}:train:1", 1)))
    ref = await api.result(await api.ok("forward", api.fwd_body(mid, 4)))
    assert out["metrics"]["loss:sum"] == ref["metrics"]["loss:sum"]  # the trained weights
    assert ref["metrics"]["loss:sum"] != first["metrics"]["loss:sum"]
    again = await api.ok(
        "load_weights", {"session_id": sid, "model_seq_id": 1, "path": saved["path"]}
    )
    assert again["request_id"] == fut["request_id"]  # a retry
    other = saved["path"].replace("/s1", "/s0")
    for body, status in (
        ({"session_id": sid, "model_seq_id": 1, "path": other}, 404),  # no such checkpoint
        ({"session_id": sid, "model_seq_id": 1, "path": saved["path"] + "x"}, 404),
        ({"model_id": mid, "session_id": sid, "model_seq_id": 2, "path": saved["path"]}, 422),
        ({"session_id": sid, "model_seq_id": 2, "path": f"tinker://{mid}/weights/x"}, 404),
    ):
        r = await api.post("load_weights", body)
        assert r.status_code == status, (body, r.text)


async def test_external_weights_export_and_signed_files(api: Any) -> None:
    sid = await api.session()
    mid = await api.model(sid)
    fut = await api.ok("save_weights_external", {"model_id": mid, "path": "ext", "seq_id": 1})
    saved = await api.result(fut)
    assert saved["path"] == f"tinker://{mid}/external_weights/ext"
    assert saved["size_bytes"] > 0
    r = await api.c.get(
        f"/api/v1/training_runs/{mid}/checkpoints/external_weights/ext/external_weights_urls"
    )
    assert r.status_code == 200, r.text
    urls = r.json()["urls"]
    assert {"adapter_model.safetensors", "adapter_config.json"} <= set(urls)
    url = urls["adapter_config.json"].replace("local:///", "/")
    got = await api.c.get(url)
    assert got.status_code == 200
    assert b"lora" in got.content.lower() or got.content.startswith(b"{")
    r = await api.c.get(url.replace("signature=", "signature=0"))
    assert r.status_code == 403
    r = await api.c.get(
        f"/api/v1/training_runs/{mid}/checkpoints/weights/ext/external_weights_urls"
    )
    assert r.status_code == 400
    r = await api.post(
        "save_weights_external",
        {"model_id": mid, "path": "e2", "seq_id": 2, "age_encryption_recipients": ["age1x"]},
    )
    assert r.status_code == 400
    assert "age_encryption_recipients" in r.json()["detail"]


async def test_unknown_route_is_named(api: Any) -> None:
    r = await api.post("no_such_route", {})
    assert r.status_code == 404
    assert "POST /api/v1/no_such_route" in r.json()["detail"]


async def test_json_only_server(make_server: Any, api_for: Any) -> None:
    server = make_server(protobuf=False)
    async with api_for(server) as api:
        for route in ("client/config", "client/dynamic_config"):
            r = await api.post(route, {"sdk_version": "0.38.0"})
            assert r.status_code == 404
            assert route in r.json()["detail"]
        sid = await api.session()
        mid = await api.model(sid)
        r = await api.c.post(
            "/api/v1/forward_backward", content=_proto(api.fb_body(mid, 1)), headers=PROTO
        )
        assert r.status_code == 415
        assert "JSON only" in r.json()["detail"]
        # The refused number stays free for the client's JSON re-send of the same seq_id.
        await api.result(await api.ok("forward_backward", api.fb_body(mid, 1)))
        await api.result(await api.ok("forward_backward", api.fb_body(mid, 2)))


async def test_two_part_save_paths(make_server: Any, api_for: Any) -> None:
    server = make_server(path_style="two-part")
    async with api_for(server) as api:
        sid = await api.session()
        mid = await api.model(sid)
        state = await api.result(
            await api.ok("save_weights", {"model_id": mid, "path": "p", "seq_id": 1})
        )
        assert state["path"] == f"tinker://{mid}/p"
        sampler = await api.result(
            await api.ok("save_weights_for_sampler", {"model_id": mid, "path": "p", "seq_id": 2})
        )
        assert sampler["path"] == f"tinker://{mid}/p"
        # Accepted back: load_weights reads the training state, sampling the sampler weights.
        loaded = await api.result(
            await api.ok("load_weights", {"model_id": mid, "path": state["path"], "seq_id": 3})
        )
        assert loaded["path"].endswith("/p")
        s = await api.ok(
            "create_sampling_session",
            {"session_id": sid, "sampling_session_seq_id": 0, "model_path": sampler["path"]},
        )
        assert s["sampling_session_id"]
        info = await api.ok("weights_info", {"tinker_path": state["path"]})
        assert info["lora_rank"] == 4
        listed = (await api.c.get(f"/api/v1/training_runs/{mid}/checkpoints")).json()
        assert {c["tinker_path"] for c in listed["checkpoints"]} == {f"tinker://{mid}/p"}
        async with httpx.AsyncClient(transport=LocalTransport(server), base_url="local://") as raw:
            r = await raw.post("/api/v1/weights_info", json={"tinker_path": "tinker://x/y/z/w"})
            assert r.status_code == 400
