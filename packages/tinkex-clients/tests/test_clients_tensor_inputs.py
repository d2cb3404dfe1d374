"""numpy inputs and sparse CSR loss inputs, end to end through ``local://`` (the real
in-process server), over both wire generations.

A transport wrapper keeps every ``forward``/``forward_backward`` body the client sends; the
body is decoded with the same codec the server uses, so the tests see exactly the values
the server received, and the server's answer shows it accepted them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from tinkex_clients import ServiceClient
from tinkex_types import (
    JSON_MEDIA_TYPE,
    PROTOBUF_MEDIA_TYPE,
    Datum,
    ForwardBackwardInput,
    ForwardBackwardRequest,
    ForwardRequest,
    Hooks,
    ModelInput,
    TensorData,
    codec_for,
    decode_content,
    hookimpl,
    make_plugin_manager,
    media_type_of,
)
from tinkex_types.proto import tinker_public_pb2 as pb

from .conftest import FAST_POLLS

MODEL = "tinkex/tiny-llama-100k"
PROTOCOLS = ["json", "protobuf"]


class KeepBodies:
    """A transport wrapper keeping the (content type, body) of every forward request."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, bytes]] = []

    @hookimpl
    def tinkex_wrap_transport(self, transport: Any, config: Any) -> Any:
        bodies = self.bodies

        class Keeping(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                if request.url.path.endswith(("/forward", "/forward_backward")):
                    content = await request.aread()
                    encoding = request.headers.get("content-encoding")
                    content = decode_content(content, encoding)  # zstd undone
                    bodies.append((request.headers.get("content-type", ""), content))
                return await transport.handle_async_request(request)

        return Keeping()


@pytest.fixture
def kept() -> KeepBodies:
    return KeepBodies()


@pytest.fixture(params=PROTOCOLS)
def service(request: Any, local_env: Path, kept: KeepBodies) -> Iterator[ServiceClient]:
    import tinkex_clients._plugin as clients_plugin
    import tinkex_http._plugin as http_plugin
    import tinkex_server._plugin as server_plugin

    plugins = [http_plugin, clients_plugin, server_plugin, kept]
    hooks = Hooks(make_plugin_manager(load_entrypoints=False, plugins=plugins))
    client = ServiceClient(
        base_url="local://", hooks=hooks, poll_policy=FAST_POLLS, protocol=request.param
    )
    try:
        yield client
    finally:
        client.close()


def _received(kept: KeepBodies) -> ForwardBackwardInput:
    """The batch of the last forward body, decoded as the server decodes it."""
    content_type, body = kept.bodies[-1]
    media = media_type_of(content_type)
    if media == JSON_MEDIA_TYPE:
        if b'"forward_input"' in body:
            return ForwardRequest.model_validate_json(body).forward_input
        return ForwardBackwardRequest.model_validate_json(body).forward_backward_input
    assert media == PROTOBUF_MEDIA_TYPE
    codec = codec_for(media)
    assert codec is not None
    return codec.decode(ForwardBackwardRequest, body).forward_backward_input


def test_numpy_inputs_arrive_exactly(service: ServiceClient, kept: KeepBodies) -> None:
    rng = np.random.default_rng(7)
    tokens = rng.integers(1, 200, size=24).astype(np.int64)
    targets = rng.integers(1, 200, size=24).astype(np.int32)
    # float32 values that have no short decimal form, and a float64 that must round.
    weights = rng.random(24, dtype=np.float32)
    weights[3] = np.float32(1e-45)
    advantages = rng.standard_normal(24)  # float64
    datum = Datum(
        model_input=ModelInput.from_ints(tokens),
        loss_fn_inputs={"target_tokens": targets, "weights": weights},
    )
    tc = service.create_lora_training_client(MODEL, rank=4)
    out = tc.forward([datum], "cross_entropy").result(60)
    assert math.isfinite(out.metrics["loss:sum"])
    got = _received(kept).data[0]
    assert got.model_input.to_ints() == tokens.tolist()
    received = got.loss_fn_inputs
    assert received["target_tokens"].to_numpy().tolist() == targets.astype(np.int64).tolist()
    assert received["weights"].to_numpy().tobytes() == weights.tobytes()  # every bit

    rl = Datum(
        model_input=ModelInput.from_ints(tokens),
        loss_fn_inputs={
            "target_tokens": targets,
            "logprobs": -weights,
            "advantages": advantages,
        },
    )
    tc.forward_backward([rl], "importance_sampling").result(60)
    got_rl = _received(kept).data[0].loss_fn_inputs
    assert got_rl["advantages"].to_numpy().tobytes() == advantages.astype(np.float32).tobytes()
    assert got_rl["logprobs"].to_numpy().tobytes() == (-weights).tobytes()


def test_numpy_and_list_inputs_give_the_same_result(service: ServiceClient) -> None:
    tokens = [5, 17, 3, 99, 42, 7, 8, 120]
    targets = [*tokens[1:], 1]
    weights = [0.0, 0.0, 0.25, 1.0, 1.0, 0.5, 1.0, 1.0]
    tc = service.create_lora_training_client(MODEL, rank=4)
    as_lists = Datum(
        model_input=ModelInput.from_ints(tokens),
        loss_fn_inputs={"target_tokens": targets, "weights": weights},
    )
    as_arrays = Datum(
        model_input=ModelInput.from_ints(np.array(tokens, dtype=np.int32)),
        loss_fn_inputs={
            "target_tokens": np.array(targets, dtype=np.int64),
            "weights": np.array(weights, dtype=np.float32),
        },
    )
    a = tc.forward([as_lists], "cross_entropy").result(60)
    b = tc.forward([as_arrays], "cross_entropy").result(60)
    assert a.metrics["loss:sum"] == b.metrics["loss:sum"]
    assert (
        a.loss_fn_outputs[0]["logprobs"].to_numpy().tobytes()
        == b.loss_fn_outputs[0]["logprobs"].to_numpy().tobytes()
    )


def _top_k_datum(weights: TensorData, targets: TensorData) -> Datum:
    # Built without validation so the sparse tensor travels as it is (Datum(...) densifies).
    return Datum.model_construct(
        model_input=ModelInput.from_ints([4, 9, 2, 7, 11, 3]),
        loss_fn_inputs={"target_tokens": targets, "weights": weights},
    )


def test_sparse_loss_inputs_are_accepted_and_densified(
    service: ServiceClient, kept: KeepBodies
) -> None:
    targets = torch.tensor([[9, 1, 5], [2, 8, 3], [7, 6, 4], [11, 10, 12], [3, 13, 14], [1, 2, 5]])
    weights = torch.zeros(6, 3)
    weights[2, 0] = 1.0
    weights[4, 1] = 0.75
    sparse = TensorData.from_torch_sparse(weights)
    assert sparse.is_sparse
    dense_targets = TensorData.from_torch(targets)
    tc = service.create_lora_training_client(MODEL, rank=4)

    got = tc.forward([_top_k_datum(sparse, dense_targets)], "cross_entropy").result(60)
    content_type, body = kept.bodies[-1]
    if media_type_of(content_type) == PROTOBUF_MEDIA_TYPE:
        msg = pb.ForwardBackwardRequest()
        msg.ParseFromString(body)
        assert msg.data[0].loss_fn_inputs["weights"].WhichOneof("encoding") == "sparse_csr"
    else:
        assert b'"sparse_crow_indices":[0,0,0,1,1,2,2]' in body
    received = _received(kept).data[0].loss_fn_inputs["weights"]
    assert not received.is_sparse
    assert received.to_numpy().tolist() == weights.tolist()

    dense = tc.forward(
        [_top_k_datum(TensorData.from_torch(weights), dense_targets)], "cross_entropy"
    )
    expected = dense.result(60)
    assert got.metrics["loss:sum"] == expected.metrics["loss:sum"]


def test_a_sparse_input_given_to_datum_is_densified_on_the_client() -> None:
    weights = torch.zeros(4, 5)
    weights[1, 3] = 2.0
    datum = Datum(
        model_input=ModelInput.from_ints([1, 2, 3, 4]),
        loss_fn_inputs={"weights": TensorData.from_torch_sparse(weights)},
    )
    assert not datum.loss_fn_inputs["weights"].is_sparse
    assert datum.loss_fn_inputs["weights"].to_numpy().tolist() == weights.tolist()
