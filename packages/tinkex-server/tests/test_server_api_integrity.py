"""Integrity at the HTTP edge (issue 17): a stored checkpoint that no longer matches its
manifest is a server-side 500 naming the file relative to the checkpoint (never the
data directory), both when the archive link is asked for (no 302 to a corrupt archive)
and when a link signed before the corruption is followed; and a protobuf
``forward_backward`` body obeys the number rules of JSON ones (NaN weights: a 400
naming ``data[i].loss_fn_inputs.weights``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinkex_types import PROTOBUF_MEDIA_TYPE, ForwardBackwardRequest, codec_for
from tinkex_types.proto import tinker_public_pb2 as pb


async def _saved(api: Any) -> tuple[str, Any]:
    sid = await api.session()
    mid = await api.model(sid)
    await api.result(
        await api.ok(
            "save_weights", {"model_id": mid, "path": "step-1", "seq_id": 1, "ttl_seconds": None}
        )
    )
    row = api.store.get_checkpoint(mid, "weights", "step-1")
    return mid, api.server.runtime.files.absolute(row.directory)


def _truncate(directory: Any) -> None:
    target = directory / "adapter_model.safetensors"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])


def _assert_server_side(r: Any, data_dir: str) -> None:
    assert r.status_code == 500, r.text
    detail = r.json()["detail"]
    assert "stored checkpoint is corrupt" in detail
    assert "adapter_model.safetensors" in detail
    assert data_dir not in detail
    assert "/" not in detail.split(":", 1)[1]
    assert "traceback" not in r.text.lower()
    assert r.headers["x-should-retry"] == "false"


async def test_corrupt_checkpoint_gets_no_archive_link(api: Any) -> None:
    mid, directory = await _saved(api)
    url = f"/api/v1/training_runs/{mid}/checkpoints/weights/step-1/archive"
    assert (await api.c.get(url)).status_code == 302  # intact: a link
    _truncate(directory)
    r = await api.c.get(url)
    assert "location" not in r.headers
    _assert_server_side(r, str(api.server.runtime.config.data_dir))


async def test_link_signed_before_corruption_answers_500(api: Any) -> None:
    mid, directory = await _saved(api)
    r = await api.c.get(f"/api/v1/training_runs/{mid}/checkpoints/weights/step-1/archive")
    assert r.status_code == 302
    location = r.headers["location"]
    assert (await api.c.get(location)).status_code == 200  # builds and caches the archive
    _truncate(directory)
    r = await api.c.get(location)
    _assert_server_side(r, str(api.server.runtime.config.data_dir))


async def test_protobuf_body_with_nan_weights_is_400_naming_the_input(api: Any) -> None:
    codec = codec_for(PROTOBUF_MEDIA_TYPE)
    assert codec is not None
    sid = await api.session()
    mid = await api.model(sid)
    datum = api.datum([5, 6, 7, 8, 9])
    body = api.fb_body(mid, 1, [datum, api.datum([5, 6, 7, 8, 9])])
    msg = pb.ForwardBackwardRequest()
    msg.ParseFromString(codec.encode(ForwardBackwardRequest.model_validate(body)))
    weights = np.array([1.0, math.nan, 1.0, 1.0], dtype="<f4")
    msg.data[1].loss_fn_inputs["weights"].dense = weights.tobytes()
    r = await api.c.post(
        "/api/v1/forward_backward",
        content=msg.SerializeToString(),
        headers={"content-type": PROTOBUF_MEDIA_TYPE},
    )
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert detail.startswith("data[1].loss_fn_inputs.weights: element 1 is nan")
    assert "NaN and infinity are refused" in detail
    # Infinity likewise, and the seq_id the refused body held does not block the next one.
    weights[1] = np.inf
    msg.data[1].loss_fn_inputs["weights"].dense = weights.tobytes()
    msg.seq_id = 2
    r = await api.c.post(
        "/api/v1/forward_backward",
        content=msg.SerializeToString(),
        headers={"content-type": PROTOBUF_MEDIA_TYPE},
    )
    assert r.status_code == 400, r.text
    assert "data[1].loss_fn_inputs.weights: element 1 is inf" in r.json()["detail"]
    ok = await api.ok("forward_backward", api.fb_body(mid, 3))
    assert "error" not in await api.result(ok)
